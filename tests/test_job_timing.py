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
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("levels")


@pytest.fixture(scope="module")
def runs(store):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    results = {level: job(store, "prune=weight", "prune.k=90", f"eval.timing={level}") for level in ("off", "quick",
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
    # at batch 1 "auto" times dense numpy against scatter-numba (no unit is dead at weight k=90: no compact-dense)
    assert run.data.params["eval.latency_engine_used"] in ("dense", "scatter-numba")
    assert run.data.metrics["latency_speedup"] == pytest.approx(
        run.data.metrics["dense_latency_ms"] / run.data.metrics["sparse_latency_ms"])


@pytest.mark.parametrize("scatter_ms, engine, speedup", [(2.0, "scatter-numba", 2.0), (8.0, "dense", 1.0)])
def test_a_job_logs_the_batch_1_engine_its_timing_found_faster(store, runs, monkeypatch, scatter_ms, engine, speedup):
    """With the clock saying scatter-numba takes ``scatter_ms`` where dense numpy takes 4 ms (and csr-numba 1 ms), the
    job logs the faster as its latency engine, with that speedup: exactly 1 when numpy, the baseline, wins."""
    from src.engine import timing

    monkeypatch.setattr(timing, "time_alternating", lambda fns, *args, **kwargs: {
        n: {"dense": 4.0, "csr-numba": 1.0, "scatter-numba": scatter_ms}[n] for n in fns})
    run = MlflowClient(f"sqlite:///{store}/mlflow.db").get_run(
        job(store, "prune=weight", "prune.k=90", "eval.timing=quick", "tracking.force=true")["run_id"])
    assert run.data.params["eval.engine_used"] == "csr-numba" and run.data.metrics["eval_speedup"] == 4.0
    assert run.data.params["eval.latency_engine_used"] == engine and run.data.metrics["latency_speedup"] == speedup


@pytest.mark.parametrize("csr_ms, engine, speedup", [(1.0, "csr-numba", 4.0), (8.0, "dense", 1.0)])
def test_a_job_in_the_density_band_logs_the_batched_engine_its_timing_found_faster(store, runs, monkeypatch,
                                                                                   csr_ms, engine, speedup):
    """Weight k=40 leaves ~60% of the weights: above the suite's threshold (0.5), below TIMED_MAX_DENSITY, so the
    job times dense numpy against csr-numba on its test set and logs the faster: never a kernel slower than numpy."""
    from src.engine import timing

    monkeypatch.setattr(timing, "time_alternating", lambda fns, *args, **kwargs: {
        n: {"dense": 4.0, "csr-numba": csr_ms, "scatter-numba": 2.0}[n] for n in fns})
    run = MlflowClient(f"sqlite:///{store}/mlflow.db").get_run(
        job(store, "prune=weight", "prune.k=40", "eval.timing=quick", "tracking.force=true")["run_id"])
    assert run.data.params["eval.engine_used"] == engine and run.data.metrics["eval_speedup"] == speedup


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
