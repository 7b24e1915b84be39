"""The ``role=train`` MLflow run: train the MLP with Keras inside it and log what the contract lists.

This is the only part of a job that imports Keras (and TensorFlow, ~7 s): a job on a cached model never
imports this module.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from src.pruning.stats import layer_metrics
from src.report.histograms import weight_histograms
from src.store.train_cache import INITIAL_ARTIFACT, MODEL_ARTIFACT
from src.training.data import Splits, file_sha256
from src.training.model import build_mlp, compile_model, evaluate, get_weights
from src.training.train import fit, seed_everything

EPOCH_METRICS = {"loss": "train_loss", "accuracy": "train_accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy"}


def train_and_log(cfg: DictConfig, splits: Splits, client: MlflowClient, run_id: str,
                  params: dict[str, object]) -> None:
    """Train a fresh model inside the RUNNING train run ``run_id``: params, per-epoch history (step = epoch),
    test accuracy and loss, per-layer weight statistics, the model file (``model/model.keras``, tag
    ``model_sha256``), its weights before training (``model/initial.keras``), a weight histogram and the
    composed config. Leaves the run RUNNING."""
    seed_everything(cfg.train.seed)
    model = compile_model(
        build_mlp(list(cfg.model.input_shape), list(cfg.model.hidden), cfg.model.n_classes,
                  cfg.model.use_bias, cfg.model.kernel_initializer),
        cfg.optimizer.name, cfg.lr, cfg.optimizer.momentum)
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [mlflow.entities.Metric(EPOCH_METRICS[k], float(v), now, epoch)
                   for k, v in logs.items() if k in EPOCH_METRICS]
        client.log_batch(run_id, metrics=metrics, tags=[mlflow.entities.RunTag("heartbeat", f"{time.time():.0f}")])

    with tempfile.TemporaryDirectory() as tmp:  # the initial weights, for lottery-ticket rewinding
        path = Path(tmp) / Path(INITIAL_ARTIFACT).name
        model.save(path)
        client.log_artifact(run_id, str(path), str(Path(INITIAL_ARTIFACT).parent))
    started = time.perf_counter()
    fit(model, splits, cfg.train.epochs, cfg.train.batch_size, cfg.train.verbose, on_epoch_end)
    test_loss, test_accuracy = evaluate(model, splits.x_test, splits.y_test)
    kernels, _ = get_weights(model)
    metrics = {"test_accuracy": test_accuracy, "test_loss": test_loss,
               "train_seconds": time.perf_counter() - started, **layer_metrics(kernels)}
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                                      for k, v in metrics.items()])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(MODEL_ARTIFACT).name
        model.save(path)
        client.log_artifact(run_id, str(path), str(Path(MODEL_ARTIFACT).parent))
        sha = file_sha256(path)
        hist = weight_histograms(Path(tmp) / "weights_trained.png", kernels, None, f"trained weights, lr={cfg.lr:g}")
        client.log_artifact(run_id, str(hist), "plots")
    client.log_text(run_id, OmegaConf.to_yaml(cfg), "config.yaml")
    client.set_tag(run_id, "model_sha256", sha)
