"""What a prune job logs at each timing level (eval.timing), run in-process on one tiny trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from src.cli.config import register_configs
from src.job import run_job
from tests.conftest import TINY

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[1] / "conf"
TIMING_METRICS = {"dense_eval_ms", "sparse_eval_ms", "eval_speedup", "dense_latency_ms", "sparse_latency_ms",
                  "latency_speedup", "sparse_max_abs_err"}
register_configs()


def job(tmp: Path, *overrides: str) -> dict:
    store = [f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_root={tmp}/artifacts"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TINY, *store, *overrides])
    return run_job(cfg, list(overrides))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("levels")
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    results = {level: job(tmp, "prune=weight", "prune.k=90", f"eval.timing={level}") for level in ("off", "quick",
                                                                                                    "full")}
    return {level: client.get_run(r["run_id"]) for level, r in results.items()}


def test_off_logs_no_timing_metric_and_says_so_in_params(runs):
    run = runs["off"]
    assert not TIMING_METRICS & set(run.data.metrics)
    assert run.data.params["eval.timing"] == "off" and run.data.params["eval.engine_used"] == "none"
    assert {"test_accuracy", "val_accuracy", "sparsity"} <= set(run.data.metrics)


@pytest.mark.parametrize("level", ["quick", "full"])
def test_timed_levels_log_every_timing_metric_and_the_engines(runs, level):
    run = runs[level]
    assert TIMING_METRICS <= set(run.data.metrics) and run.data.params["eval.timing"] == level
    assert run.data.metrics["eval_speedup"] == pytest.approx(
        run.data.metrics["dense_eval_ms"] / run.data.metrics["sparse_eval_ms"])
    assert run.data.params["eval.engine_used"] == "csr-numba"
    assert run.data.params["eval.latency_engine_used"] in ("dense", "compact-dense", "scatter-numba")


def test_levels_differ_only_in_timing(runs):
    metrics = [runs[level].data.metrics for level in ("off", "quick", "full")]
    for name in ("test_accuracy", "test_loss", "val_accuracy", "sparsity"):
        assert len({m[name] for m in metrics}) == 1, name
    assert len({runs[level].data.tags["job_hash"] for level in runs}) == 3  # the level is part of the job


def test_every_job_logs_its_phases(runs):
    for run in runs.values():
        phases = {k.split("/", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("job_seconds/")}
        assert {"connect", "data", "model", "prune", "evaluate", "log", "total"} <= set(phases)
        assert ("timing" in phases) == (run.data.params["eval.timing"] != "off")
        assert phases["total"] >= sum(v for k, v in phases.items() if k != "total") * 0.99
