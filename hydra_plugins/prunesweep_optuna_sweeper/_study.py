"""Optuna side of the sweeper: search space from Hydra override grammar, sampler, study, trial <-> job.

Search-space grammar (as in Hydra's own sweepers and the official Optuna sweeper):

* ``interval(a, b)``: float in [a, b]; ``tag(log, interval(a, b))`` samples on a log scale.
* ``range(a, b, s)``: the values Hydra's ``range`` yields (b excluded), as an int/float with step s.
* ``choice(x, y)`` or ``x,y`` (and ``shuffle(range(...))``): categorical.
* anything else is fixed and passed to every job unchanged.

A parameter named ``<list>.<i>`` (e.g. ``prune.layer_k.0``) is one element of a list: the elements
0..n-1 of each such list are sent to the job as one override ``<list>=[v0,...,vn-1]``. An element
given a fixed value (``prune.layer_k.3: 0``) becomes a one-choice parameter of that list. A layer named
under ``prune.layer_k`` (``prune.layer_k.conv2: interval(0, 99)``, any model's layer names) is one entry of
a dict, sent as ``prune.layer_k={conv2: v, ...}``; a fixed entry again becomes a one-choice parameter.
``prune.layer_k.*: interval(0, 99)`` stands for one such entry per pruned layer of the composed model.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, Transformer
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial

from src.cli.config import ConfigError

LIST_ITEM = re.compile(r"^(?P<list>.+)\.(?P<index>\d+)$")
LAYERS_BY_NAME = "prune.layer_k"
LAYER_ITEM = re.compile(r"^(?P<dict>prune\.layer_k)\.(?P<name>[A-Za-z_][\w-]*)$")  # k of one layer, by name
# A layer's path (``backbone/block_1``, ``mobilenetv2_0.35_32/Conv1``) in a parameter's key: Hydra's keys take no
# "/" and read "." as nesting, so "-" escapes them (-s for "/", -d for ".", -m for "-"); decoded in job_overrides.
_ESCAPES = {"-": "-m", "/": "-s", ".": "-d"}


def layer_key(name: str) -> str:
    """``name`` as it stands in a ``prune.layer_k.<name>`` key (reversed by :func:`layer_name`)."""
    return "".join(_ESCAPES.get(c, c) for c in name)


def layer_name(key: str) -> str:
    """The layer path a :func:`layer_key` stands for."""
    back = {v[1]: k for k, v in _ESCAPES.items()}
    return re.sub(r"-(.)", lambda m: back[m.group(1)], key)


def parse_overrides(params: dict[str, str] | None, arguments: list[str]) -> dict[str, Override]:
    """``hydra.sweeper.params`` then the command line's overrides, by key; a command-line override
    replaces a ``params`` entry with the same key. Raises ConfigError naming an unparsable entry."""
    parser = OverridesParser.create()
    lines = [(f"hydra.sweeper.params.{key}", f"{key}={value}") for key, value in (params or {}).items()]
    lines += [("the command line", line) for line in arguments]
    overrides: dict[str, Override] = {}
    for where, line in lines:
        try:
            override = parser.parse_override(line)
        except HydraException as e:
            raise ConfigError(f"{where}: cannot parse '{line}' ({e})") from None
        overrides[override.get_key_element().lstrip("+~")] = override
    return overrides


def distribution(key: str, override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (grammar in the module docstring)."""
    value = override.value()
    try:
        if isinstance(value, Glob):
            raise ValueError("glob() is not supported, list the options with choice()")
        if override.is_interval_sweep():
            return FloatDistribution(value.start, value.end, log="log" in value.tags)
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if override.is_range_sweep() and not value.shuffle and len(values) > 1:
            kind = IntDistribution if all(isinstance(v, int) for v in values) else FloatDistribution
            return kind(min(values), max(values), step=abs(value.step))
        if not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise ValueError("choices must be strings, numbers or booleans")
        return CategoricalDistribution(values)
    except ValueError as e:
        rhs = override.input_line.split("=", 1)[1]
        raise ConfigError(f"{key}={rhs} (hydra.sweeper.params or command line) is invalid: {e}") from None


def expand_layers(params: dict[str, str] | None, layer_names: list[str]) -> dict[str, str]:
    """``params`` with ``prune.layer_k.*`` replaced by one ``prune.layer_k.<name>`` per pruned layer."""
    out = {}
    for key, value in (params or {}).items():
        out |= ({f"{LAYERS_BY_NAME}.{layer_key(n)}": value for n in layer_names} if key == f"{LAYERS_BY_NAME}.*"
                else {key: value})
    return out


def search_space(params: dict[str, str] | None, arguments: list[str], layer_names: list[str] = ()
                 ) -> tuple[dict[str, BaseDistribution], list[str]]:
    """(distributions by parameter name, fixed override strings passed to every job as given).
    ``layer_names``: the model's pruned layers, for ``prune.layer_k.*``.

    Raises ConfigError when nothing is searched or a list's elements are not exactly 0..n-1."""
    expanded = [a for a in arguments if not a.startswith(f"{LAYERS_BY_NAME}.*=")]
    star = {f"{LAYERS_BY_NAME}.*": a.split("=", 1)[1] for a in arguments if a.startswith(f"{LAYERS_BY_NAME}.*=")}
    overrides = parse_overrides(expand_layers({**(params or {}), **star}, list(layer_names)), expanded)
    space = {key: distribution(key, o) for key, o in overrides.items() if o.is_sweep_override()}
    if not space:
        raise ConfigError("hydra.sweeper.params is empty: give at least one searched parameter, e.g. "
                          "search=optuna or prune.k='interval(0, 99)'")
    lists = {m["list"] for key in space if (m := LIST_ITEM.match(key))}
    dicts = {m["dict"] for key in space if (m := LAYER_ITEM.match(key))}
    for key, o in overrides.items():
        if key not in space and (((m := LIST_ITEM.match(key)) and m["list"] in lists)
                                 or ((d := LAYER_ITEM.match(key)) and d["dict"] in dicts)):
            space[key] = CategoricalDistribution([o.value()])
    for name in lists:
        indices = sorted(int(m["index"]) for key in space if (m := LIST_ITEM.match(key)) and m["list"] == name)
        if indices != list(range(len(indices))):
            raise ConfigError(f"hydra.sweeper.params: {name}.<i> must cover the indices 0..{len(indices) - 1} "
                              f"exactly once each, got {indices}")
    fixed = [o.input_line for key, o in overrides.items() if key not in space]
    return space, fixed


def job_overrides(params: dict[str, Any]) -> list[str]:
    """Trial parameters as Hydra overrides; ``<list>.<i>`` parameters are joined into ``<list>=[...]``, layers
    named under ``prune.layer_k`` into ``prune.layer_k={name: v, ...}``."""
    plain, lists, dicts = [], {}, {}
    for key, value in params.items():
        if m := LIST_ITEM.match(key):
            lists.setdefault(m["list"], {})[int(m["index"])] = value
        elif d := LAYER_ITEM.match(key):
            dicts.setdefault(d["dict"], {})[layer_name(d["name"])] = value
        else:
            plain.append(f"{key}={value}")
    joined = [f"{name}=[{','.join(str(items[i]) for i in sorted(items))}]" for name, items in lists.items()]
    named = [f"{name}={{{', '.join(f'{k}: {v}' for k, v in items.items())}}}" for name, items in dicts.items()]
    return plain + joined + named


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """tpe | random | nsgaii. TPE and NSGA-II read the trials' constraints (Trial.set_constraint) themselves."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"hydra.sweeper.sampler.name={name} is unknown: use tpe, random or nsgaii")


def open_study(storage: str | None, study_name: str, sampler: str, seed: int | None, objectives: list[str],
               directions: list[str], max_accuracy_drop: float | None) -> optuna.Study:
    """Create the study or load it (``load_if_exists=True``) to add trials to it.

    On resume the sampler seed is offset by the trials already in the study, so a seeded sampler does
    not propose its first trials again. Raises ConfigError if a study with trials has other directions,
    objectives or max_accuracy_drop (kept as a study user attribute): its trials would not compare."""
    summaries = optuna.get_all_study_summaries(storage) if storage else []
    n_done = next((s.n_trials for s in summaries if s.study_name == study_name), 0)
    study = optuna.create_study(storage=storage, sampler=make_sampler(sampler, None if seed is None else seed + n_done),
                                study_name=study_name, directions=directions, load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        stored = {"directions": [d.name.lower() for d in study.directions], "objectives": study.metric_names,
                  "max_accuracy_drop": study.user_attrs.get("max_accuracy_drop")}
        wanted = {"directions": directions, "objectives": objectives, "max_accuracy_drop": max_accuracy_drop}
        for key, value in wanted.items():
            if n_done and stored[key] != value:
                raise ConfigError(f"hydra.sweeper.{key}={value} does not match study '{study_name}' in {storage}, "
                                  f"which has {stored[key]}: use another hydra.sweeper.study_name")
        study.set_metric_names(objectives)
    study.set_user_attr("max_accuracy_drop", max_accuracy_drop)
    return study


def tell_result(study: optuna.Study, trial: Trial, result: dict[str, Any], objectives: list[str],
                max_accuracy_drop: float | None, baseline: float | None) -> FrozenTrial:
    """Record one job's result as the trial's values (NaN values make it FAIL, as Optuna does).

    Stores run_id and the accuracies/sparsity as user attributes. With ``max_accuracy_drop``, also the
    ``baseline`` and the drop from it, and the constraint ``accuracy_drop`` = drop - max_accuracy_drop
    (Trial.set_constraint: feasible when <= 0), which TPE and NSGA-II use while sampling and
    study.best_trial(s) use to return feasible trials only. Raises ConfigError, before telling, if
    the result lacks an objective."""
    missing = [name for name in objectives if name not in result]
    if missing:
        raise ConfigError(f"hydra.sweeper.objectives={objectives}: the job returned no {missing} "
                          f"(it returned {sorted(result)})")
    for name in ("run_id", "val_accuracy", "test_accuracy", "sparsity"):
        if name in result:
            trial.set_user_attr(name, result[name])
    if max_accuracy_drop is not None:
        drop = round(float(baseline) - float(result["val_accuracy"]), 6)  # drop float32 noise of the logged baseline
        trial.set_user_attr("baseline_val_accuracy", float(baseline))
        trial.set_user_attr("accuracy_drop", drop)
        trial.set_constraint("accuracy_drop", drop - max_accuracy_drop)
    return study.tell(trial, [float(result[name]) for name in objectives])
