"""Scaling out on real engines: the same tiny sweep through Ray (a local cluster started here) and Submitit's
local executor, and a soak of 50 jobs on 2 parallel workers. Checked through MLflow's client.

The launcher plugins are optional extras (``pip install -e ".[all]"``); outside CI a missing plugin skips its
test, in CI (``CI=true``, where .ci/run installs them) it fails."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import TINY, run_cli, seed_store

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
SMALL = [*TINY, "model.hidden=[64,32]"]
SWEEP4 = ["-m", "prune=weight,unit", "prune.k=0,50", *SMALL]


def require(module: str) -> None:
    """Import ``module`` or skip (fail in CI, where every extra is installed)."""
    if os.environ.get("CI"):
        importlib.import_module(module)
    else:
        pytest.importorskip(module, reason=f'{module} is an optional extra: pip install -e ".[all]"')


def check_store(client, n_jobs: int) -> list:
    """Every job finished exactly once, one train run, nothing RUNNING, one FINISHED sweep run; return prune runs."""
    experiment = client.get_experiment_by_name("prunesweep")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_role = {role: [r for r in runs if r.data.tags.get("role") == role] for role in ("train", "prune", "sweep")}
    assert [r.info.run_id for r in runs if r.info.status != "FINISHED"] == []
    prune = by_role["prune"]
    assert len(prune) == n_jobs and len({r.data.tags["job_hash"] for r in prune}) == n_jobs
    assert len(by_role["train"]) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in prune} == {by_role["train"][0].info.run_id}
    assert len(by_role["sweep"]) == 1 and by_role["sweep"][0].data.metrics["jobs_reported"] == n_jobs
    return prune


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A real local Ray cluster (``ray start --head``, 2 CPUs), stopped afterwards; yields its address."""
    require("hydra_plugins.hydra_ray_launcher.ray_launcher")
    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                             capture_output=True, text=True, timeout=180, env=env)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_sweep_runs_on_a_local_ray_cluster(tmp_path, ray_cluster, mlflow_client_for, model_store):
    seed_store(model_store, tmp_path, "small")
    out = run_cli([*SWEEP4, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_cluster}"],
                  tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    output = out.stderr + out.stdout
    assert "Connected to Ray cluster" in output
    prune = check_store(mlflow_client_for(tmp_path), 4)
    # the jobs ran as Ray tasks, whose worker processes Ray names in every line they print
    assert all(f"(_run_job pid={r.data.tags['pid']})" in output for r in prune)
    assert {(r.data.params["prune.method"], float(r.data.params["prune.k"])) for r in prune} == {
        (m, k) for m in ("weight", "unit") for k in (0, 50)}


def test_sweep_runs_through_submitit_local(tmp_path, mlflow_client_for, model_store):
    seed_store(model_store, tmp_path, "small")
    require("hydra_plugins.hydra_submitit_launcher.submitit_launcher")
    started = time.time()
    out = run_cli([*SWEEP4, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15"], tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    prune = check_store(mlflow_client_for(tmp_path), 4)
    # submitit's local executor ran each job as a process of its own, which wrote its summary line to its job log
    logs = [log.read_text() for log in (tmp_path / "multirun" / ".submitit").glob("*/*_0_log.out")
            if log.stat().st_mtime >= started]
    assert len(logs) == 4 and len({r.data.tags["pid"] for r in prune}) == 4
    assert sorted(line.split(":")[0] for log in logs for line in log.splitlines() if line.startswith("[prune]")) == [
        f"[prune] {m} k={k} lr=0.001" for m in ("unit", "weight") for k in (0, 50)]


def test_soak_fifty_jobs_on_two_parallel_workers_lose_nothing(tmp_path, mlflow_client_for, model_store):
    """50 tiny jobs, 2 joblib workers, one SQLite store: every job finished once, one trained model, a full report."""
    seed_store(model_store, tmp_path, "soak")
    started = time.perf_counter()
    out = run_cli(["-m", "prune=weight,unit", "prune.k=range(0,100,4)", *TINY, "model.hidden=[32,16]",
                   "eval.timing=off", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path,
                  timeout=900)
    wall = time.perf_counter() - started
    assert out.returncode == 0, out.stderr[-3000:]
    assert "database is locked" not in out.stderr
    prune = check_store(mlflow_client_for(tmp_path), 50)
    assert len({r.data.tags["pid"] for r in prune}) == 2
    report_rows = (tmp_path / "multirun" / "report" / "report.csv").read_text().strip().splitlines()
    assert len(report_rows) == 1 + 50
    print(f"soak: 50 jobs, 2 workers, {wall:.0f} s wall ({50 / wall * 60:.0f} jobs/min), 0 lost, 0 duplicated")
