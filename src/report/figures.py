"""Figures of a sweep report (matplotlib Agg, written to PNG).

Inputs are the report table of src/report/table.py (one row per prune run; ``k`` in percent, accuracy
0..1, times in ms), the size points of src/report/sizes.py and trained kernels; statistics come from
src/pruning/stats.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from src.pruning.stats import excess_kurtosis  # noqa: E402
from src.report.aggregate import SEED  # noqa: E402

ENGINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per engine in a timing panel
METHOD_STYLE = {"weight": ("-", "o"), "unit": ("--", "s"), "none": (":", "^")}  # (line style, marker)
PLAIN_NUMBERS = FuncFormatter(lambda value, _: f"{value:g}")
SOME_MINOR_NUMBERS = FuncFormatter(  # label 2, 3, 5 x 10^n only, so log-scale minor labels do not crowd
    lambda value, _: f"{value:g}" if value > 0 and f"{value:e}"[0] in "235" else "")
KEPT_TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05)  # % of weights kept, the literature's log axis
KEPT_FLOOR = 0.05  # % kept at which a fully pruned network is drawn (a log axis has no 0)
KEPT_LABEL = "weights kept in the pruned layers (%, log scale)"
LEGEND_WRAP = 48  # characters: a longer legend label goes beside the axes, wrapped


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _mean_band(ax: plt.Axes, x: pd.Series, mean: pd.Series, std: pd.Series, colour: object) -> None:
    """Shade mean +- std where std is known (points with several training seeds)."""
    known = std.notna().to_numpy()
    if known.any():
        ax.fill_between(x[known], (mean - std)[known], (mean + std)[known], color=colour, alpha=0.18, linewidth=0)


def accuracy_vs_k(path: Path, table: pd.DataFrame, title: str, settings: list[str] = ()) -> Path:
    """Test accuracy (%) vs k (%), one line per (method, lr, *settings) — ``settings`` are other
    table columns that vary between runs. Runs sharing a point (training seeds, re-runs) are averaged and,
    when there are several seeds, drawn as the mean with a +-1 std band.

    Colour = lr and settings, line style and marker = pruning method; a grey line marks chance (10%)."""
    models = ["lr", *(s for s in settings if s != SEED)]
    model_keys = list(table[models].drop_duplicates().itertuples(index=False, name=None))
    colours = dict(zip(model_keys, plt.cm.tab10(np.arange(len(model_keys)) % 10), strict=True))
    seeds = table[SEED].nunique() if SEED in table.columns else 1
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (method, *model), group in table.groupby(["method", *models], sort=True):
        line = group.groupby("k")["test_accuracy"].agg(["mean", "std"]).reset_index()
        label = f"{method}, " + ", ".join(f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}"
                                          for c, v in zip(models, model, strict=True))
        linestyle, marker = METHOD_STYLE.get(method, ("-.", "D"))
        ax.plot(line["k"], 100 * line["mean"], linestyle=linestyle, marker=marker, markersize=5,
                markerfacecolor="none", color=colours[tuple(model)], label=label)
        _mean_band(ax, line["k"], 100 * line["mean"], 100 * line["std"], colours[tuple(model)])
    _references(ax, None)
    ax.set_xlabel("k: share of each hidden layer pruned (%; mean over layers if set per layer)")
    ax.set_ylabel("test accuracy (%)" + (f", mean ± std over {seeds} seeds" if seeds > 1 else ""))
    ax.set_xlim(-2, 102)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    _legend(fig, ax, title="method, trained model", title_fontsize=8)
    ax.set_title(_title("Test accuracy vs pruning fraction", title), fontsize=10)
    return _save(fig, path)


def _legend(fig: plt.Figure, ax: plt.Axes, **kwargs) -> None:
    """``ax``'s legend, inside the axes when its labels are short and few; else beside them, each label wrapped at
    LEGEND_WRAP characters and the figure widened to hold it (a mixed sweep's labels name many settings: inside,
    they squeezed the axes into a quarter of the figure)."""
    handles, labels = ax.get_legend_handles_labels()
    if max(map(len, labels), default=0) <= LEGEND_WRAP and len(labels) <= 8:
        ax.legend(fontsize=8, **kwargs)
        return
    wrapped = ["\n".join(textwrap.wrap(label, LEGEND_WRAP)) for label in labels]
    ax.legend(handles, wrapped, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), **kwargs)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + 3.2, max(height, 0.16 * sum(w.count("\n") + 1 for w in wrapped) + 1.5))


TITLE_WRAP = 100  # characters of a title's context line: a 7.5-inch figure's width at font size 10


def _title(what: str, context: str) -> str:
    """``what`` on the first line, the sweep and its training context under it (wrapped at TITLE_WRAP)."""
    return "\n".join([what, *textwrap.wrap(context, TITLE_WRAP)]) if context else what


def _sparse_label(method: str, engines: list[str]) -> str:
    """Unit pruning's fast path is the smaller model left after dropping the pruned units (numpy for an MLP, a
    conv net's kernel for a conv net); weight pruning's, the sparse engines."""
    if method == "unit":  # the compacted net through numpy, or through a kernel (a conv net's)
        kernels = [e for e in engines if e not in ("dense", "compact-dense")]
        return f"compacted ({', '.join(kernels) or 'dense'}, pruned units removed)"
    return f"sparse ({', '.join(engines)})" if engines else "sparse"


def _model_keys(table: pd.DataFrame) -> list[str]:
    """``["model.name"]`` when the table's runs are of several models (their curves must not be joined), else []."""
    return ["model.name"] if "model.name" in table.columns and table["model.name"].nunique() > 1 else []


def eval_time_vs_k(path: Path, table: pd.DataFrame, title: str) -> Path | None:
    """One panel per method (per model and method when the runs are of several models): median dense and sparse
    (compacted for unit) time to evaluate the test set (ms, log scale) vs k (%); lines join medians over runs at
    each k, dots are single runs.
    None (no file) when no run was timed (eval.timing=off)."""
    table = table.dropna(subset=["dense_eval_ms", "sparse_eval_ms"])
    if table.empty:
        return None
    keys = _model_keys(table)
    panels = list(table.groupby([*keys, "method"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.5, 5.0 * len(panels)), 4.2), squeeze=False,
                             sharey=True)
    for ax, (key, rows) in zip(axes[0], panels, strict=True):
        *model, method = key
        engines = sorted({e for e in rows["engine"].dropna().astype(str) if e})
        for column, label, colour in (("dense_eval_ms", "dense matrices (zeros kept)", "tab:gray"),
                                      ("sparse_eval_ms", _sparse_label(method, engines), "tab:red")):
            median = rows.groupby("k", as_index=False)[column].median()
            ax.plot(median["k"], median[column], color=colour, label=label, linewidth=1.2)
            if column == "dense_eval_ms":
                ax.scatter(rows["k"], rows[column], s=10, alpha=0.35, color=colour)
                continue
            for engine, marker in zip(engines or [""], ENGINE_MARKERS, strict=False):  # which engine ran each point
                mine = rows[rows["engine"].astype(str) == engine] if engines else rows
                ax.scatter(mine["k"], mine[column], s=22, marker=marker, facecolors="none", edgecolors=colour,
                           linewidths=1, label=f"engine {engine}" if engines else None)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN_NUMBERS)
        ax.set_xlabel("k: share of each hidden layer pruned (%)")
        ax.set_title(", ".join([*map(str, model), f"{method} pruning"]), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("time to evaluate the test set (ms, median)")
    low, high = axes[0][0].get_ylim()
    if high / low < 1000:  # within three decades the minor ticks need labels too (shared by all panels)
        axes[0][0].yaxis.set_minor_formatter(SOME_MINOR_NUMBERS)
    fig.suptitle(_title("Evaluation time, dense vs pruned", title), fontsize=10)
    return _save(fig, path)


def speedup_vs_k(path: Path, table: pd.DataFrame, title: str) -> Path | None:
    """eval_speedup (dense time / pruned time on the test set, log scale) vs k (%), one line per method (per model
    and method when the runs are of several models) through the medians over runs, dots for single runs, a dotted
    line at 1x. None when no run was timed."""
    table = table.dropna(subset=["eval_speedup"])
    if table.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    keys = _model_keys(table)
    curves = table.groupby([*keys, "method"], sort=True)
    for ((*model, method), rows), colour in zip(curves, plt.cm.tab10(np.arange(10)), strict=False):
        median = rows.groupby("k", as_index=False)["eval_speedup"].median()
        linestyle, marker = METHOD_STYLE.get(method, ("-.", "D"))
        ax.scatter(rows["k"], rows["eval_speedup"], s=10, alpha=0.35, color=colour)
        fast_path = "compacted" if method == "unit" else "sparse"
        ax.plot(median["k"], median["eval_speedup"], linestyle=linestyle, marker=marker, markersize=5,
                markerfacecolor="none", color=colour, label=", ".join([*map(str, model), f"{method} ({fast_path})"]))
    return _speedup_axes(fig, ax, path, "k: share of each hidden layer pruned (%)",
                         "speedup over dense evaluation (x, median)",
                         _title("Evaluation speedup vs pruning fraction", title), "dense (1x)")


def _speedup_axes(fig: plt.Figure, ax: plt.Axes, path: Path, xlabel: str, ylabel: str, title: str,
                  one: str | None = None) -> Path:
    """A speedup chart's frame: a dotted line at 1x (labelled ``one``), log y with plain numbers, grid, legend."""
    ax.axhline(1, color="black", ls=":", lw=1, label=one)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN_NUMBERS)
    ax.yaxis.set_minor_formatter(SOME_MINOR_NUMBERS)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def compact_speedup_vs_k(path: Path, table: pd.DataFrame, title: str) -> Path | None:
    """Structural unit runs: the original over the compact model's Keras time at batch 256 (solid) and 1 (dashed)
    vs k (%), and 1 / macs_kept (dotted: what fewer multiply-adds alone would buy), one colour per curve of
    (model, method, criterion: the columns that vary), medians over runs. None when no run has these metrics."""
    if "keras_eval_speedup" not in table.columns or table["keras_eval_speedup"].isna().all():
        return None
    table = table.dropna(subset=["keras_eval_speedup"])
    keys = [c for c in ("model.name", "method", "prune.criterion") if c in table.columns]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (key, rows), colour in zip(table.groupby(keys, sort=True), plt.cm.tab10(np.arange(10)), strict=False):
        name = ", ".join(str(v) for v in (key if isinstance(key, tuple) else (key,)) if v not in ("None", ""))
        median = rows.groupby("k", as_index=False)[["keras_eval_speedup", "keras_latency_speedup",
                                                    "macs_kept"]].median()
        ax.plot(median["k"], median["keras_eval_speedup"], "-o", color=colour, markerfacecolor="none",
                label=f"{name}: batch 256")
        ax.plot(median["k"], median["keras_latency_speedup"], "--s", color=colour, markerfacecolor="none",
                label=f"{name}: batch 1")
        ax.plot(median["k"], 1 / median["macs_kept"], ":x", color=colour, label=f"{name}: 1 / MACs kept")
    return _speedup_axes(fig, ax, path, "k: share of each family of coupled channels removed (%)",
                         "original / compact model time in Keras (x, median)",
                         _title("The compact model's speed in Keras vs pruning fraction", title))


def weight_distributions(path: Path, models: dict[str, list[np.ndarray]], title: str) -> Path | None:
    """One panel per layer: density histogram of each trained model's weights (one colour each),
    with the layer's excess kurtosis in the legend (-1.2 = uniform/flat-topped, 0 = Gaussian). Models of different
    architectures (kernel shapes) get panels of their own, one architecture after another. None (no figure)
    without models."""
    if not models:
        return None
    families: dict[tuple, dict[str, list[np.ndarray]]] = {}  # kernel shapes -> the models of that architecture
    for label, kernels in models.items():
        families.setdefault(tuple(k.shape for k in kernels), {})[label] = kernels
    panels = [(i, shape, {label: k[i] for label, k in family.items()})
              for shapes, family in families.items() for i, shape in enumerate(shapes)]
    n_cols = min(len(panels), 3)
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (i, shape, layer) in zip(axes.flat, panels, strict=False):  # the spare axes are off
        lim = max(float(np.abs(w).max()) for w in layer.values()) or 1.0
        for colour, (label, w) in zip(plt.cm.tab10(np.arange(len(layer)) % 10), layer.items(), strict=True):
            density, edges = np.histogram(w.ravel(), bins=80, range=(-lim, lim), density=True)
            ax.stairs(density, edges, color=colour, linewidth=1.3,
                      label=textwrap.fill(f"{label} (kurt {excess_kurtosis(w):+.2f})", LEGEND_WRAP))
        ax.set_title(f"layer {i + 1}: {'x'.join(map(str, shape))} weights", fontsize=9)
        ax.set_xlabel("weight value")
        ax.locator_params(axis="x", nbins=5)
        ax.set_ylabel("probability density (1/weight)")
        ax.legend(fontsize=7)
    fig.suptitle(_title("Trained weight distributions, excess kurtosis in legend", title), fontsize=10)
    return _save(fig, path)


def _curve_label(keys: tuple, names: list[str]) -> str:
    return ", ".join(f"{n.removeprefix('prune.')}={v:g}" if isinstance(v, float) else str(v)
                     for n, v in zip(names, keys, strict=True))


def kept_percent(sparsity: pd.Series) -> pd.Series:
    """Percent of the pruned layers' weights kept (100 * (1 - sparsity)), at least KEPT_FLOOR."""
    return (100 * (1 - sparsity)).clip(lower=KEPT_FLOOR)


def _kept_axis(ax: plt.Axes, kept: pd.Series) -> None:
    """x = weights kept (%) on a log scale falling from 100% on the left (0.5% or the sparsest point on the right):
    how the pruning literature plots accuracy, so the high-sparsity end, where methods differ, gets room."""
    low = min(0.5, float(kept.min())) if len(kept) else 0.5
    ax.set_xscale("log")
    ax.set_xlim(100 * 1.2, low / 1.4)
    ax.set_xticks([t for t in KEPT_TICKS if t >= low / 1.01])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(KEPT_LABEL)


def accuracy_vs_sparsity(path: Path, table: pd.DataFrame, title: str, curves: list[str],
                         unpruned: float | None) -> Path:
    """Test accuracy (%) vs the weights kept (%, log axis: :func:`_kept_axis`; 1 - the actual overall sparsity of the
    pruned layers), one line per combination of the ``curves`` columns (method, schedule, scope, ...; the training
    seed is never one); runs sharing a point are averaged, with a +-1 std band when there are several.
    A dotted line marks the unpruned accuracy, a grey one chance (10%)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    curves = [c for c in curves if c != SEED]
    groups = list(table.groupby(curves, sort=True)) if curves else [((), table)]
    colours = plt.cm.tab10(np.arange(len(groups)) % 10)
    for colour, (keys, group) in zip(colours, groups, strict=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        line = group.groupby("k", as_index=False).agg(sparsity=("sparsity", "mean"), mean=("test_accuracy", "mean"),
                                                      std=("test_accuracy", "std")).sort_values("sparsity")
        method = keys[curves.index("method")] if "method" in curves else ""
        linestyle, marker = METHOD_STYLE.get(method, ("-.", "D"))
        kept = kept_percent(line["sparsity"])
        ax.plot(kept, 100 * line["mean"], linestyle=linestyle, marker=marker,
                markersize=5, markerfacecolor="none", color=colour, label=_curve_label(keys, curves))
        _mean_band(ax, kept, 100 * line["mean"], 100 * line["std"], colour)
    _references(ax, unpruned)
    _kept_axis(ax, kept_percent(table["sparsity"]))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7)
    ax.set_title(_title("Test accuracy vs weights kept", title), fontsize=10)
    return _save(fig, path)


def _references(ax: plt.Axes, unpruned: float | None) -> None:
    if unpruned is not None:
        ax.axhline(100 * unpruned, color="black", ls=":", lw=1, label=f"unpruned ({100 * unpruned:.2f}%)")
    ax.axhline(10, color="grey", ls="--", lw=0.8, label="chance (10%)")


def frontier(path: Path, table: pd.DataFrame, title: str, by: str, unpruned: float | None) -> Path | None:
    """The best test accuracy (%) reached with at most each share of the weights kept (x: :func:`_kept_axis`, log),
    one step line per value of ``by`` (e.g. prune.schedule): the upper envelope of that group's runs, and the
    unpruned accuracy as a dotted line. Zoomed on the top of the accuracy range, where the schedules differ. None when
    ``by`` is not a column."""
    if by not in table.columns:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (value, group), colour in zip(table.groupby(by, sort=True), plt.cm.tab10(np.arange(10)), strict=False):
        points = group.sort_values("sparsity", ascending=False)  # fewest weights kept first
        best = np.maximum.accumulate(points["test_accuracy"].to_numpy())
        ax.step(kept_percent(points["sparsity"]), 100 * best, where="post", color=colour, marker="o", markersize=4,
                label=f"{by.removeprefix('prune.')}={value}")
    _references(ax, unpruned)
    _kept_axis(ax, kept_percent(table["sparsity"]))
    top = 100 * float(max(table["test_accuracy"].max(), unpruned or 0))
    ax.set_ylim(max(0.0, top - 15), min(100.0, top + 1.5))
    ax.set_ylabel("best test accuracy with at most this share kept (%)")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8)
    ax.set_title(_title(f"Accuracy / weights-kept frontier by {by.removeprefix('prune.')}", title), fontsize=10)
    return _save(fig, path)


def _byte_label(value: float, _: object = None) -> str:
    """``30 kB``, ``1.1 MB`` (decimal units, as file sizes are quoted)."""
    return f"{value / 1e6:g} MB" if value >= 1e6 else f"{value / 1e3:g} kB"


def _over_seeds(points: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean and std (NaN for one run) of ``bytes`` and ``error`` per value of ``by``, smallest file first."""
    return points.groupby(by, as_index=False).agg(
        bytes=("bytes", "mean"), bytes_std=("bytes", "std"), error=("error", "mean"), error_std=("error", "std"),
        dense_bytes=("dense_bytes", "mean")).sort_values("bytes")


def size_frontier(path: Path, points: pd.DataFrame, dense: pd.DataFrame, title: str) -> Path | None:
    """Test error (%) against file size (bytes, log x): one line per ``curve`` of ``points`` (src/report/sizes.
    size_points) through its k values, each point the mean over seeds with +-1 std bars (error and bytes) where seeds
    repeat and labelled with how many times smaller than the dense ``.keras`` file it is; each dense model of
    ``dense`` (sizes.dense_points) as a star. None (no file) when no run logged a size."""
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(11, 5.2))
    curves = list(points.groupby("curve", sort=True))
    seeds = points[SEED].nunique()
    palette = plt.cm.tab10(np.arange(len(curves))) if len(curves) <= 10 else plt.cm.tab20(np.arange(len(curves)) % 20)
    for index, (colour, (curve, group)) in enumerate(zip(palette, curves, strict=True)):
        line = _over_seeds(group, "k")
        linestyle, marker = METHOD_STYLE.get(group["method"].iloc[0], ("-.", "D"))
        ax.errorbar(line["bytes"], line["error"], xerr=line["bytes_std"].fillna(0), yerr=line["error_std"].fillna(0),
                    linestyle=linestyle, marker=marker, markersize=6, markerfacecolor="none", color=colour,
                    capsize=3, elinewidth=0.8, label=curve)
        for x, y, ratio in zip(line["bytes"], line["error"], line["dense_bytes"] / line["bytes"], strict=True):
            if np.isfinite(ratio):
                ax.annotate(f"{ratio:.0f}x", (x, y), textcoords="offset points", xytext=(4, -11 - 8 * (index % 3)),
                            fontsize=7, color=colour)  # staggered: curves that nearly meet keep their labels apart
    for (model, group), marker in zip(dense.groupby("model", sort=True), ("*", "P", "X", "h"), strict=False):
        point = _over_seeds(group.assign(dense_bytes=np.nan), "model")
        ax.errorbar(point["bytes"], point["error"], yerr=point["error_std"].fillna(0), marker=marker, markersize=11,
                    color="black", linestyle="none", capsize=3,
                    label=f"{model} (.keras, {float(point['bytes'].iloc[0]):,.0f} B)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_byte_label))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: _byte_label(v) if f"{v:e}"[0] in "25" else ""))
    kinds = {"float32: the sparse export" if str(c).endswith("float32") else "quantized: the compressed file"
             for c, _ in curves}
    ax.set_xlabel(f"file size (log scale; {', '.join(sorted(kinds, reverse=True))})")
    ax.set_ylabel("test error (%)" + (f", mean ± std over {seeds} seeds" if seeds > 1 else ""))
    low, high = ax.get_ylim()
    ax.set_ylim(max(0.0, low - 0.05 * (high - low)), high)  # room under the lowest point for its label
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: the points fill them
    ax.set_title(_title("Test error vs file size (labels: times smaller than the dense .keras)", title), fontsize=10)
    return _save(fig, path)
