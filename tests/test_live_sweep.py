"""A sweep watched from outside while it runs: through a read-only MlflowClient on its store, the sweep run is
RUNNING with its jobs counted and vs_k points before the last job ends, with the basic and the joblib launcher; the
terminal shows (n/N, ETA ...) on every job's line and the sweep's counts and wall time last."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from src.training.data import SHIPPED_MNIST
from tests.conftest import PROJECT, TINY, run_cli, seed_store, store_overrides

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
SWEEP8 = ["-m", "prune=weight,unit", "prune.k=0,30,60,90", *TINY, "model.hidden=[64,32]"]
PROGRESS = re.compile(r" \((\d+)/8, ETA (\d+ s|\d+ min \d\d s)\)$")
LAST = re.compile(r"^\[sweep\] [0-9a-f]{12}: 8 jobs in (\d+ s|\d+ min \d\d s): (\d+) ran, (\d+) skipped, (\d+) failed$")


def read_only(db: Path) -> MlflowClient:
    """A client that cannot write to the store (SQLite opened read-only)."""
    return MlflowClient(f"sqlite:///file:{db}?mode=ro&uri=true")


def sweep_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("prunesweep")
    return client.search_runs([experiment.experiment_id], "tags.role = 'sweep'") if experiment else []


def watch(args: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, list[tuple[str, dict, int]]]:
    """Run the sweep in a subprocess and poll its store read-only until it ends; return (the finished process, every
    state of its sweep run seen while it ran: (status, metrics, number of vs_k points))."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "src.run", *args, *store_overrides(tmp)], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    client, seen = read_only(tmp / "mlflow.db"), []
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            for run in sweep_runs(client):
                points = sum(len(client.get_metric_history(run.info.run_id, name))
                             for name in run.data.metrics if name.startswith("vs_k/"))
                seen.append((run.info.status, dict(run.data.metrics), points))
            time.sleep(0.1)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seen


def check_watched(done: subprocess.CompletedProcess, seen: list, tmp: Path) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    midway = [(metrics, points) for status, metrics, points in seen
              if status == "RUNNING" and 1 <= metrics.get("jobs_finished", 0) < 8]
    assert midway, f"the sweep run was never seen RUNNING with some but not all jobs counted: {seen[-3:]}"
    assert all(m["jobs_total"] == 8 and m["jobs_started"] >= m["jobs_finished"] for m, _ in midway)
    assert any(points >= 1 for _, points in midway)  # vs_k charts filling in before the last job ended
    counts = [m["jobs_finished"] for status, m, _ in seen if "jobs_finished" in m]
    assert counts == sorted(counts)  # never backwards, even with two writers
    [run] = sweep_runs(read_only(tmp / "mlflow.db"))
    assert run.info.status == "FINISHED"
    assert {run.data.metrics[k] for k in ("jobs_total", "jobs_started", "jobs_finished")} == {8}
    assert run.data.metrics["jobs_failed"] == 0


def check_lines(stdout: str, ran: int, skipped: int, parallel: bool = False) -> None:
    jobs = [line for line in stdout.splitlines() if line.startswith(("[prune] ", "[skip] "))]
    assert len(jobs) == 8 and all(PROGRESS.search(line) for line in jobs), jobs
    counts = sorted(int(PROGRESS.search(line).group(1)) for line in jobs)
    # two workers that finish at once may both count the other's run: n can repeat, never skip past N
    assert counts == list(range(1, 9)) if not parallel else (counts[-1] == 8 and all(1 <= n <= 8 for n in counts))
    last = LAST.match(stdout.strip().splitlines()[-1])
    assert last and (int(last.group(2)), int(last.group(3)), int(last.group(4))) == (ran, skipped, 0), stdout[-500:]


def test_a_sweep_is_watched_live_and_its_rerun_counts_skips_as_done(tmp_path, model_store):
    seed_store(model_store, tmp_path, "small")
    done, seen = watch(SWEEP8, tmp_path)
    check_watched(done, seen, tmp_path)
    check_lines(done.stdout, ran=8, skipped=0)
    again = run_cli(SWEEP8, tmp_path)  # same folder, a new multirun: its own sweep run
    assert again.returncode == 0, again.stderr[-3000:]
    check_lines(again.stdout, ran=0, skipped=8)
    runs = sweep_runs(read_only(tmp_path / "mlflow.db"))
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert sorted(r.data.metrics["jobs_skipped"] for r in runs) == [0, 8]


def test_a_joblib_sweep_is_watched_live_with_jobs_in_two_processes(tmp_path, model_store):
    seed_store(model_store, tmp_path, "small")
    done, seen = watch([*SWEEP8, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    check_watched(done, seen, tmp_path)
    check_lines(done.stdout, ran=8, skipped=0, parallel=True)
    client = read_only(tmp_path / "mlflow.db")
    [run] = sweep_runs(client)
    for event in ("jobs/started", "jobs/seconds"):  # every job, from either worker, wrote to the one sweep run
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, event)) == list(range(8)), event
    experiment_id = client.get_experiment_by_name("prunesweep").experiment_id
    prune = client.search_runs([experiment_id], "tags.role = 'prune'")
    assert len({r.data.tags["pid"] for r in prune}) == 2  # really two worker processes
    every = client.search_runs([experiment_id], "tags.role = 'sweep'", run_view_type=ViewType.ALL)
    assert [r.info.run_id for r in every] == [run.info.run_id]  # one created, none created and deleted


def test_a_job_that_fails_is_logged_on_the_sweep_run_as_a_jobs_failed_event(tmp_path, model_store):
    """Job 1 of a multirun reads a corrupt data file and ends the multirun with its one-line error (exit 2): the sweep
    run holds one ``jobs/failed`` point at step 1 (its Hydra job number), beside job 0's ``jobs/seconds``."""
    seed_store(model_store, tmp_path, "tiny")
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    shutil.copy(SHIPPED_MNIST, good)  # the same bytes: the cached model is reused (data fingerprint = file SHA-256)
    bad.write_bytes(b"not an npz file")
    done = run_cli(["-m", "prune=weight", "prune.k=50", f"data.path={good},{bad}", *TINY, "eval.timing=off"], tmp_path)
    assert done.returncode == 2 and f"error: data.path={bad} is not a readable" in done.stderr, done.stderr[-3000:]
    client = read_only(tmp_path / "mlflow.db")
    [run] = sweep_runs(client)
    failed = client.get_metric_history(run.info.run_id, "jobs/failed")
    assert [m.step for m in failed] == [1] and failed[0].value >= 0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "jobs/seconds")] == [0]
    assert (run.info.status, run.data.metrics["jobs_failed"], run.data.metrics["jobs_finished"]) == ("FAILED", 1, 1)
