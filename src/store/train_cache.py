"""Train once per training config, using the MLflow store as the cache.

A FINISHED run with tags ``role=train`` and ``train_hash=<h>`` whose model artifact matches its
``model_sha256`` tag is reused. Processes that need the same model elect one trainer through the
store itself (oldest RUNNING claim wins), so this also works across machines sharing a server;
the others wait for it. A claim whose process died is marked FAILED and never reused.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from src.store import open_runs
from src.store.tracking import fail_orphans, find_runs, owner_tags
from src.training.data import file_sha256

MODEL_ARTIFACT = "model/model.keras"
PRUNED_ARTIFACT = "model/pruned.keras"  # a prune run's pruned (and retrained) model
INITIAL_ARTIFACT = "model/initial.keras"  # the weights before training, for rewinding (prune.iterative.rewind)


def config_hash(payload: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _local_dir() -> Path:
    """This process's folder of fetched model files (removed at exit)."""
    global _LOCAL
    if _LOCAL is None:
        _LOCAL = Path(tempfile.mkdtemp(prefix="prunesweep-models-"))
        atexit.register(shutil.rmtree, _LOCAL, ignore_errors=True)
    return _LOCAL


_LOCAL: Path | None = None
_VERIFIED: dict[tuple[str, str], Path] = {}  # (run id, sha256) -> local file already checked in this process


def fetch_verified_model(client: MlflowClient, run_id: str, expected_sha256: str) -> Path | None:
    """A local copy of the run's model file, or None when the artifact is missing or its checksum does not
    match. Fetched once per process: later jobs of a multirun reuse the checked copy."""
    key = (run_id, expected_sha256)
    if key in _VERIFIED and _VERIFIED[key].is_file():
        return _VERIFIED[key]
    folder = _local_dir() / run_id
    try:
        path = Path(client.download_artifacts(run_id, MODEL_ARTIFACT, str(folder)))
    except Exception:  # noqa: BLE001 - any failure to fetch means "not usable"
        return None
    if file_sha256(path) != expected_sha256:
        return None
    _VERIFIED[key] = path
    return path


def get_or_train(
    client: MlflowClient,
    experiment_id: str,
    train_hash: str,
    train_in_run: Callable[[str], None],
    run_tags: dict[str, str],
    stale_after_s: float,
    poll_s: float = 2.0,
    log: Callable[[str], None] = print,
    run_name: str | None = None,
    doing: str = "training it",
) -> tuple[str, Path]:
    """Return (train run id, verified local copy of its model file), training it here if no process has.

    ``train_in_run(run_id)`` trains and logs into the given RUNNING run, uploads the model and sets
    tag ``model_sha256``; it must leave the run RUNNING (this function terminates it). ``run_name`` names a
    new train run (default ``train-<hash prefix>``); ``doing`` says what ``train_in_run`` does, for the log line."""
    waiting_for = None
    while True:
        runs = find_runs(client, experiment_id, role="train", train_hash=train_hash)
        for run in runs:
            if run.info.status == "FINISHED" and "model_sha256" in run.data.tags:
                path = fetch_verified_model(client, run.info.run_id, run.data.tags["model_sha256"])
                if path is not None:
                    log(f"[train] reusing trained model from run {run.info.run_id} (train_hash {train_hash})")
                    return run.info.run_id, path
                client.set_tag(run.info.run_id, "cache_invalid", "model artifact missing or checksum mismatch")
                client.set_tag(run.info.run_id, "train_hash", f"{train_hash}-invalid")
                log(f"[train] run {run.info.run_id}: model artifact corrupt or missing, retraining")
        running = fail_orphans(client, runs, stale_after_s)
        if running:
            leader = running[0]
            if waiting_for != leader.info.run_id:
                waiting_for = leader.info.run_id
                log(f"[train] waiting for run {leader.info.run_id} (pid {leader.data.tags.get('pid')} on "
                    f"{leader.data.tags.get('host')}) to train this config")
            time.sleep(poll_s)
            continue
        run_id = _claim(client, experiment_id, train_hash, run_tags, run_name or f"train-{train_hash[:8]}")
        if run_id is None:
            continue
        log(f"[train] no cached model for this training config: {doing} in run {run_id} "
            f"({run_name or 'train_hash ' + train_hash})")
        try:
            train_in_run(run_id)
        except BaseException as e:
            open_runs.close(client, run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        open_runs.close(client, run_id, "FINISHED")
        path = fetch_verified_model(client, run_id, client.get_run(run_id).data.tags.get("model_sha256", ""))
        if path is None:
            raise RuntimeError(f"train run {run_id} finished without a model artifact matching its model_sha256")
        return run_id, path


def _claim(client: MlflowClient, experiment_id: str, train_hash: str, run_tags: dict[str, str],
           run_name: str) -> str | None:
    """Create a RUNNING claim; keep it only if it is the oldest live claim, else delete it."""
    tags = {**run_tags, **owner_tags(), "role": "train", "train_hash": train_hash}
    run = client.create_run(experiment_id, tags=tags, run_name=run_name)
    open_runs.opened(client, run.info.run_id)
    claims = [r for r in find_runs(client, experiment_id, role="train", train_hash=train_hash)
              if r.info.status == "RUNNING"]
    if claims and claims[0].info.run_id == run.info.run_id:
        return run.info.run_id
    client.delete_run(run.info.run_id)
    open_runs.close(client, run.info.run_id, "KILLED")
    return None
