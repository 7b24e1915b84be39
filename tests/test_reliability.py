"""Sweeps that survive: a SIGKILLed sweep resumes, parallel jobs share one SQLite store, a remote server works.

All run the real CLI on tiny settings; the store is checked through MLflow's client (or, while a sweep
is running, read-only through sqlite3, which cannot race MLflow's table creation)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT, TINY, run_cli, seed_store, store_overrides

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
SMALL = [*TINY, "model.hidden=[64,32]"]  # a small MLP: these tests are about jobs and runs, not the model
SWEEP8 = ["-m", "prune=weight,unit", "prune.k=0,30,60,90", *SMALL]


def all_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("prunesweep")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def role(runs: list, name: str) -> list:
    return [r for r in runs if r.data.tags.get("role") == name]


def prune_runs_by_status(db: Path) -> dict[str, str]:
    """{run id: status} of the active prune runs, read directly (read-only) while the sweep writes."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                               "WHERE t.key = 'role' AND t.value = 'prune' AND r.lifecycle_stage = 'active'").fetchall()
    except sqlite3.Error:  # tables not created yet, or locked for a moment
        return {}
    return dict(rows)


def cli_process(args: list[str], tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, "-m", "src.run", *args, *store_overrides(tmp)], cwd=PROJECT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def kill_during_a_job(proc: subprocess.Popen, db: Path, timeout: float = 240) -> str:
    """SIGKILL the sweep ``proc`` while one of its prune runs is RUNNING, after at least one has FINISHED; return
    that run's id. Deterministic: when a RUNNING run is seen the process is frozen (SIGSTOP) and the store read
    again; the kill lands only if the run is still RUNNING in the frozen process's store, else it resumes."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        status = prune_runs_by_status(db)
        running = [run_id for run_id, s in status.items() if s == "RUNNING"]
        if "FINISHED" in status.values() and running:
            proc.send_signal(signal.SIGSTOP)
            frozen = prune_runs_by_status(db)  # {} if the store was locked at the stop: resume and look again
            if frozen.get(running[0]) == "RUNNING":
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return running[0]
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"no prune run was seen RUNNING after another FINISHED (sweep exit code {proc.poll()})")


def test_sigkilled_sweep_resumes_to_exactly_one_finished_run_per_job(tmp_path, mlflow_client_for, model_store):
    """A sweep SIGKILLed in the middle of a job leaves that job's prune run RUNNING; the same command again marks it
    FAILED ("process died"), skips the jobs that finished and runs the rest: one FINISHED run per job."""
    seed_store(model_store, tmp_path, "small")
    db = tmp_path / "mlflow.db"
    proc = cli_process(SWEEP8, tmp_path)
    try:
        killed_running = kill_during_a_job(proc, db)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    status = prune_runs_by_status(db)
    assert status[killed_running] == "RUNNING"  # the kill left it open
    n_finished_before = list(status.values()).count("FINISHED")
    print(f"killed after {n_finished_before} finished jobs; open prune run at the kill: {killed_running}")
    assert 1 <= n_finished_before < 8

    again = run_cli(SWEEP8, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("[skip] ") == n_finished_before
    runs = all_runs(mlflow_client_for(tmp_path))
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    finished = [r for r in role(runs, "prune") if r.info.status == "FINISHED"]
    assert len(finished) == 8 and len({r.data.tags["job_hash"] for r in finished}) == 8
    assert {(r.data.params["prune.method"], float(r.data.params["prune.k"])) for r in finished} == {
        (m, k) for m in ("weight", "unit") for k in (0, 30, 60, 90)}
    train = role(runs, "train")
    assert [r.info.status for r in train] == ["FINISHED"]
    assert {r.data.tags["mlflow.parentRunId"] for r in finished} == {train[0].info.run_id}
    killed = next(r for r in runs if r.info.run_id == killed_running)  # closed by the rerun of its job
    assert killed.info.status == "FAILED" and "process died" in killed.data.tags["failure"]


def test_killed_training_claim_is_marked_failed_and_retrained(tmp_path, mlflow_client_for):
    """A train run left RUNNING by a process that died is not waited for: it is failed, and training re-runs."""
    db = tmp_path / "mlflow.db"
    proc = cli_process(["prune=weight", "prune.k=50", *TINY], tmp_path)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                        claims = con.execute(
                            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE "
                            "t.key = 'role' AND t.value = 'train' AND r.status = 'RUNNING'").fetchall()
                except sqlite3.Error:
                    claims = []
                if claims:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before its training could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)

    again = run_cli(["prune=weight", "prune.k=50", *TINY, "tracking.stale_after_s=3600"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = all_runs(mlflow_client_for(tmp_path))
    assert [r.info.status for r in role(runs, "prune")] == ["FINISHED"]
    statuses = sorted(r.info.status for r in role(runs, "train"))
    assert statuses == ["FAILED", "FINISHED"], statuses
    failed = next(r for r in role(runs, "train") if r.info.status == "FAILED")
    assert "process died" in failed.data.tags["failure"]


def test_parallel_jobs_share_one_sqlite_store_and_train_once(tmp_path, mlflow_client_for):
    result = run_cli([*SWEEP8, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stderr
    runs = all_runs(mlflow_client_for(tmp_path))
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    prune = role(runs, "prune")
    assert len(prune) == 8 and all(r.info.status == "FINISHED" for r in prune)
    assert len({r.data.tags["job_hash"] for r in prune}) == 8
    train = role(runs, "train")
    assert [r.info.status for r in train] == ["FINISHED"]
    assert {r.data.tags["mlflow.parentRunId"] for r in prune} == {train[0].info.run_id}
    assert len({r.data.tags["pid"] for r in prune}) == 2  # really two worker processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on a loopback port, serving artifacts itself; always stopped."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "mlflow server did not come up"
            time.sleep(0.5)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group (gunicorn/uvicorn workers)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=20)
        log.close()


def test_sweep_against_a_remote_tracking_server(tmp_path, mlflow_server):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "src.run", "-m", "prune=weight", "prune.k=0,50", *SMALL, *store_overrides(tmp_path),
         f"tracking.uri={mlflow_server}"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local default store
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = all_runs(client)
    prune, train = role(runs, "prune"), role(runs, "train")
    assert len(prune) == 2 and all(r.info.status == "FINISHED" for r in prune)
    assert sorted(float(r.data.params["prune.k"]) for r in prune) == [0, 50]
    assert [r.info.status for r in train] == ["FINISHED"]
    assert [a.path for a in client.list_artifacts(train[0].info.run_id, "model")] == [
        "model/initial.keras", "model/model.keras"]
    assert train[0].info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server
    assert (tmp_path / "server-artifacts").is_dir()
