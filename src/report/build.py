"""A sweep report written to a folder: tables, findings and figures for a set of prune runs, from MLflow alone.
src/report/sweep_callback.py calls :func:`build_report` at the end of every multirun; ``python -m src.report`` on
any selection of runs."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from src.report import aggregate, findings
from src.report.figures import (
    accuracy_vs_k,
    accuracy_vs_sparsity,
    compact_speedup_vs_k,
    eval_time_vs_k,
    frontier,
    size_frontier,
    speedup_vs_k,
    weight_distributions,
)
from src.report.runs import parent_runs, trained_models, unpruned_accuracy
from src.report.sizes import dense_points, size_points
from src.report.table import (
    LAYER_K,
    MD_NOTES,
    RETRAINING_SETTINGS,
    SEED_NOTES,
    SIZE_METRICS,
    SIZE_NOTES,
    markdown,
    model_table,
    oneshot_table,
    report_table,
    table_metrics,
    training_context,
    varying_settings,
)


def build_report(client: MlflowClient, runs: list[Run], out_dir: Path, title: str) -> list[Path]:
    """Write report.csv, report.md (table, then the study's findings), findings.json and the figures for
    ``runs`` into ``out_dir``; return their paths. With several training seeds per setting, report.csv has
    one row per setting (src/report/aggregate) and runs.csv one per run.

    report.csv holds the metrics exactly as logged (or their mean/std); report.md rounds them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = report_table(runs)
    train_runs = parent_runs(client, runs)
    context = training_context(train_runs)
    settings = [c for c in varying_settings(runs) if c != LAYER_K]
    written = []
    if aggregate.has_seeds(table):
        shown = aggregate.over_seeds(table, table_metrics(runs))
        table.to_csv(out_dir / "runs.csv", index=False)
        written.append(out_dir / "runs.csv")
        notes = f"{MD_NOTES}\n\n{SEED_NOTES}"
    else:
        shown, notes = table, MD_NOTES
    if any(m in table.columns for m in SIZE_METRICS):
        notes = f"{notes}\n\n{SIZE_NOTES}"
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
               compact_speedup_vs_k(out_dir / "compact_speedup_vs_k.png", table, full_title),  # structural runs
               size_frontier(out_dir / "size_frontier.png", size_points(runs), dense_points(runs, train_runs),
                             full_title),  # None when no run logged a file size
               weight_distributions(out_dir / "weight_distributions.png", trained_models(client, train_runs),
                                    full_title)]  # None when no train run is of a chain model
    return [csv_path, md_path, json_path, *written, *(f for f in figures if f is not None)]
