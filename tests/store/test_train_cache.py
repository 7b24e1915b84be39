"""The MLflow-backed train cache: reuse, orphaned claims, corrupt artifacts, concurrent processes."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import time
from pathlib import Path

import keras
import pytest
from mlflow.tracking import MlflowClient

from src.store import train_cache
from src.store.tracking import HOST, find_runs, setup_experiment
from src.store.train_cache import MODEL_ARTIFACT, get_or_train
from src.training.data import file_sha256
from src.training.model import build_mlp


def _store(tmp: Path) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{tmp}/mlflow.db"
    experiment_id = setup_experiment(uri, "cache-test", tmp / "artifacts")
    return MlflowClient(uri), experiment_id


def _train_in_run_factory(client, tmp, calls, sleep_s=0.0):
    def train_in_run(run_id: str) -> None:
        calls.append(run_id)
        time.sleep(sleep_s)
        folder = tmp / run_id
        folder.mkdir()
        path = folder / Path(MODEL_ARTIFACT).name
        build_mlp([4], [3], 2, False).save(path)
        client.log_artifact(run_id, str(path), str(Path(MODEL_ARTIFACT).parent))
        client.set_tag(run_id, "model_sha256", file_sha256(path))
    return train_in_run


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_trains_once_then_reuses(tmp_path):
    client, exp = _store(tmp_path)
    calls: list[str] = []
    run_a, model_a = get_or_train(client, exp, "h1", _train_in_run_factory(client, tmp_path, calls), {}, 60)
    run_b, model_b = get_or_train(client, exp, "h1", _train_in_run_factory(client, tmp_path, calls), {}, 60)
    assert calls == [run_a] and run_b == run_a and model_a.read_bytes() == model_b.read_bytes()
    assert isinstance(keras.models.load_model(model_b), keras.Model)
    assert client.get_run(run_a).info.status == "FINISHED"


def test_orphaned_claim_is_marked_failed_and_never_reused(tmp_path):
    client, exp = _store(tmp_path)
    orphan = client.create_run(exp, tags={"role": "train", "train_hash": "h2", "host": HOST,
                                          "pid": str(_dead_pid()), "heartbeat": f"{time.time():.0f}"})
    calls: list[str] = []
    run_id, _ = get_or_train(client, exp, "h2", _train_in_run_factory(client, tmp_path, calls), {}, 60, poll_s=0.1)
    assert run_id != orphan.info.run_id and calls == [run_id]
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"


def test_stale_heartbeat_from_another_host_counts_as_dead(tmp_path):
    client, exp = _store(tmp_path)
    stale = client.create_run(exp, tags={"role": "train", "train_hash": "h3", "host": "elsewhere", "pid": "1",
                                         "heartbeat": f"{time.time() - 3600:.0f}"})
    calls: list[str] = []
    get_or_train(client, exp, "h3", _train_in_run_factory(client, tmp_path, calls), {}, stale_after_s=600)
    assert len(calls) == 1 and client.get_run(stale.info.run_id).info.status == "FAILED"


def test_failed_training_leaves_failed_run_and_next_call_retrains(tmp_path):
    client, exp = _store(tmp_path)

    def boom(run_id: str) -> None:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        get_or_train(client, exp, "h4", boom, {}, 60)
    assert [r.info.status for r in find_runs(client, exp, train_hash="h4")] == ["FAILED"]
    calls: list[str] = []
    get_or_train(client, exp, "h4", _train_in_run_factory(client, tmp_path, calls), {}, 60)
    assert len(calls) == 1


def test_corrupt_model_artifact_is_detected_and_retrained(tmp_path):
    client, exp = _store(tmp_path)
    calls: list[str] = []
    first, _ = get_or_train(client, exp, "h5", _train_in_run_factory(client, tmp_path, calls), {}, 60)
    artifact = Path(client.get_run(first).info.artifact_uri.removeprefix("file://")) / MODEL_ARTIFACT
    artifact.write_bytes(artifact.read_bytes()[:1000])  # truncated upload
    train_cache._VERIFIED.clear()  # as in a new process: this one keeps the copy it already checked
    second, model = get_or_train(client, exp, "h5", _train_in_run_factory(client, tmp_path, calls), {}, 60)
    assert second != first and calls == [first, second] and model.is_file()
    assert client.get_run(first).data.tags["cache_invalid"]


def _worker(tmp: str, out: mp.Queue) -> None:
    client, exp = _store(Path(tmp))
    calls: list[str] = []
    run_id, _ = get_or_train(client, exp, "h6", _train_in_run_factory(client, Path(tmp), calls, sleep_s=3), {}, 60,
                             poll_s=0.2, log=lambda _: None)
    out.put((run_id, len(calls)))


def test_parallel_processes_elect_one_trainer(tmp_path):
    _store(tmp_path)  # create the experiment before the race
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert len({run_id for run_id, _ in results}) == 1
    assert sum(n for _, n in results) == 1
    client, exp = _store(tmp_path)
    assert [r.info.status for r in find_runs(client, exp, role="train", train_hash="h6")] == ["FINISHED"]
