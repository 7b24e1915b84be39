"""The study's claims, each checked against a sweep's runs: pure pandas/numpy.

Inputs are two tables. ``runs``: one row per one-shot prune run with ``lr``, ``method``, ``k`` (percent),
``seed``, ``test_accuracy`` (0..1) and ``eval_speedup`` (dense / sparse time; NaN when not timed).
``models``: one row per trained model with ``lr``, ``seed``, ``test_accuracy`` and
``layer<i>/excess_kurtosis`` (i from 1). Every finding states its rule, the measured numbers with their
spread over training seeds (mean +- sample std, n), and a verdict; a finding whose inputs are missing
says what is missing instead. Accuracy differences are in percentage points ("points").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

HOLDS, PARTLY, FAILS = "holds", "holds partly", "does not hold"
TRAINED_TARGET = 0.975  # "~98%": a mean test accuracy of at least 97.5%
FLAT_TOP = -0.6  # excess kurtosis below this is flat-topped (uniform -1.2); at or above it bell-shaped (Gaussian 0)
HOLD_POINTS = 1.0  # finding c/d: "accuracy stays within 1 point of the unpruned model"
SMALL_LOSS_POINTS = 0.5  # finding g: "can be removed" = a loss under 0.5 points
SMALL_K = 50  # finding e: "small k" = 0 < k <= 50
SMALL_WEIGHTS_K = 70  # finding g: the study's "~70% of the weights"
RISING_RHO = 0.8  # finding f: Spearman correlation of median speedup with k
MIN_K_VALUES = 3  # finding f: a rank correlation needs at least this many k values


@dataclass(frozen=True)
class Finding:
    """One claim of the study and what the runs say about it."""

    key: str  # a..g
    title: str
    claim: str  # the study's statement
    rule: str  # how the verdict is decided
    measured: str  # the numbers (mean +- std over seeds, n)
    verdict: str  # HOLDS | PARTLY | FAILS | "not measured: <why>"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _pm(values: pd.Series | list[float], scale: float = 100.0, digits: int = 1, unit: str = "") -> str:
    """'mean +- std (n=..)' of the values times ``scale``; just the value for one."""
    v = pd.Series(values, dtype=float).dropna() * scale
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v.iloc[0]:.{digits}f}{unit} (n=1)"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}{unit} (n={len(v)})"


def _lr(lr: float) -> str:
    return f"lr {lr:g}"


def _overall(flags: list[bool]) -> str:
    return HOLDS if flags and all(flags) else PARTLY if any(flags) else FAILS


def _per_lr_at_least(table: pd.DataFrame, column: str, threshold: float, show: Callable[[pd.Series], str]
                     ) -> tuple[list[str], list[bool]]:
    """Per lr: "lr <lr>: <show(values)>", and whether the mean of ``column`` is at least ``threshold``."""
    groups = list(table.groupby("lr"))
    return ([f"{_lr(lr)}: {show(group[column])}" for lr, group in groups],
            [bool(group[column].mean() >= threshold) for _, group in groups])


def _missing(key: str, title: str, claim: str, rule: str, why: str) -> Finding:
    return Finding(key, title, claim, rule, "", f"not measured: {why}")


def reference_accuracy(runs: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Unpruned test accuracy per (lr, seed): the k=0 runs' mean, else the trained model's."""
    ref = runs[runs["k"] == 0].groupby(["lr", "seed"])["test_accuracy"].mean()
    if not models.empty:
        ref = ref.combine_first(models.groupby(["lr", "seed"])["test_accuracy"].mean())
    return ref.rename("reference").reset_index()


def hold_k(curve: pd.DataFrame, reference: float, tolerance_points: float) -> float:
    """Largest k of ``curve`` (columns k, test_accuracy) up to which every point stays within
    ``tolerance_points`` of ``reference`` (strictly less loss); 0 when the first pruned point already drops."""
    held = 0.0
    for k, accuracy in curve.sort_values("k")[["k", "test_accuracy"]].itertuples(index=False, name=None):
        if 100 * (reference - accuracy) >= tolerance_points:
            break
        held = float(k)
    return held


def hold_k_per_seed(runs: pd.DataFrame, refs: pd.DataFrame, tolerance_points: float) -> pd.DataFrame:
    """:func:`hold_k` of every (lr, method, seed) curve against its (lr, seed) reference: columns lr, method,
    seed, hold_k. Curves without a reference are left out."""
    rows = []
    for (lr, method, seed, reference), curve in runs.merge(refs, on=["lr", "seed"]).groupby(
            ["lr", "method", "seed", "reference"]):
        points = curve.groupby("k", as_index=False)["test_accuracy"].mean()
        rows.append({"lr": lr, "method": method, "seed": seed, "hold_k": hold_k(points, reference, tolerance_points)})
    return pd.DataFrame(rows, columns=["lr", "method", "seed", "hold_k"])


def area_under_curve(curve: pd.DataFrame) -> float:
    """Mean test accuracy (%) over the swept k range: trapezoid area of accuracy vs k divided by the range."""
    curve = curve.groupby("k", as_index=False)["test_accuracy"].mean().sort_values("k")
    k, accuracy = curve["k"].to_numpy(float), 100 * curve["test_accuracy"].to_numpy(float)
    if len(k) < 2:
        return float(accuracy[0]) if len(k) else float("nan")
    return float(np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(k)) / (k[-1] - k[0]))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 points or a constant input."""
    x, y = pd.Series(x, dtype=float).rank().to_numpy(), pd.Series(y, dtype=float).rank().to_numpy()
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


# ---- the findings -----------------------------------------------------------------------------------

def trained_accuracy(models: pd.DataFrame) -> Finding:
    title, claim = "Accuracy after training", "~98% test accuracy at both learning rates"
    rule = f"holds when the mean over seeds is >= {100 * TRAINED_TARGET:g}% at every lr (partly: at some)"
    if models.empty or models["test_accuracy"].isna().all():
        return _missing("a", title, claim, rule, "no trained model's test accuracy in this sweep")
    parts, flags = _per_lr_at_least(models, "test_accuracy", TRAINED_TARGET,
                                    lambda v: _pm(v, digits=2, unit="%"))
    return Finding("a", title, claim, rule, "; ".join(parts), _overall(flags))


def kurtosis_columns(models: pd.DataFrame) -> list[str]:
    """The ``layer<i>/excess_kurtosis`` columns, in layer order."""
    cols = [c for c in models.columns if re.fullmatch(r"layer\d+/excess_kurtosis", c)]
    return sorted(cols, key=lambda c: int(c[5:c.index("/")]))


def weight_shape(models: pd.DataFrame) -> Finding:
    title = "Weight distribution shape"
    claim = "flat top (the uniform initialisation) at lr 1e-5, Gaussian at lr 1e-3"
    rule = (f"excess kurtosis per hidden layer, mean over seeds (uniform -1.2, Gaussian 0); flat-topped when "
            f"< {FLAT_TOP:g}. Holds when every hidden layer is flat-topped at the smallest lr and none is at the "
            "largest; partly when only the mean over hidden layers is lower at the smallest lr")
    columns = kurtosis_columns(models)[:-1]  # hidden layers: all but the logits layer
    if models.empty or not columns:
        return _missing("b", title, claim, rule, "no per-layer weight statistics of the trained models")
    lrs = sorted(models["lr"].unique())
    if len(lrs) < 2:
        return _missing("b", title, claim, rule, "needs two learning rates (this sweep has one)")
    parts, mean_per_layer = [], {}
    for lr in lrs:
        group = models[models["lr"] == lr]
        mean_per_layer[lr] = group[columns].mean()
        parts.append(f"{_lr(lr)}: " + ", ".join(f"L{c[5:c.index('/')]} {_pm(group[c], 1, 2)}" for c in columns))
    low, high = mean_per_layer[lrs[0]], mean_per_layer[lrs[-1]]
    if (low < FLAT_TOP).all() and (high >= FLAT_TOP).all():
        verdict = HOLDS
    elif low.mean() < high.mean():
        verdict = PARTLY
    else:
        verdict = FAILS
    return Finding("b", title, claim, rule, "; ".join(parts), verdict)


def early_drop(runs: pd.DataFrame, refs: pd.DataFrame) -> Finding:
    title = "Where accuracy starts to drop, by learning rate"
    claim = "the lr 1e-5 model loses accuracy at smaller k than the lr 1e-3 model"
    rule = (f"per seed, the largest k up to which every pruned point stays within {HOLD_POINTS:g} point of the "
            "unpruned model; holds when its mean is smaller at the smallest lr than at the largest for every "
            "method (partly: some methods)")
    if runs["lr"].nunique() < 2:
        return _missing("c", title, claim, rule, "needs two learning rates (this sweep has one)")
    held = hold_k_per_seed(runs, refs, HOLD_POINTS)
    if held.empty:
        return _missing("c", title, claim, rule, "no unpruned reference accuracy (no k=0 run, no trained model)")
    lrs = sorted(held["lr"].unique())
    parts, flags = [], []
    for method, group in held.groupby("method"):
        by_lr = {lr: group[group["lr"] == lr]["hold_k"] for lr in lrs}
        parts.append(f"{method}: " + ", ".join(f"{_lr(lr)} k={_pm(v, 1, 0)}" for lr, v in by_lr.items()))
        flags.append(by_lr[lrs[0]].mean() < by_lr[lrs[-1]].mean())
    return Finding("c", title, claim, rule, "; ".join(parts), _overall(flags))


def weight_vs_unit(runs: pd.DataFrame, refs: pd.DataFrame) -> Finding:
    title = "Weight vs unit pruning"
    claim = "weight pruning keeps accuracy to much larger k than unit pruning"
    rule = (f"per lr: the k that holds within {HOLD_POINTS:g} point (as in c) and the area under accuracy vs k "
            "(mean accuracy over the swept k range, %); holds when weight pruning is higher on both at every "
            "lr (partly: at some lr or on one measure)")
    if not {"weight", "unit"} <= set(runs["method"]):
        return _missing("d", title, claim, rule, "needs both prune=weight and prune=unit runs")
    held = hold_k_per_seed(runs, refs, HOLD_POINTS)
    parts, flags, any_flag = [], [], False
    for lr in sorted(runs["lr"].unique()):
        text, wins = [], []
        for method in ("weight", "unit"):
            curves = runs[(runs["lr"] == lr) & (runs["method"] == method)]
            areas = [area_under_curve(c) for _, c in curves.groupby("seed")]
            ks = held[(held["lr"] == lr) & (held["method"] == method)]["hold_k"]
            text.append(f"{method} k={_pm(ks, 1, 0)}, area {_pm(areas, 1, 1, '%')}")
            wins.append((ks.mean(), np.mean(areas)))
        beats = [wins[0][0] > wins[1][0], wins[0][1] > wins[1][1]]
        flags.append(all(beats))
        any_flag |= any(beats)
        parts.append(f"{_lr(lr)}: " + " vs ".join(text))
    verdict = HOLDS if all(flags) else PARTLY if any_flag else FAILS
    return Finding("d", title, claim, rule, "; ".join(parts), verdict)


def small_k_gain(runs: pd.DataFrame) -> Finding:
    title = "Accuracy rising at small k"
    claim = "pruning a little can raise accuracy slightly"
    rule = (f"per lr and method: the largest mean gain over k=0 among 0 < k <= {SMALL_K}, and the std over seeds "
            "of that gain (paired by seed); holds when some curve gains more than its spread, partly when "
            "gains are positive but within the spread (or with one seed), does not hold when no k gains")
    if not (runs["k"] == 0).any() or not ((runs["k"] > 0) & (runs["k"] <= SMALL_K)).any():
        return _missing("e", title, claim, rule, f"needs k=0 and some 0 < k <= {SMALL_K}")
    parts, verdicts = [], []
    for (lr, method), group in runs.groupby(["lr", "method"]):
        per_seed = group.pivot_table(index="seed", columns="k", values="test_accuracy", aggfunc="mean")
        if 0 not in per_seed.columns:
            continue
        gains = per_seed[[k for k in per_seed.columns if 0 < k <= SMALL_K]].sub(per_seed[0], axis=0) * 100
        if gains.empty:
            continue
        best_k = gains.mean().idxmax()
        gain, spread = gains[best_k].mean(), gains[best_k].std(ddof=1) if len(gains) > 1 else float("nan")
        parts.append(f"{method} {_lr(lr)}: {gain:+.2f} points at k={best_k:g}"
                     + (f" (std {spread:.2f}, n={len(gains)})" if len(gains) > 1 else " (n=1)"))
        verdicts.append(HOLDS if gain > 0 and gain > spread else PARTLY if gain > 0 else FAILS)
    verdict = HOLDS if HOLDS in verdicts else PARTLY if PARTLY in verdicts else FAILS
    return Finding("e", title, claim, rule, "; ".join(parts), verdict)


def speedup_rises(runs: pd.DataFrame) -> Finding:
    title = "Sparse evaluation gets faster as k grows"
    claim = "the pruned network evaluates faster the more is pruned"
    rule = (f"per method, the median eval_speedup (dense / sparse time on the test set) at each k over all runs; "
            f"holds when it rises with k (Spearman rho >= {RISING_RHO:g} and the largest k beats the smallest) "
            "for every method (partly: some)")
    timed = runs.dropna(subset=["eval_speedup"])
    if timed.empty:
        return _missing("f", title, claim, rule, "no timings in this sweep (eval.timing=off)")
    parts, flags = [], []
    for method, group in timed.groupby("method"):
        median = group.groupby("k")["eval_speedup"].median().sort_index()
        measured = f"{method}: " + ", ".join(f"k={k:g} {v:.2g}x" for k, v in median.items())
        if len(median) < MIN_K_VALUES:  # a rank correlation of two points says nothing
            parts.append(f"{measured} (rho needs {MIN_K_VALUES}+ k values)")
            continue
        rho = spearman(median.index.to_numpy(), median.to_numpy())
        flags.append(bool(rho >= RISING_RHO and median.iloc[-1] > median.iloc[0]))
        parts.append(f"{measured} (rho {rho:.2f})")
    if not flags:
        return replace(_missing("f", title, claim, rule, f"needs {MIN_K_VALUES} or more k values of a method"),
                       measured="; ".join(parts))
    return Finding("f", title, claim, rule, "; ".join(parts), _overall(flags))


def removable_share(runs: pd.DataFrame, refs: pd.DataFrame) -> Finding:
    title = "How many weights are small enough to remove"
    claim = f"~{SMALL_WEIGHTS_K}% of the weights are small and can be removed"
    rule = (f"weight pruning, per lr and seed: the largest k up to which the loss stays under "
            f"{SMALL_LOSS_POINTS:g} points; holds when its mean is >= {SMALL_WEIGHTS_K} at every lr (partly: some)")
    weight = runs[runs["method"] == "weight"]
    if weight.empty:
        return _missing("g", title, claim, rule, "needs prune=weight runs")
    held = hold_k_per_seed(weight, refs, SMALL_LOSS_POINTS)
    if held.empty:
        return _missing("g", title, claim, rule, "no unpruned reference accuracy (no k=0 run, no trained model)")
    parts, flags = _per_lr_at_least(held, "hold_k", SMALL_WEIGHTS_K, lambda v: f"k={_pm(v, 1, 0)}")
    return Finding("g", title, claim, rule, "; ".join(parts), _overall(flags))


def study_findings(runs: pd.DataFrame, models: pd.DataFrame) -> list[Finding]:
    """Findings a-g of the study for the given runs and trained models (module docstring for the columns); each
    "not measured" when they come from several models (their accuracies are not seeds of one another)."""
    runs = runs[runs["method"].isin(["weight", "unit"])]
    names = sorted(set(runs.get("model", [])) | set(models.get("model", [])))
    if len(names) > 1:
        why = (f"this report holds runs of several models ({', '.join(names)}); the findings read one model's runs: "
               f"report one at a time, e.g. --filter \"params.`model.name` = '{names[0]}'\"")
        one = [table[table["model"] == names[0]] if "model" in table else table for table in (runs, models)]
        return [replace(f, measured="", verdict=f"not measured: {why}") for f in study_findings(*one)]
    refs = reference_accuracy(runs, models)
    found = [trained_accuracy(models), weight_shape(models), early_drop(runs, refs), weight_vs_unit(runs, refs),
             small_k_gain(runs), speedup_rises(runs), removable_share(runs, refs)]
    if runs.empty:  # c-g read the pruning runs: say that they are missing rather than what else is
        found[2:] = [replace(f, measured="", verdict="not measured: no one-shot weight or unit pruning runs in this "
                             "report") for f in found[2:]]
    return found


def markdown(findings: list[Finding]) -> str:
    """The "Findings" section of report.md: one paragraph per finding, verdict in the heading line."""
    lines = ["## Findings", "",
             "The study's claims, computed from this report's one-shot runs (mean ± std over training seeds, "
             "n seeds; accuracy differences in points = percentage points).", ""]
    for f in findings:
        lines += [f"**{f.key}. {f.title}: {f.verdict}**", ""]
        if f.claim:
            lines.append(f"- Study: {f.claim}.")
        if f.measured:
            lines.append(f"- Measured: {f.measured}.")
        if f.rule:
            lines.append(f"- Rule: {f.rule}.")
        lines.append("")
    return "\n".join(lines)
