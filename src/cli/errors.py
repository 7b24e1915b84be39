"""One-line errors for the command line: Hydra's composition errors and the checks run before any job.

Hydra prints a composition error (``lr=abc``, ``prune=magic``, a misspelt key) as several lines plus a
hint about ``HYDRA_FULL_ERROR``. :func:`run_cli` runs the Hydra entry point with Hydra's own error
printing off, and turns those errors into one ``error: ...`` line and exit code 2, like the semantic
checks. Setting ``HYDRA_FULL_ERROR=1`` yourself keeps Hydra's complete stack trace for debugging.
Multiruns are covered too: Hydra composes every job of a sweep before launching the first one.

Importing this module is cheap (no TensorFlow, no MLflow); :func:`preflight` imports MLflow when called.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


class OneLineParser(argparse.ArgumentParser):
    """The ArgumentParser of the project's small CLIs (src.report, src.export, src.layers): a bad option or value is
    one ``error: ...`` line naming it and ``--help``, exit code 2, no usage block; options only as spelt out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _override_for(args: list[str], key: str) -> str | None:
    """The command-line override (as typed) that sets ``key`` or a key inside it, if any."""
    for arg in args:
        name, sep, _ = arg.lstrip("+~").partition("=")
        name = name.split("@")[0]
        if key and sep and (name == key or name.startswith((f"{key}.", f"{key}["))):
            return arg
    return None


def _raised_in_job(ex: BaseException) -> bool:
    """Whether ``ex`` came out of a job's code (its traceback passes through Hydra's ``run_job``)."""
    tb = ex.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "run_job" and tb.tb_frame.f_globals.get("__name__") == "hydra.core.utils":
            return True
        tb = tb.tb_next
    return False


def _raised_by_hydra_cli(ex: BaseException) -> bool:
    """Whether ``ex`` was raised by Hydra's own command-line handling (e.g. ``-m`` together with ``--cfg``)."""
    tb = ex.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__") == "hydra._internal.utils"


SWEEP_FUNCTIONS = {"range": "range(0,100,10)", "choice": "choice(50,90)", "interval": "interval(0,99)",
                   "shuffle": "shuffle(range(0,100,10))", "tag": "tag(log,interval(1e-4,1e-2))"}


def _sweep_hint(override: str) -> str:
    """For ``key=range`` and other sweep functions typed without arguments: the quoted form that works."""
    key, _, value = override.partition("=")
    if value.strip() not in SWEEP_FUNCTIONS:
        return ""
    return (f"; '{value}' is Hydra sweep syntax and needs its arguments, quoted for the shell and with -m, "
            f"e.g. python -m src.run -m '{key}={SWEEP_FUNCTIONS[value.strip()]}'")


TYPE_EXAMPLES = {"Float": "a number, e.g. {key}={example}", "Integer": "a whole number, e.g. {key}={example}",
                 "Boolean": "true or false, e.g. {key}={example}"}
EXAMPLE_VALUES = {"Float": "1e-3", "Integer": "10", "Boolean": "true"}
KEY_EXAMPLES = {"prune.k": "90", "quantize.bits": "6", "prune.finetune.lr": "1e-4"}  # where the type's own misleads


def _type_hint(override: str, cause: str) -> str:
    """For a value of the wrong type (``lr=abc``): what the setting takes, with an example."""
    key = override.partition("=")[0]
    for type_name, example in TYPE_EXAMPLES.items():
        if f"could not be converted to {type_name}" in cause:
            value = KEY_EXAMPLES.get(key, EXAMPLE_VALUES[type_name])
            return f"; {key} takes {example.format(key=key, example=value)}"
    return ""


def describe(ex: BaseException, args: list[str]) -> str | None:
    """One line for a config composition error, or None when ``ex`` is not one (a job's own error or a
    bug: keep its stack trace)."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if _raised_in_job(ex):
        return None
    if isinstance(ex, ValueError) and _raised_by_hydra_cli(ex):
        return f"{_first_line(ex)} (see python -m src.run --help)"
    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file and "/" in ex.missing_cfg_file:
        group, _, value = ex.missing_cfg_file.rpartition("/")
        options = sorted(o for o in (ex.options or []) if not o.startswith("base_"))  # schema nodes
        allowed = f"; choose one of {', '.join(options)}" if options else ""
        return f"{group}={value} is not an option of group {group}{allowed}"
    if isinstance(ex, OverrideParseException):
        override = str(getattr(ex, "override", "") or "")
        unbalanced = any(override.count(a) != override.count(b) for a, b in ("{}", "[]", "()"))
        hint = (f"; if a space split it, quote the whole override for the shell: '{override} ...'" if unbalanced
                else "; see python -m src.run --help for the override syntax")
        return " ".join(f"{override} cannot be read ({_first_line(ex)}){hint}".split())
    if isinstance(ex, (HydraException, OmegaConfBaseException)):
        message = _first_line(ex)
        cause = ex.__cause__ if isinstance(ex.__cause__, OmegaConfBaseException) else None
        if cause is not None and _first_line(cause):
            override = _override_for(args, str(getattr(cause, "full_key", "") or "")) or message
            message = f"{override}: {_first_line(cause)}"
            if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
                message += " (no such setting; list them with: python -m src.run --cfg job)"
            message += "" if _sweep_hint(override) else _type_hint(override, _first_line(cause))
            message += _sweep_hint(override)
        return " ".join(message.split())
    return None


def run_cli(hydra_main: Callable[[], Any], args: list[str] | None = None) -> None:
    """Call a ``@hydra.main`` function; report config composition errors as one line, exit code 2."""
    args = sys.argv[1:] if args is None else args
    if os.environ.get(FULL_ERROR_ENV, "") not in ("", "0"):
        hydra_main()  # the user asked for Hydra's complete stack traces
        return
    os.environ[FULL_ERROR_ENV] = "1"  # Hydra re-raises instead of printing; describe() decides below
    try:
        hydra_main()
    except Exception as ex:  # noqa: BLE001 - anything that is not a config error is re-raised
        line = describe(ex, args)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def preflight(cfg: Any) -> None:
    """The checks that need no TensorFlow: settings' ranges, that the tracking store answers, that the
    model fits the data and ``prune.layer_k`` (src/cli/model_checks.py), and that the data file reads (it is
    kept in memory for the job: src/training/data.load_mnist reads a file once per process).

    Raises ConfigError / TrackingError / DataError (one-line messages) before the job touches the store."""
    from pathlib import Path

    from src.cli.config import validate
    from src.cli.model_checks import check_model
    from src.store.uri import check_reachable, resolve_uri
    from src.training.data import load_mnist, n_classes

    validate(cfg)
    check_reachable(resolve_uri(cfg.tracking.uri, Path.cwd()))
    if cfg.data.source == "file":
        (x_train, y_train, _, y_test), _ = load_mnist(cfg.data.source, cfg.data.path)
        check_model(cfg, x_train.shape[1:], n_classes(y_train, y_test))
    else:
        check_model(cfg, None, None)
