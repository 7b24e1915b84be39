"""A report's tables, from MLflow ``Run`` objects already fetched: one row per prune run, the Markdown table, the
trained models' table for the findings, and the sweep run's ``vs_k`` curves. Pure pandas: no store access."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
from mlflow.entities import Run

from src.cli.config import QuantizeConfig, model_keys
from src.pruning.plan import unused_settings
from src.report import aggregate
from src.training.data import split_sizes

COLUMNS = ("lr", "method", "k", "test_accuracy", "test_loss", "sparsity", "dense_eval_ms", "sparse_eval_ms",
           "eval_speedup", "oneshot_test_accuracy", "engine", "run_id")
METRICS = COLUMNS[3:10]
# structural unit runs (src/records/structured_prune): shown when a run has them
STRUCTURE_METRICS = ("params_kept", "macs_kept", "keras_eval_speedup", "keras_latency_speedup")
# quantized runs (file version 3): shown when a run has them
SIZE_METRICS = ("prequant_test_accuracy", "compressed_file_bytes", "compression_ratio")
IDENTITY_PARAMS = ("lr", "prune.method", "prune.k")
RETRAINING_SETTINGS = ("prune.schedule", "prune.scope")  # each value its own curve in accuracy_vs_sparsity
LAYER_K = "prune.layer_k"  # per-layer k (e.g. from the Optuna search): reported as its mean, no own line
NOT_SETTINGS = ("tracking.", "train.verbose", "eval.engine_used", "eval.latency_engine_used", "run_tags.",
                "prune.kept_")  # prune.kept_layers / kept_groups: what a job kept whole, not a setting
MD_FORMATS = {"lr": "{:g}", "k": "{:g}", "test_accuracy": "{:.4f}", "test_loss": "{:.4f}", "sparsity": "{:.3f}",
              "dense_eval_ms": "{:.2f}", "sparse_eval_ms": "{:.2f}", "eval_speedup": "{:.2f}",
              "oneshot_test_accuracy": "{:.4f}", "params_kept": "{:.3f}", "macs_kept": "{:.3f}",
              "keras_eval_speedup": "{:.2f}", "keras_latency_speedup": "{:.2f}", "prequant_test_accuracy": "{:.4f}",
              "compressed_file_bytes": "{:,.0f}", "compression_ratio": "{:.1f}"}
MD_NOTES = """\
k: percent of each hidden layer pruned (weights for `weight`, whole units for `unit`; the mean over
layers for a per-layer `prune.layer_k`); sparsity: fraction of pruned-layer weights that are zero (0..1);
accuracy 0..1 and loss in nats, both on the test set; dense_eval_ms / sparse_eval_ms: median time (ms) to
evaluate the whole test set with dense matrices (pruned zeros kept) / with `engine` (for `unit`, the
compacted dense model); eval_speedup = dense / sparse; oneshot_test_accuracy: the test accuracy right after
pruning, before any retraining (empty for one-shot runs, whose test_accuracy it is). Structural unit runs (whole
groups of coupled channels removed): params_kept / macs_kept, the fractions of the model's parameters and
multiply-adds the compact model keeps; keras_eval_speedup / keras_latency_speedup, the original over the compact
model's time in Keras's predict_on_batch at batch 256 / 1."""
SIZE_NOTES = """\
Quantized runs (`quantize=linear` / `kmeans`): test_accuracy is the quantized model's, prequant_test_accuracy the
pruned model's before quantization; compressed_file_bytes, the whole compressed file (file version 3: codebooks,
indices, biases, header); compression_ratio, the dense `.keras` file's bytes over it."""
SEED_NOTES = """\
Rows aggregate the training seeds: `<metric>_mean` and `<metric>_std` (sample std over seeds) of each
metric, `n_seeds` runs per row; runs.csv has one row per run."""
MNIST_TRAIN_EXAMPLES = 60_000
# trained-model statistics on train runs: weights/layer<i>/<stat> (before: layer<i>/<stat>); both are read
WEIGHT_STATS_PREFIX = "weights/"
CURVE_SECTION = "vs_k/"  # one section of the sweep run's MLflow charts
DEFAULT_CODER = QuantizeConfig.coder  # not named in a curve's label
CURVE_METRICS = {"test_accuracy": ("accuracy_pct", 100.0), "eval_speedup": ("eval_speedup", 1.0),
                 "latency_speedup": ("latency_speedup", 1.0)}


def varying_settings(runs: list[Run]) -> list[str]:
    """Params other than lr / method / k / tracking / engine-used whose value differs between ``runs``, among
    the settings each run's schedule, method and scope read (src/pruning/plan.unused_settings) and its kind of model
    reads (src/cli/config.model_keys)."""
    def used(params: dict[str, str]) -> dict[str, str]:
        unused = unused_settings(params.get("prune.schedule", "oneshot"), params.get("prune.method", ""),
                                 params.get("prune.scope", "layer"))
        read = {f"model.{k}" for k in model_keys(SimpleNamespace(name=params.get("model.name", "mlp"),
                                                                conv=json.loads(params.get("model.conv", "[]"))))}
        return {k: v for k, v in params.items()
                if not k.startswith((*NOT_SETTINGS, *unused)) and (not k.startswith("model.") or k in read)}

    settings = [used(r.data.params) for r in runs]
    keys = set().union(*settings) - set(IDENTITY_PARAMS)
    return sorted(k for k in keys if len({p[k] for p in settings if k in p}) > 1)


def k_percent(params: dict[str, str]) -> float:
    """The run's k in percent: ``prune.k``, or with a per-layer ``prune.layer_k`` the mean over the pruned layers
    (param ``prune.k_mean``; runs logged before it: the mean of the list)."""
    if "prune.k_mean" in params:
        return float(params["prune.k_mean"])
    try:
        layer_k = json.loads(params.get(LAYER_K, "null"))
    except ValueError:
        layer_k = None
    return float(sum(layer_k) / len(layer_k)) if isinstance(layer_k, list) and layer_k \
        else float(params.get("prune.k", "nan"))


def table_metrics(runs: list[Run]) -> list[str]:
    """The metric columns of a report: METRICS, and STRUCTURE_METRICS and SIZE_METRICS when a run has them."""
    return [*METRICS, *(m for m in (*STRUCTURE_METRICS, *SIZE_METRICS) if any(m in r.data.metrics for r in runs))]


def _numeric_if_possible(column: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().all() else column


def report_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: COLUMNS, with any :func:`varying_settings` inserted after ``k``.

    lr as a float, k in percent (:func:`k_percent`), metrics exactly as logged (NaN when missing), engine = param
    ``eval.engine_used``; sorted by method, lr, k (then settings, run id)."""
    settings = varying_settings(runs)
    metrics = table_metrics(runs)
    rows = [{"lr": float(r.data.params.get("lr", "nan")), "method": r.data.params.get("prune.method", ""),
             "k": k_percent(r.data.params), **{s: r.data.params.get(s, "") for s in settings},
             **{m: r.data.metrics.get(m, np.nan) for m in metrics},
             "engine": r.data.params.get("eval.engine_used", ""), "run_id": r.info.run_id} for r in runs]
    table = pd.DataFrame(rows, columns=[*COLUMNS[:3], *settings, *metrics, *COLUMNS[10:]])
    for s in settings:
        table[s] = _numeric_if_possible(table[s])
    return table.sort_values(["method", "lr", "k", *settings, "run_id"], kind="stable").reset_index(drop=True)


def _cell(column: str, value: object) -> str:
    if isinstance(value, float) and np.isnan(value):
        return ""
    text = _md_format(column).format(value) if _md_format(column) and not isinstance(value, str) else str(value)
    return text.replace("|", "\\|")


def _mean_pm_std(table: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """``<m>_mean`` and ``<m>_std`` as one text column ``<m>`` = "mean ± std" (just the mean when std is NaN);
    returns the table and the names of those text columns."""
    out, merged = table.copy(), set()
    for column in [c for c in table.columns if c.endswith("_mean") and c[:-5] + "_std" in table.columns]:
        metric, fmt = column[:-5], _md_format(column) or "{:g}"
        text = [("" if np.isnan(m) else fmt.format(m) + ("" if np.isnan(s) else " ± " + fmt.format(s)))
                for m, s in zip(table[column], table[metric + "_std"], strict=True)]
        out.insert(out.columns.get_loc(column), metric, text)
        out = out.drop(columns=[column, metric + "_std"])
        merged.add(metric)
    return out, merged


def _md_format(column: str) -> str | None:
    base = column.removesuffix("_mean").removesuffix("_std")
    return MD_FORMATS.get(base)


def markdown(table: pd.DataFrame, title: str, context: str = "", n_runs: int | None = None,
             notes: str = MD_NOTES) -> str:
    """A GitHub-flavoured Markdown table of ``table`` (numbers rounded for reading), with a units note;
    ``context`` (the training behind the runs) goes under the title."""
    table, merged = _mean_pm_std(table)  # merged "mean ± std" columns align right, like numbers
    numeric = [pd.api.types.is_numeric_dtype(table[c]) or c in merged for c in table.columns]
    n_runs = len(table) if n_runs is None else n_runs
    lines = [f"# {title}", "", *([context, ""] if context else []),
             f"{n_runs} prune runs" + ("." if n_runs == len(table) else f" in {len(table)} rows."), "",
             "| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(table.columns, row, strict=True)) + " |"
              for row in table.itertuples(index=False, name=None)]
    return "\n".join([*lines, "", notes, ""])


def model_table(train_runs: list[Run]) -> pd.DataFrame:
    """One row per train run: model, lr, seed, test_accuracy and ``layer<i>/<stat>`` weight statistics (read under
    either metric name), the input of src/report/findings."""
    rows = []
    for run in train_runs:
        stats = {name.removeprefix(WEIGHT_STATS_PREFIX): v for name, v in run.data.metrics.items()
                 if name.removeprefix(WEIGHT_STATS_PREFIX).startswith("layer")}
        rows.append({"model": model_name(run.data.params), "lr": float(run.data.params.get("lr", "nan")),
                     "seed": run.data.params.get(aggregate.SEED, ""),
                     "test_accuracy": run.data.metrics.get("test_accuracy", np.nan), **stats})
    return pd.DataFrame(rows, columns=["model", "lr", "seed", "test_accuracy",
                                       *sorted({c for r in rows for c in r if c.startswith("layer")})])


def model_name(params: dict[str, str]) -> str:
    """Which model a run trained or pruned: its ``model.name`` (a conf/model entry; ``keras`` for a user's file)."""
    return params.get("model.name", "mlp")


def training_context(train_runs: list[Run]) -> str:
    """What the runs' models were trained with, for titles: epochs, training examples, lr, seeds."""
    if not train_runs:
        return ""

    def values(key: str) -> list[str]:
        return sorted({r.data.params.get(key, "?") for r in train_runs}, key=lambda v: (len(v), v))

    def examples(run: Run) -> int:
        size = run.data.params.get("data.train_size", "None")
        n = MNIST_TRAIN_EXAMPLES if size in ("None", "null", "") else int(size)
        return split_sizes(n, float(run.data.params.get("data.val_fraction", "0.1")))[0]

    lrs = sorted({float(r.data.params.get("lr", "nan")) for r in train_runs})
    seeds = values(aggregate.SEED)
    epochs = values("train.epochs")
    models = sorted({model_name(r.data.params) for r in train_runs})
    several = f"models {', '.join(models)}: " if len(models) > 1 else ""
    return (f"{several}trained {'/'.join(epochs)} epoch{'' if epochs == ['1'] else 's'} on "
            f"{'/'.join(f'{n:,}' for n in sorted({examples(r) for r in train_runs}))} examples, "
            f"lr {'/'.join(f'{lr:g}' for lr in lrs)}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")


def oneshot_table(runs: list[Run]) -> pd.DataFrame:
    """The one-shot, per-layer prune runs as src/report/findings reads them: model, lr, method, k, seed,
    test_accuracy, eval_speedup."""
    rows = [{"model": model_name(p), "lr": float(p.get("lr", "nan")), "method": p.get("prune.method", ""),
             "k": k_percent(p),
             "seed": p.get(aggregate.SEED, ""), "test_accuracy": r.data.metrics.get("test_accuracy", np.nan),
             "eval_speedup": r.data.metrics.get("eval_speedup", np.nan)}
            for r in runs for p in [r.data.params]
            if p.get("prune.schedule", "oneshot") == "oneshot" and p.get("prune.scope", "layer") == "layer"
            and p.get(LAYER_K, "None") in ("None", "null", "")]
    return pd.DataFrame(rows, columns=["model", "lr", "method", "k", "seed", "test_accuracy", "eval_speedup"])


def curve_step(params: dict[str, str], metrics: dict[str, float]) -> int:
    """A run's place on the k axis as an integer percent: round(k), or for per-layer k its overall sparsity."""
    if params.get(LAYER_K, "None") not in ("None", "null", "") and "sparsity" in metrics:
        return round(100 * metrics["sparsity"])
    return round(k_percent(params))


def layer_bits(params: dict[str, str]) -> list[int]:
    """The bits per weight a quantized run used (param ``quantize.bits_used``, JSON {layer: bits}), in layer order
    without repeats; empty when the run logged none."""
    try:
        used = json.loads(params.get("quantize.bits_used", "{}"))
    except ValueError:
        return []
    return list(dict.fromkeys(int(b) for b in used.values())) if isinstance(used, dict) else []


def quantize_label(params: dict[str, str]) -> str:
    """``kmeans 6 bits``, ``kmeans 8/5 bits`` (several widths by layer, in layer order), ``linear 4 bits per
    channel``, ``kmeans 6 bits, lzma`` (a coder other than DEFAULT_CODER), or ``float32`` (not quantized)."""
    method = params.get("quantize.method", "none")
    if method in ("none", "None", ""):
        return "float32"
    widths = layer_bits(params)
    coder = params.get("quantize.coder", DEFAULT_CODER)
    return "".join([method, f" {'/'.join(str(b) for b in widths)} bits" if widths else "",
                    " per channel" if params.get("quantize.per_channel") == "True" else "",
                    f", {coder}" if coder != DEFAULT_CODER else ""])


def curve_name(params: dict[str, str]) -> str:
    """``weight-lr0.001``, with the schedule, scope and criterion when they are not one-shot / per layer / the
    method's default, and the quantization when there is one (``-kmeans8-5``: the bits used, in layer order)."""
    defaults = (("prune.schedule", "oneshot"), ("prune.scope", "layer"), ("prune.criterion", "None"))
    extra = [params.get(s, d) for s, d in defaults]
    method = params.get("quantize.method", "none")
    quantized = [method + "-".join(str(b) for b in layer_bits(params))] if method not in ("none", "None", "") else []
    return "-".join([params.get("prune.method", "?"), f"lr{float(params.get('lr', 'nan')):g}",
                     *(e for e, (_, d) in zip(extra, defaults, strict=True) if e not in (d, "null")), *quantized])


def curve_points(params: dict[str, str], metrics: dict[str, float]) -> list[tuple[str, float, int]]:
    """(name, value, step) of one prune run on the sweep run's curves: ``vs_k/<metric>-<curve>`` (:func:`curve_name`)
    at step = :func:`curve_step`, for each of CURVE_METRICS it has (accuracy in percent)."""
    step = curve_step(params, metrics)
    return [(f"{CURVE_SECTION}{label}-{curve_name(params)}", scale * metrics[metric], step)
            for metric, (label, scale) in CURVE_METRICS.items() if metric in metrics and np.isfinite(metrics[metric])]


def curve_metrics(runs: list[Run]) -> list[tuple[str, float, int]]:
    """(name, value, step) for the sweep run: per curve (method, lr, schedule, scope) and metric, the mean over
    runs (training seeds) at each k, step = :func:`curve_step`; names ``vs_k/<metric>-<curve>`` so that MLflow
    draws each as a line over k, all in one chart section. Accuracy in percent."""
    points: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        for name, value, step in curve_points(run.data.params, run.data.metrics):
            points.setdefault((name, step), []).append(value)
    return [(name, float(np.mean(values)), step) for (name, step), values in sorted(points.items())]
