"""Sweep reports: the study's table and figures for a set of prune runs, built from MLflow alone.

    python -m src.report [--sweep-id ID | --run-ids a,b,c | --filter "MLflow filter"]
                         [--tracking-uri URI] [--experiment NAME] [--out DIR]

Without a selection it reports the latest sweep in the store. Writes into the output folder:
report.csv / report.md (one row per prune run), accuracy_vs_k.png, accuracy_vs_sparsity.png (one curve per
method, schedule and scope, against the actual sparsity), frontier.png (when schedules differ), eval_time_vs_k.png and
weight_distributions.png (the parent train runs' model artifacts). src/callbacks.py calls
:func:`build_report` at the end of every multirun.
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

from src.config import TrackingConfig  # noqa: E402
from src.keras_file import read_dense_weights  # noqa: E402
from src.pruning import unused_settings  # noqa: E402
from src.report_plots import (  # noqa: E402
    accuracy_vs_k,
    accuracy_vs_sparsity,
    eval_time_vs_k,
    frontier,
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


def runs_by_sweep(client: MlflowClient, experiment_id: str, sweep_id: str) -> list[Run]:
    """The prune runs tagged ``sweep_id`` (a job skipped by a later sweep carries that sweep's id)."""
    return search_prune_runs(client, experiment_id, f"tags.sweep_id = '{sweep_id}'")


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
    text = MD_FORMATS[column].format(value) if column in MD_FORMATS else str(value)
    return text.replace("|", "\\|")


def markdown(table: pd.DataFrame, title: str) -> str:
    """A GitHub-flavoured Markdown table of ``table`` (numbers rounded for reading), with a units note."""
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    lines = [f"# {title}", "", f"{len(table)} prune runs.", "",
             "| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(table.columns, row, strict=True)) + " |"
              for row in table.itertuples(index=False, name=None)]
    return "\n".join([*lines, "", MD_NOTES, ""])


# ---- trained models ---------------------------------------------------------------------------------

def load_kernels(client: MlflowClient, train_run_id: str) -> list[np.ndarray]:
    """Dense-layer kernels (fan_in, fan_out) of the train run's model artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_dense_weights(client.download_artifacts(train_run_id, MODEL_ARTIFACT, tmp))[0]


def trained_models(client: MlflowClient, runs: list[Run]) -> dict[str, list[np.ndarray]]:
    """label -> kernels for each distinct parent train run of ``runs``, ordered by lr.

    Labels are ``lr=...`` plus any training param that differs between those train runs. A train
    run whose model cannot be fetched is left out with a message (it only removes curves)."""
    parents = sorted({r.data.tags["mlflow.parentRunId"] for r in runs if r.data.tags.get("mlflow.parentRunId")})
    train_runs, kernels = [], {}
    for run_id in parents:
        try:
            train_runs.append(client.get_run(run_id))
            kernels[run_id] = load_kernels(client, run_id)
        except Exception as e:  # noqa: BLE001 - any failure to fetch means "no curve"
            print(f"[report] left out the weights of train run {run_id}: {type(e).__name__}: {e}", file=sys.stderr)
    train_runs = sorted((r for r in train_runs if r.info.run_id in kernels),
                        key=lambda r: float(r.data.params.get("lr", "nan")))
    extra = [k for k in varying_settings(train_runs) if k != "data.fingerprint"]
    return {", ".join(f"{k}={r.data.params.get(k)}" for k in ["lr", *extra]): kernels[r.info.run_id]
            for r in train_runs}


def unpruned_accuracy(client: MlflowClient, runs: list[Run]) -> float | None:
    """Test accuracy of the trained model behind ``runs`` (its train run's), when they share one model."""
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    if len(parents) != 1 or None in parents:
        return None
    try:
        return client.get_run(parents.pop()).data.metrics.get("test_accuracy")
    except Exception:  # noqa: BLE001 - no reference line is all that is lost
        return None


# ---- the report -------------------------------------------------------------------------------------

def build_report(client: MlflowClient, runs: list[Run], out_dir: Path, title: str) -> list[Path]:
    """Write report.csv, report.md and the figures for ``runs`` into ``out_dir``; return their paths.

    report.csv holds the metrics exactly as logged; report.md rounds them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = report_table(runs)
    csv_path, md_path = out_dir / "report.csv", out_dir / "report.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(markdown(table, title))
    settings = [c for c in varying_settings(runs) if c != LAYER_K]
    curves = ["method", *(c for c in RETRAINING_SETTINGS if c in settings)]
    unpruned = unpruned_accuracy(client, runs)
    figures = [accuracy_vs_k(out_dir / "accuracy_vs_k.png", table, title, settings),
               accuracy_vs_sparsity(out_dir / "accuracy_vs_sparsity.png", table, title,
                                    [*curves, *(c for c in settings if c not in curves)], unpruned),
               frontier(out_dir / "frontier.png", table, title, "prune.schedule", unpruned),  # None: one schedule
               eval_time_vs_k(out_dir / "eval_time_vs_k.png", table, title),  # None when nothing was timed
               weight_distributions(out_dir / "weight_distributions.png", trained_models(client, runs), title)]
    return [csv_path, md_path, *(f for f in figures if f is not None)]


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
        print(f"no prune runs match the selection in {uri} (experiment {args.experiment})", file=sys.stderr)
        return 1
    out_dir = args.out or Path("reports") / name
    paths = build_report(client, runs, out_dir, title)
    print(f"[report] {title}: {len(runs)} prune runs -> {out_dir}/ ({', '.join(p.name for p in paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
