"""The ``role=train`` MLflow run: train the model with Keras inside it (or take a user's trained file as it is)
and log what the contract lists.

This is the only part of a job that imports Keras (and TensorFlow, ~7 s): a job on a cached model never
imports this module.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from src.cli.config import GRAPH_MODELS
from src.pruning.stats import layer_metrics
from src.report.histograms import weight_histograms
from src.store.train_cache import INITIAL_ARTIFACT, MODEL_ARTIFACT
from src.training.data import Splits, file_sha256, n_classes
from src.training.keras_file import graph_reason
from src.training.keras_graph import read_graph
from src.training.model import build_model, compile_model, evaluate, get_weights, load_user_model
from src.training.train import fit, seed_everything

EPOCH_METRICS = {"loss": "train_loss", "accuracy": "train_accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy"}


def train_and_log(cfg: DictConfig, splits: Splits, client: MlflowClient, run_id: str,
                  params: dict[str, object]) -> None:
    """Train a fresh model inside the RUNNING train run ``run_id``: params, per-epoch history (step = epoch),
    test accuracy and loss, per-layer weight statistics, the model file (``model/model.keras``, tag
    ``model_sha256``), its weights before training (``model/initial.keras``), a weight histogram and the
    composed config. A user's file with ``model.trained=true`` is logged as the trained model, untrained here
    (no history, no initial weights). Leaves the run RUNNING."""
    seed_everything(cfg.train.seed)
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
    if cfg.model.name == "keras" and cfg.model.trained:
        model = load_user_model(cfg.model.path)
        started = time.perf_counter()
    else:
        model = compile_model(build_model(cfg.model, n_classes(splits.y_train, splits.y_test)),
                              cfg.optimizer.name, cfg.lr, cfg.optimizer.momentum, cosine_steps(cfg, splits))
        _save_and_log(client, run_id, model, INITIAL_ARTIFACT)  # the initial weights, for lottery-ticket rewinding
        started = time.perf_counter()
        fit(model, splits, cfg.train.epochs, cfg.train.batch_size, cfg.train.verbose, _epoch_logger(client, run_id))
    test_loss, test_accuracy = evaluate(model, splits.x_test, splits.y_test)
    kernels, names = _prunable(cfg, model)
    metrics = {"test_accuracy": test_accuracy, "test_loss": test_loss,
               "train_seconds": time.perf_counter() - started, **layer_metrics(kernels, names=names)}
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                                      for k, v in metrics.items()])
    sha = _save_and_log(client, run_id, model, MODEL_ARTIFACT)
    with tempfile.TemporaryDirectory() as tmp:
        hist = weight_histograms(Path(tmp) / "weights_trained.png", kernels, None, f"trained weights, lr={cfg.lr:g}",
                                 names=names)
        client.log_artifact(run_id, str(hist), "plots")
    client.log_text(run_id, OmegaConf.to_yaml(cfg), "config.yaml")
    client.set_tag(run_id, "model_sha256", sha)


def _prunable(cfg: DictConfig, model) -> tuple[list, list[str] | None]:
    """(arrays, names) of the weights whose statistics the run logs: the Dense and Conv2D kernels (names None:
    ``weights/layer{i}``), or for a model only Keras runs its ranked prunable tensors by name."""
    if cfg.model.name in GRAPH_MODELS or (cfg.model.name == "keras"
                                          and graph_reason(Path(cfg.model.path).expanduser()) is not None):
        graph = read_graph(model, cfg.prune.embeddings)
        ranked = [(t.name, a) for t, a in zip(graph.tensors, graph.arrays(), strict=True) if t.ranked]
        return [a for _, a in ranked], [n for n, _ in ranked]
    return get_weights(model)[0], None


def cosine_steps(cfg: DictConfig, splits: Splits) -> int:
    """Optimizer steps of the whole training when ``train.lr_schedule=cosine`` (the decay's length), else 0."""
    if cfg.train.lr_schedule != "cosine":
        return 0
    return cfg.train.epochs * math.ceil(len(splits.x_train) / cfg.train.batch_size)


def _epoch_logger(client: MlflowClient, run_id: str):
    """Keras epoch hook: the epoch's metrics (step = epoch) and a heartbeat tag on the train run."""
    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [mlflow.entities.Metric(EPOCH_METRICS[k], float(v), now, epoch)
                   for k, v in logs.items() if k in EPOCH_METRICS]
        client.log_batch(run_id, metrics=metrics, tags=[mlflow.entities.RunTag("heartbeat", f"{time.time():.0f}")])
    return on_epoch_end


def _save_and_log(client: MlflowClient, run_id: str, model, artifact: str) -> str:
    """Save ``model`` as the run's ``artifact`` (e.g. model/model.keras); return the file's SHA-256."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        model.save(path)
        client.log_artifact(run_id, str(path), str(Path(artifact).parent))
        return file_sha256(path)
