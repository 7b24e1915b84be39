"""A two-seed sweep's report: mean/std/n per setting, per-run rows kept, findings in report.md and the sweep run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from src.cli.sweep import sweep_id_for
from src.report.findings import FAILS, HOLDS, PARTLY
from tests.conftest import TINY, finished_sweep, seed_store

pytestmark = pytest.mark.slow
SWEEP = ["-m", "lr=1e-3", "train.seed=0,1", "prune=weight,unit", "prune.k=0,50", *TINY]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_client_for, model_store):
    tmp = tmp_path_factory.mktemp("seeds")
    seed_store(model_store, tmp, "tiny", "tiny_s1")
    done, client, experiment_id = finished_sweep(SWEEP, tmp, mlflow_client_for)
    return tmp, done, client, experiment_id


def test_report_csv_has_one_row_per_setting_with_mean_std_and_n(sweep):
    tmp, done, client, experiment_id = sweep
    assert "[train]" not in done.stdout.replace("[train] reusing", "")  # both seeds' models came from the store
    report = tmp / "multirun" / "report"
    table = pd.read_csv(report / "report.csv", float_precision="round_trip")
    runs = pd.read_csv(report / "runs.csv", float_precision="round_trip")
    assert len(runs) == 8 and sorted(runs["train.seed"].unique()) == [0, 1]
    order = [("unit", 0), ("unit", 50), ("weight", 0), ("weight", 50)]
    assert list(zip(table["method"], table["k"], strict=True)) == order
    assert {"test_accuracy_mean", "test_accuracy_std", "eval_speedup_mean", "n_seeds"} <= set(table.columns)
    assert "train.seed" not in table.columns and "test_accuracy" not in table.columns
    assert (table["n_seeds"] == 2).all()
    for row in table.itertuples(index=False):
        pair = runs[(runs["method"] == row.method) & (runs["k"] == row.k)]["test_accuracy"]
        assert row.test_accuracy_mean == pytest.approx(pair.mean())
        assert row.test_accuracy_std == pytest.approx(pair.std(ddof=1))
    md = (report / "report.md").read_text()
    assert "8 prune runs in 4 rows." in md and "trained 1 epoch on 900 examples, lr 0.001, 2 seeds" in md


def test_findings_are_in_report_md_json_and_the_sweep_run(sweep):
    tmp, _, client, experiment_id = sweep
    report = tmp / "multirun" / "report"
    found = {f["key"]: f for f in json.loads((report / "findings.json").read_text())}
    assert sorted(found) == list("abcdefg")
    assert found["c"]["verdict"] == "not measured: needs two learning rates (this sweep has one)"
    assert found["a"]["verdict"] in (HOLDS, PARTLY, FAILS) and "(n=2)" in found["a"]["measured"]
    assert found["f"]["verdict"] == "not measured: needs 3 or more k values of a method"  # k=0,50: no rank to judge
    assert "weight: k=0" in found["f"]["measured"] and "(rho needs 3+ k values)" in found["f"]["measured"]
    md = (report / "report.md").read_text()
    assert "## Findings" in md
    assert f"**c. Where accuracy starts to drop, by learning rate: {found['c']['verdict']}**" in md
    sweep_id = sweep_id_for(str(tmp / "multirun"))
    [run] = client.search_runs([experiment_id], f"tags.role = 'sweep' and tags.sweep_id = '{sweep_id}'")
    assert run.data.tags["mlflow.note.content"].startswith("## Findings")
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report.csv", "runs.csv", "findings.json", "accuracy_vs_k.png"} <= logged


def test_the_sweep_runs_curves_end_at_the_mean_over_seeds(sweep):
    """Each job appended its own point as it finished; the sweep's end appended the mean over seeds at each k."""
    tmp, _, client, experiment_id = sweep
    [run] = client.search_runs([experiment_id], f"tags.role = 'sweep' and tags.sweep_id = "
                                                f"'{sweep_id_for(str(tmp / 'multirun'))}'")
    runs = pd.read_csv(tmp / "multirun" / "report" / "runs.csv", float_precision="round_trip")
    for method in ("weight", "unit"):
        history = client.get_metric_history(run.info.run_id, f"vs_k/accuracy_pct-{method}-lr0.001")
        for k in (0, 50):
            at_k = [m.value for m in sorted(history, key=lambda m: m.timestamp) if m.step == k]
            seeds = runs[(runs["method"] == method) & (runs["k"] == k)]["test_accuracy"]
            assert sorted(at_k[:2]) == pytest.approx(sorted(100 * seeds))  # the two jobs' own points, live
            assert at_k[-1] == pytest.approx(100 * seeds.mean())  # the last one is the mean
