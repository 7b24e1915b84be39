"""The end-of-sweep report: one real tiny multirun, checked through MLflow's own client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from src.cli.sweep import sweep_id_for
from tests.conftest import PROJECT, TINY, finished_sweep, run_cli, seed_store, store_overrides

pytestmark = pytest.mark.slow
SWEEP = ["-m", "lr=1e-3", "prune=weight,unit", "prune.k=0,50", *TINY]
PNGS = ("accuracy_vs_k.png", "accuracy_vs_sparsity.png", "eval_time_vs_k.png", "speedup_vs_k.png",
        "size_frontier.png", "weight_distributions.png")
NUMBERS = ("lr", "k", "test_accuracy", "test_loss", "sparsity", "dense_eval_ms", "sparse_eval_ms", "eval_speedup")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_client_for, model_store):
    tmp = tmp_path_factory.mktemp("report")
    seed_store(model_store, tmp, "tiny")
    done, client, experiment_id = finished_sweep(SWEEP, tmp, mlflow_client_for)
    return tmp, done, client, experiment_id


def _runs(client, experiment_id, role, sweep_id=None):
    query = f"tags.role = '{role}'" + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    return client.search_runs([experiment_id], query, max_results=1000)


def _sweep_run(sweep):
    """The one sweep run of the module's sweep (other tests may add sweeps to the same store)."""
    tmp, _, client, experiment_id = sweep
    [run] = _runs(client, experiment_id, "sweep", sweep_id_for(str(tmp / "multirun")))
    return run


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip")


def test_one_finished_sweep_run_tagging_its_prune_runs(sweep):
    tmp, done, client, experiment_id = sweep
    run, sweep_id = _sweep_run(sweep), sweep_id_for(str(tmp / "multirun"))
    assert run.info.status == "FINISHED"
    assert "prune.k=0,50" in run.data.params["overrides"] and "sweeper.max_batch_size" in run.data.params
    assert {k: v for k, v in run.data.metrics.items() if not k.startswith(("vs_k/", "jobs/"))} == {
        "jobs_total": 4.0, "jobs_started": 4.0, "jobs_finished": 4.0, "jobs_skipped": 0.0, "jobs_failed": 0.0,
        "jobs_reported": 4.0}
    for event in ("jobs/started", "jobs/seconds"):  # one point per job, step = its Hydra job number
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, event)) == [0, 1, 2, 3], event
    prune = _runs(client, experiment_id, "prune", sweep_id)
    assert len(prune) == 4
    for method in ("weight", "unit"):  # MLflow's own line charts: one metric per curve, step = k
        mine = {int(float(r.data.params["prune.k"])): r.data.metrics
                for r in prune if r.data.params["prune.method"] == method}
        for name, scale in (("accuracy_pct", 100), ("eval_speedup", 1), ("latency_speedup", 1)):
            history = client.get_metric_history(run.info.run_id, f"vs_k/{name}-{method}-lr0.001")
            metric = {"accuracy_pct": "test_accuracy"}.get(name, name)
            assert sorted((m.step, m.value) for m in history) == [
                (k, pytest.approx(scale * mine[k][metric])) for k in (0, 50)], name
    assert f"[report] sweep {sweep_id}: 4 prune runs" in done.stdout


def test_csv_has_one_row_per_job_equal_to_the_logged_metrics(sweep):
    tmp, _, client, experiment_id = sweep
    run = _sweep_run(sweep)
    table = _csv(Path(client.download_artifacts(run.info.run_id, "report/report.csv", str(tmp / "dl"))))
    prune = {r.info.run_id: r for r in _runs(client, experiment_id, "prune", run.data.tags["sweep_id"])}
    assert sorted(table["run_id"]) == sorted(prune) and len(table) == 4
    order = [("unit", 0), ("unit", 50), ("weight", 0), ("weight", 50)]
    assert list(zip(table["method"], table["k"], strict=True)) == order
    for row in table.itertuples(index=False):
        logged = prune[row.run_id].data
        assert (row.lr, row.method, row.k) == (float(logged.params["lr"]), logged.params["prune.method"],
                                               float(logged.params["prune.k"]))
        assert row.engine == logged.params["eval.engine_used"]
        for metric in NUMBERS[2:]:
            assert getattr(row, metric) == logged.metrics[metric], metric
    md = (tmp / "multirun" / "report" / "report.md").read_text()
    assert sum(line.startswith("| 0.001 |") for line in md.splitlines()) == 4
    assert list(table.columns) == ["lr", "method", "k", *NUMBERS[2:], "oneshot_test_accuracy", "engine", "run_id"]
    assert not (tmp / "multirun" / "report" / "runs.csv").exists()  # one seed: the per-run table is the report
    assert "## Findings" in md and "trained 1 epoch on 900 examples, lr 0.001, 1 seed\n" in md


def test_figures_are_in_the_sweep_folder_and_the_sweep_run(sweep):
    tmp, _, client, _ = sweep
    logged = {a.path: a.file_size for a in client.list_artifacts(_sweep_run(sweep).info.run_id, "report")}
    for name in PNGS:
        assert (tmp / "multirun" / "report" / name).stat().st_size > 10_000, name
        assert logged[f"report/{name}"] > 10_000, name
    assert {"report/report.csv", "report/report.md"} <= set(logged)


def test_cli_rebuilds_the_same_table(sweep):
    tmp = sweep[0]
    out = tmp / "rebuilt"
    done = subprocess.run([sys.executable, "-m", "src.report", "--sweep-id", _sweep_run(sweep).data.tags["sweep_id"],
                           "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--out", str(out)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(_csv(out / "report.csv"), _csv(tmp / "multirun" / "report" / "report.csv"))
    assert all((out / name).stat().st_size > 10_000 for name in PNGS)


def test_single_run_logs_no_sweep_run(sweep):
    tmp, _, client, experiment_id = sweep
    before = len(_runs(client, experiment_id, "sweep"))
    done = run_cli(["lr=1e-3", "prune=weight", "prune.k=50", *TINY], tmp)  # finished already: skipped
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[skip] " in done.stdout and "[report]" not in done.stdout + done.stderr
    assert len(_runs(client, experiment_id, "sweep")) == before


def test_failed_job_keeps_the_sweep_failing_and_reports_the_rest(sweep):
    """Job 0 is new (k=25, the trained model is reused), job 1 is rejected when it starts (its data file is missing:
    a value only the job itself checks, unlike an out-of-range k, which stops the sweep before job 0) and exits the
    multirun."""
    tmp, _, client, experiment_id = sweep
    sweep_dir = tmp / "failing"
    data = f"data.path={PROJECT / 'data' / 'mnist.npz'},{tmp}/missing.npz"
    args = ["-m", "lr=1e-3", "prune=weight", "prune.k=25", data, *TINY, *store_overrides(tmp),
            f"hydra.sweep.dir={sweep_dir}"]  # the last value of a key wins
    done = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"})
    assert done.returncode != 0 and "missing.npz does not exist" in done.stderr, done.stderr[-2000:]
    [run] = _runs(client, experiment_id, "sweep", sweep_id_for(str(sweep_dir)))
    assert run.info.status == "FAILED" and "1 of 2 started jobs" in run.data.tags["failure"]
    assert (run.data.metrics["jobs_finished"], run.data.metrics["jobs_failed"]) == (1, 1)
    last = done.stdout.strip().splitlines()[-1]  # the sweep's last line, printed as the failing process exits
    assert re.fullmatch(r"\[sweep\] [0-9a-f]{12}: 2 jobs in [^:]+: 1 ran, 0 skipped, 1 failed", last), last
    assert list(_csv(sweep_dir / "report" / "report.csv")["k"]) == [25]


def test_an_earlier_sweeps_report_rebuilds_after_a_later_sweep_skipped_its_jobs(sweep):
    """A re-run sweep makes the runs its own too (tag sweep_id = the latest); the first sweep keeps them."""
    tmp = sweep[0]
    first = sweep_id_for(str(tmp / "multirun"))
    args = [*SWEEP, *store_overrides(tmp), f"hydra.sweep.dir={tmp}/again"]
    done = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"})
    assert done.returncode == 0 and done.stdout.count("[skip] ") == 4, done.stderr[-2000:]
    for sweep_id in (first, sweep_id_for(str(tmp / "again"))):
        out = tmp / f"rebuilt-{sweep_id}"
        rebuilt = subprocess.run([sys.executable, "-m", "src.report", "--sweep-id", sweep_id, "--tracking-uri",
                                  f"sqlite:///{tmp}/mlflow.db", "--out", str(out)], cwd=PROJECT, capture_output=True,
                                 text=True, timeout=300)
        assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
        assert len(_csv(out / "report.csv")) == 4
