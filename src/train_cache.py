"""Train once per training config, using the MLflow store as the cache.

A FINISHED run with tags ``role=train`` and ``train_hash=<h>`` whose model artifact matches its
``model_sha256`` tag is reused. Processes that need the same model elect one trainer through the
store itself (oldest RUNNING claim wins), so this also works across machines sharing a server;
the others wait for it. A claim whose process died is marked FAILED and never reused.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
from mlflow.tracking import MlflowClient

from src.data import file_sha256
from src.tracking import fail_orphans, find_runs, owner_tags

MODEL_ARTIFACT = "model/model.keras"


def config_hash(payload: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_verified_model(client: MlflowClient, run_id: str, expected_sha256: str) -> keras.Model | None:
    """The run's model, or None when the artifact is missing or its checksum does not match."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(client.download_artifacts(run_id, MODEL_ARTIFACT, tmp))
        except Exception:  # noqa: BLE001 - any failure to fetch means "not usable"
            return None
        if file_sha256(path) != expected_sha256:
            return None
        return keras.models.load_model(path, compile=False)


def get_or_train(
    client: MlflowClient,
    experiment_id: str,
    train_hash: str,
    train_in_run: Callable[[str], None],
    run_tags: dict[str, str],
    stale_after_s: float,
    poll_s: float = 2.0,
    log: Callable[[str], None] = print,
) -> tuple[str, keras.Model | None]:
    """Return (train run id, cached model or None if this process trained it).

    ``train_in_run(run_id)`` trains and logs into the given RUNNING run, uploads the model and sets
    tag ``model_sha256``; it must leave the run RUNNING (this function terminates it)."""
    waiting_for = None
    while True:
        runs = find_runs(client, experiment_id, role="train", train_hash=train_hash)
        for run in runs:
            if run.info.status == "FINISHED" and "model_sha256" in run.data.tags:
                model = load_verified_model(client, run.info.run_id, run.data.tags["model_sha256"])
                if model is not None:
                    log(f"[train] reusing trained model from run {run.info.run_id} (train_hash {train_hash})")
                    return run.info.run_id, model
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
        run_id = _claim(client, experiment_id, train_hash, run_tags)
        if run_id is None:
            continue
        try:
            train_in_run(run_id)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return run_id, None


def _claim(client: MlflowClient, experiment_id: str, train_hash: str, run_tags: dict[str, str]) -> str | None:
    """Create a RUNNING claim; keep it only if it is the oldest live claim, else delete it."""
    tags = {**run_tags, **owner_tags(), "role": "train", "train_hash": train_hash}
    run = client.create_run(experiment_id, tags=tags, run_name=f"train-{train_hash[:8]}")
    claims = [r for r in find_runs(client, experiment_id, role="train", train_hash=train_hash)
              if r.info.status == "RUNNING"]
    if claims and claims[0].info.run_id == run.info.run_id:
        return run.info.run_id
    client.delete_run(run.info.run_id)
    client.set_terminated(run.info.run_id, "KILLED")
    return None
