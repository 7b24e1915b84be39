"""Sweep reports: the study's table and figures for a set of prune runs, built from MLflow alone.

    python -m src.report [--sweep-id ID | --run-ids a,b,c | --filter "MLflow filter"]
                         [--tracking-uri URI] [--experiment NAME] [--out DIR]

Without a selection it reports the latest sweep in the store. Writes into the output folder:
report.csv / report.md (one row per prune run, or per setting with mean/std over training seeds plus
runs.csv; report.md ends with the study's findings, also in findings.json), accuracy_vs_k.png,
accuracy_vs_sparsity.png (one curve per method, schedule and scope, against the actual sparsity), frontier.png
(when schedules differ), eval_time_vs_k.png, speedup_vs_k.png and weight_distributions.png (the parent train
runs' model artifacts). src/callbacks.py calls :func:`build_report` at the end of every multirun.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from src import aggregate, findings  # noqa: E402
from src.config import TrackingConfig  # noqa: E402
from src.data import split_sizes  # noqa: E402
from src.keras_file import read_dense_weights  # noqa: E402
from src.pruning import unused_settings  # noqa: E402
from src.report_plots import (  # noqa: E402
    accuracy_vs_k,
    accuracy_vs_sparsity,
    eval_time_vs_k,
    frontier,
    speedup_vs_k,
    weight_distributions,
)
from src.tracking import resolve_uri  # noqa: E402
from src.train_cache import MODEL_ARTIFACT  # noqa: E402

COLUMNS = ("lr", "method", "k", "test_accuracy", "test_loss", "sparsity", "dense_eval_ms", "sparse_eval_ms",
           "eval_speedup", "oneshot_test_accuracy", "engine", "run_id")
METRICS = COLUMNS[3:10]
IDENTITY_PARAMS = ("lr", "prune.method", "prune.k")
RETRAINING_SETTINGS = ("prune.schedule", "prune.scope")  # each value its own curve in accuracy_vs_sparsity
LAYER_K = "prune.layer_k"  # per-layer k (e.g. from the Optuna search): reported as its mean, no own line
NOT_SETTINGS = ("tracking.", "train.verbose", "eval.engine_used", "eval.latency_engine_used", "run_tags.")
MD_FORMATS = {"lr": "{:g}", "k": "{:g}", "test_accuracy": "{:.4f}", "test_loss": "{:.4f}", "sparsity": "{:.3f}",
              "dense_eval_ms": "{:.2f}", "sparse_eval_ms": "{:.2f}", "eval_speedup": "{:.2f}",
              "oneshot_test_accuracy": "{:.4f}"}
MD_NOTES = """\
k: percent of each hidden layer pruned (weights for `weight`, whole units for `unit`; the mean over
layers for a per-layer `prune.layer_k`); sparsity: fraction of pruned-layer weights that are zero (0..1);
accuracy 0..1 and loss in nats, both on the test set; dense_eval_ms / sparse_eval_ms: median time (ms) to
evaluate the whole test set with dense matrices (pruned zeros kept) / with `engine` (for `unit`, the
compacted dense model); eval_speedup = dense / sparse; oneshot_test_accuracy: the test accuracy right after
pruning, before any retraining (empty for one-shot runs, whose test_accuracy it is)."""
SEED_NOTES = """\
Rows aggregate the training seeds: `<metric>_mean` and `<metric>_std` (sample std over seeds) of each
metric, `n_seeds` runs per row; runs.csv has one row per run."""
MNIST_TRAIN_EXAMPLES = 60_000
# trained-model statistics on train runs: weights/layer<i>/<stat> (before: layer<i>/<stat>); both are read
WEIGHT_STATS_PREFIX = "weights/"
SEARCH_PAGE = 1000
IDS_PER_QUERY = 100


# ---- selecting runs ---------------------------------------------------------------------------------

def search_prune_runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list[Run]:
    """All active, FINISHED ``role=prune`` runs of the experiment matching ``filter_string`` (MLflow syntax)."""
    query = " and ".join(f for f in (filter_string.strip(), "tags.role = 'prune'", "attributes.status = 'FINISHED'")
                         if f)
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=SEARCH_PAGE, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def runs_by_ids(client: MlflowClient, experiment_id: str, run_ids: list[str]) -> list[Run]:
    """The finished prune runs among ``run_ids`` (other ids are dropped)."""
    runs = []
    for i in range(0, len(run_ids), IDS_PER_QUERY):
        quoted = ", ".join(f"'{r}'" for r in run_ids[i:i + IDS_PER_QUERY])
        runs += search_prune_runs(client, experiment_id, f"attributes.run_id IN ({quoted})")
    return runs


def sweep_member_tag(sweep_id: str) -> str:
    """The tag that marks a prune run as part of sweep ``sweep_id`` (a run can be in several: a later sweep
    that skips its job adds its own; tag ``sweep_id`` names the latest)."""
    return f"sweep.{sweep_id}"


def runs_by_sweep(client: MlflowClient, experiment_id: str, sweep_id: str) -> list[Run]:
    """The prune runs of sweep ``sweep_id``: marked by :func:`sweep_member_tag`, or (runs logged before that
    tag existed) whose ``sweep_id`` tag is still this sweep's."""
    runs = {r.info.run_id: r for r in search_prune_runs(client, experiment_id,
                                                         f"tags.`{sweep_member_tag(sweep_id)}` = '1'")}
    runs |= {r.info.run_id: r for r in search_prune_runs(client, experiment_id, f"tags.sweep_id = '{sweep_id}'")}
    return list(runs.values())


def latest_sweep_id(client: MlflowClient, experiment_id: str) -> str | None:
    """sweep_id of the most recently started sweep run or sweep-tagged prune run; None if there is none."""
    newest = []
    for query in ("tags.role = 'sweep'", "tags.role = 'prune' and tags.sweep_id LIKE '%'"):
        newest += client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    newest = [r for r in newest if r.data.tags.get("sweep_id")]
    return max(newest, key=lambda r: r.info.start_time).data.tags["sweep_id"] if newest else None


# ---- the table --------------------------------------------------------------------------------------

def varying_settings(runs: list[Run]) -> list[str]:
    """Params other than lr / method / k / tracking / engine-used whose value differs between ``runs``, among
    the settings each run's schedule, method and scope read (src/pruning.unused_settings)."""
    def used(params: dict[str, str]) -> dict[str, str]:
        unused = unused_settings(params.get("prune.schedule", "oneshot"), params.get("prune.method", ""),
                                 params.get("prune.scope", "layer"))
        return {k: v for k, v in params.items() if not k.startswith((*NOT_SETTINGS, *unused))}

    settings = [used(r.data.params) for r in runs]
    keys = set().union(*settings) - set(IDENTITY_PARAMS)
    return sorted(k for k in keys if len({p[k] for p in settings if k in p}) > 1)


def k_percent(params: dict[str, str]) -> float:
    """The run's k in percent: ``prune.k``, or the mean of ``prune.layer_k`` when that is set."""
    try:
        layer_k = json.loads(params.get(LAYER_K, "null"))
    except ValueError:
        layer_k = None
    return float(sum(layer_k) / len(layer_k)) if layer_k else float(params.get("prune.k", "nan"))


def _numeric_if_possible(column: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().all() else column


def report_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: COLUMNS, with any :func:`varying_settings` inserted after ``k``.

    lr as a float, k in percent (:func:`k_percent`), metrics exactly as logged (NaN when missing), engine = param
    ``eval.engine_used``; sorted by method, lr, k (then settings, run id)."""
    settings = varying_settings(runs)
    rows = [{"lr": float(r.data.params.get("lr", "nan")), "method": r.data.params.get("prune.method", ""),
             "k": k_percent(r.data.params), **{s: r.data.params.get(s, "") for s in settings},
             **{m: r.data.metrics.get(m, np.nan) for m in METRICS},
             "engine": r.data.params.get("eval.engine_used", ""), "run_id": r.info.run_id} for r in runs]
    table = pd.DataFrame(rows, columns=[*COLUMNS[:3], *settings, *COLUMNS[3:]])
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


# ---- trained models ---------------------------------------------------------------------------------

def load_kernels(client: MlflowClient, train_run_id: str) -> list[np.ndarray]:
    """Dense-layer kernels (fan_in, fan_out) of the train run's model artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_dense_weights(client.download_artifacts(train_run_id, MODEL_ARTIFACT, tmp))[0]


def parent_runs(client: MlflowClient, runs: list[Run]) -> list[Run]:
    """The distinct train runs behind ``runs`` (their ``mlflow.parentRunId``), ordered by lr then seed; a train
    run that cannot be read is left out with a message (it only removes curves and findings inputs)."""
    parents = sorted({r.data.tags["mlflow.parentRunId"] for r in runs if r.data.tags.get("mlflow.parentRunId")})
    found = []
    for run_id in parents:
        try:
            found.append(client.get_run(run_id))
        except Exception as e:  # noqa: BLE001 - any failure to fetch means "no curve"
            print(f"[report] left out train run {run_id}: {type(e).__name__}: {e}", file=sys.stderr)
    return sorted(found, key=lambda r: (float(r.data.params.get("lr", "nan")),
                                        float(r.data.params.get(aggregate.SEED, "nan"))))


def trained_models(client: MlflowClient, train_runs: list[Run]) -> dict[str, list[np.ndarray]]:
    """label -> kernels of the train runs' models: one model per label, the first seed's when seeds differ.

    Labels are ``lr=...`` plus any training param other than the seed that differs between the train runs. A
    model that cannot be fetched is left out with a message."""
    varying = varying_settings(train_runs)
    extra = [k for k in varying if k not in ("data.fingerprint", aggregate.SEED)]
    kernels: dict[str, list[np.ndarray]] = {}
    shown: set[str] = set()  # labels without the seed: one model each
    for run in train_runs:
        base = ", ".join(f"{k}={run.data.params.get(k)}" for k in ["lr", *extra])
        if base in shown:
            continue
        seed = f" (seed {run.data.params.get(aggregate.SEED)})" if aggregate.SEED in varying else ""
        try:
            kernels[base + seed] = load_kernels(client, run.info.run_id)
            shown.add(base)
        except Exception as e:  # noqa: BLE001 - any failure to fetch means "no curve"
            print(f"[report] left out the weights of train run {run.info.run_id}: {type(e).__name__}: {e}",
                  file=sys.stderr)
    return kernels


def model_table(train_runs: list[Run]) -> pd.DataFrame:
    """One row per train run: lr, seed, test_accuracy and ``layer<i>/<stat>`` weight statistics (read under
    either metric name), the input of src/findings."""
    rows = []
    for run in train_runs:
        stats = {name.removeprefix(WEIGHT_STATS_PREFIX): v for name, v in run.data.metrics.items()
                 if name.removeprefix(WEIGHT_STATS_PREFIX).startswith("layer")}
        rows.append({"lr": float(run.data.params.get("lr", "nan")),
                     "seed": run.data.params.get(aggregate.SEED, ""),
                     "test_accuracy": run.data.metrics.get("test_accuracy", np.nan), **stats})
    return pd.DataFrame(rows, columns=["lr", "seed", "test_accuracy",
                                       *sorted({c for r in rows for c in r if c.startswith("layer")})])


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
    return (f"trained {'/'.join(epochs)} epoch{'' if epochs == ['1'] else 's'} on "
            f"{'/'.join(f'{n:,}' for n in sorted({examples(r) for r in train_runs}))} examples, "
            f"lr {'/'.join(f'{lr:g}' for lr in lrs)}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")


def unpruned_accuracy(client: MlflowClient, runs: list[Run]) -> float | None:
    """Test accuracy of the trained model behind ``runs`` (its train run's), when they share one model."""
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    if len(parents) != 1 or None in parents:
        return None
    try:
        return client.get_run(parents.pop()).data.metrics.get("test_accuracy")
    except Exception:  # noqa: BLE001 - no reference line is all that is lost
        return None


def oneshot_table(runs: list[Run]) -> pd.DataFrame:
    """The one-shot, per-layer prune runs as src/findings reads them: lr, method, k, seed, test_accuracy,
    eval_speedup."""
    rows = [{"lr": float(p.get("lr", "nan")), "method": p.get("prune.method", ""), "k": k_percent(p),
             "seed": p.get(aggregate.SEED, ""), "test_accuracy": r.data.metrics.get("test_accuracy", np.nan),
             "eval_speedup": r.data.metrics.get("eval_speedup", np.nan)}
            for r in runs for p in [r.data.params]
            if p.get("prune.schedule", "oneshot") == "oneshot" and p.get("prune.scope", "layer") == "layer"
            and p.get(LAYER_K, "None") in ("None", "null", "")]
    return pd.DataFrame(rows, columns=["lr", "method", "k", "seed", "test_accuracy", "eval_speedup"])


# ---- the report -------------------------------------------------------------------------------------

def build_report(client: MlflowClient, runs: list[Run], out_dir: Path, title: str) -> list[Path]:
    """Write report.csv, report.md (table, then the study's findings), findings.json and the figures for
    ``runs`` into ``out_dir``; return their paths. With several training seeds per setting, report.csv has
    one row per setting (src/aggregate) and runs.csv one per run.

    report.csv holds the metrics exactly as logged (or their mean/std); report.md rounds them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = report_table(runs)
    train_runs = parent_runs(client, runs)
    context = training_context(train_runs)
    settings = [c for c in varying_settings(runs) if c != LAYER_K]
    written = []
    if aggregate.has_seeds(table):
        shown = aggregate.over_seeds(table, list(METRICS))
        table.to_csv(out_dir / "runs.csv", index=False)
        written.append(out_dir / "runs.csv")
        notes = f"{MD_NOTES}\n\n{SEED_NOTES}"
    else:
        shown, notes = table, MD_NOTES
    study = findings.study_findings(oneshot_table(runs), model_table(train_runs))
    csv_path, md_path, json_path = out_dir / "report.csv", out_dir / "report.md", out_dir / "findings.json"
    shown.to_csv(csv_path, index=False)
    md_path.write_text(markdown(shown, title, context, len(table), notes) + "\n" + findings.markdown(study))
    json_path.write_text(json.dumps([f.as_dict() for f in study], indent=1))
    curves = ["method", *(c for c in RETRAINING_SETTINGS if c in settings)]
    unpruned = unpruned_accuracy(client, runs)
    full_title = f"{title}; {context}" if context else title
    figures = [accuracy_vs_k(out_dir / "accuracy_vs_k.png", table, full_title, settings),
               accuracy_vs_sparsity(out_dir / "accuracy_vs_sparsity.png", table, full_title,
                                    [*curves, *(c for c in settings if c not in curves)], unpruned),
               frontier(out_dir / "frontier.png", table, full_title, "prune.schedule", unpruned),  # None: one schedule
               eval_time_vs_k(out_dir / "eval_time_vs_k.png", table, full_title),  # None when nothing was timed
               speedup_vs_k(out_dir / "speedup_vs_k.png", table, full_title),
               weight_distributions(out_dir / "weight_distributions.png", trained_models(client, train_runs),
                                    full_title)]
    return [csv_path, md_path, json_path, *written, *(f for f in figures if f is not None)]


CURVE_SECTION = "vs_k/"  # one section of the sweep run's MLflow charts
CURVE_METRICS = {"test_accuracy": ("accuracy_pct", 100.0), "eval_speedup": ("eval_speedup", 1.0),
                 "latency_speedup": ("latency_speedup", 1.0)}


def curve_step(params: dict[str, str], metrics: dict[str, float]) -> int:
    """A run's place on the k axis as an integer percent: round(k), or for per-layer k its overall sparsity."""
    if params.get(LAYER_K, "None") not in ("None", "null", "") and "sparsity" in metrics:
        return round(100 * metrics["sparsity"])
    return round(k_percent(params))


def curve_name(params: dict[str, str]) -> str:
    """``weight-lr0.001``, with the schedule and scope when they are not one-shot / per layer."""
    extra = [params.get(s, d) for s, d in (("prune.schedule", "oneshot"), ("prune.scope", "layer"))]
    return "-".join([params.get("prune.method", "?"), f"lr{float(params.get('lr', 'nan')):g}",
                     *(e for e, d in zip(extra, ("oneshot", "layer"), strict=True) if e != d)])


def curve_metrics(runs: list[Run]) -> list[tuple[str, float, int]]:
    """(name, value, step) for the sweep run: per curve (method, lr, schedule, scope) and metric, the mean over
    runs (training seeds) at each k, step = :func:`curve_step`; names ``vs_k/<metric>-<curve>`` so that MLflow
    draws each as a line over k, all in one chart section. Accuracy in percent."""
    points: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        p, m = run.data.params, run.data.metrics
        for metric, (label, scale) in CURVE_METRICS.items():
            if metric in m and np.isfinite(m[metric]):
                key = (f"{CURVE_SECTION}{label}-{curve_name(p)}", curve_step(p, m))
                points.setdefault(key, []).append(scale * m[metric])
    return [(name, float(np.mean(values)), step) for (name, step), values in sorted(points.items())]


def select_runs(client: MlflowClient, experiment_id: str, args: argparse.Namespace) -> tuple[list[Run], str, str]:
    """(runs, output folder name, figure title) for the CLI's selection options."""
    if args.run_ids:
        ids = [r.strip() for r in args.run_ids.split(",") if r.strip()]
        digest = hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:8]
        return runs_by_ids(client, experiment_id, ids), f"runs-{digest}", f"{len(ids)} selected runs"
    if args.filter:
        digest = hashlib.sha256(args.filter.encode()).hexdigest()[:8]
        return search_prune_runs(client, experiment_id, args.filter), f"filter-{digest}", args.filter
    sweep_id = args.sweep_id or latest_sweep_id(client, experiment_id)
    if sweep_id is None:
        return [], "", ""
    return runs_by_sweep(client, experiment_id, sweep_id), f"sweep-{sweep_id}", f"sweep {sweep_id}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = TrackingConfig()
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep-id", help="12-hex sweep id (tag sweep_id); default: the latest sweep")
    which.add_argument("--run-ids", help="comma-separated prune run ids")
    which.add_argument("--filter", help="MLflow filter string, e.g. \"params.lr = '0.001'\" (role=prune is added)")
    parser.add_argument("--tracking-uri", default=defaults.uri,
                        help=f"MLflow store; relative sqlite paths resolve against the cwd (default {defaults.uri})")
    parser.add_argument("--experiment", default=defaults.experiment, help="default %(default)s")
    parser.add_argument("--out", type=Path, help="output folder (default reports/<selection>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI; returns the exit code (0 report written, 1 nothing to report, 2 no such store/experiment)."""
    args = parse_args(argv)
    uri = resolve_uri(args.tracking_uri, Path.cwd())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite://"):]).exists():
        print(f"error: no MLflow store at {uri}: pass --tracking-uri (or run from the project folder)", file=sys.stderr)
        return 2
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"error: experiment {args.experiment!r} does not exist in {uri}", file=sys.stderr)
        return 2
    runs, name, title = select_runs(client, experiment.experiment_id, args)
    if not runs:
        print(f"error: no finished prune runs match the selection in {uri} (experiment {args.experiment}): check "
              "the sweep id (python -m src.report without options reports the latest sweep)", file=sys.stderr)
        return 1
    out_dir = args.out or Path("reports") / name
    paths = build_report(client, runs, out_dir, title)
    print(f"[report] {title}: {len(runs)} prune runs -> {out_dir}/ ({', '.join(p.name for p in paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
