"""Shared helpers: run the real CLI in a subprocess against a throwaway MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=1", "data.train_size=1000", "data.test_size=300", "eval.repeats=2", "eval.warmup=1",
        "eval.settle_s=0"]  # timings are not asserted: no settle time


def store_overrides(tmp: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_root={tmp}/artifacts",
            f"hydra.sweep.dir={tmp}/multirun", f"hydra.run.dir={tmp}/outputs"]


def run_cli(args: list[str], tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "src.run", *args, *store_overrides(tmp)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def finished_sweep(args: list[str], tmp: Path, client_for) -> tuple[subprocess.CompletedProcess, object, str]:
    """Run the CLI with ``args`` against the store in ``tmp``; assert it succeeded; return (result, MLflow
    client of that store, id of experiment 'prunesweep')."""
    result = run_cli(args, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(tmp)
    return result, client, client.get_experiment_by_name("prunesweep").experiment_id


@pytest.fixture(scope="session")
def mlflow_client_for():
    from mlflow.tracking import MlflowClient

    def make(tmp: Path) -> MlflowClient:
        return MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")

    return make
