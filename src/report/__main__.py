"""Sweep reports: the study's table and figures for a set of prune runs, built from MLflow alone.

    python -m src.report [--sweep-id ID | --run-ids a,b,c | --filter "MLflow filter"]
                         [--tracking-uri URI] [--experiment NAME] [--out DIR]

Without a selection it reports the latest sweep in the store. Writes into the output folder:
report.csv / report.md (one row per prune run, or per setting with mean/std over training seeds plus
runs.csv; report.md ends with the study's findings, also in findings.json), accuracy_vs_k.png,
accuracy_vs_sparsity.png (one curve per method, schedule and scope, against the actual sparsity), frontier.png
(when schedules differ), eval_time_vs_k.png, speedup_vs_k.png, size_frontier.png (test error against file bytes,
one curve per method and quantization, with the dense model: when the runs logged file sizes) and
weight_distributions.png (the parent train runs' model artifacts). src/report/sweep_callback.py builds the same
report at the end of every multirun.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from src.cli.config import TrackingConfig  # noqa: E402
from src.cli.errors import OneLineParser  # noqa: E402
from src.report.build import build_report  # noqa: E402
from src.report.runs import select_runs  # noqa: E402
from src.store.tracking import resolve_uri  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = TrackingConfig()
    parser = OneLineParser(prog="python -m src.report", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep-id", help="12-hex sweep id (tag sweep_id); default: the latest sweep")
    which.add_argument("--run-ids", help="comma-separated prune run ids")
    which.add_argument("--filter", help="MLflow filter string, e.g. \"params.lr = '0.001'\" (role=prune is added)")
    parser.add_argument("--tracking-uri", default=defaults.uri,
                        help=f"MLflow store; relative sqlite paths resolve against the cwd (default {defaults.uri})")
    parser.add_argument("--experiment", default=defaults.experiment, help="default %(default)s")
    parser.add_argument("--out", type=Path, help="output folder (default reports/<selection>)")
    args = parser.parse_args(argv)
    if args.sweep_id is not None and not re.fullmatch(r"[0-9a-f]{12}", args.sweep_id):
        parser.error(f"--sweep-id {args.sweep_id!r} is not a sweep id: give the 12 hex digits a sweep prints "
                     "([sweep] <id>: ...), or leave it out for the latest sweep")
    bad = [r for r in (args.run_ids or "").split(",") if r.strip() and not re.fullmatch(r"[0-9a-f]{32}", r.strip())]
    if bad:
        parser.error(f"--run-ids: {bad[0].strip()!r} is not a run id: give MLflow's 32-hex run ids, comma-separated "
                     "(each [prune] line prints its run's)")
    return args


def nothing_found(args: argparse.Namespace, uri: str) -> str:
    """The error line for a selection that matched no finished prune run, naming what to check."""
    where = f"in {uri} (experiment {args.experiment})"
    if args.run_ids:
        return f"none of --run-ids is a finished prune run {where}: check the ids"
    if args.filter:
        return f"no finished prune run matches --filter {args.filter!r} {where}"
    if args.sweep_id:
        return (f"no finished prune runs of sweep {args.sweep_id} {where}: check the sweep id (python -m src.report "
                "without options reports the latest sweep)")
    return f"no sweep has finished prune runs {where}: run one first (python -m src.run -m experiment=smoke)"


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
    try:
        runs, name, title = select_runs(client, experiment.experiment_id, args)
    except MlflowException as e:  # a filter MLflow cannot parse
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: --filter {args.filter!r}: MLflow cannot read it ({first}): see "
              "https://mlflow.org/docs/latest/search-runs.html, e.g. --filter \"params.lr = '0.001'\"", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: {nothing_found(args, uri)}", file=sys.stderr)
        return 1
    out_dir = args.out or Path("reports") / name
    paths = build_report(client, runs, out_dir, title)
    print(f"[report] {title}: {len(runs)} prune runs -> {out_dir}/ ({', '.join(p.name for p in paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
