"""One Hydra job: get the trained model (cache or train), prune it, evaluate, time, log to MLflow."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from src import masks as M
from src.config import validate
from src.data import Splits, file_sha256, load_mnist, make_splits
from src.model import build_mlp, compile_model, evaluate, get_weights, model_from_weights, set_weights
from src.plots import weight_histograms
from src.sparse_engine import (
    LATENCY_EXAMPLES,
    build_engine,
    compact_units,
    forward_dense,
    in_calls,
    time_alternating,
)
from src.stats import weight_stats
from src.tracking import check_reachable, fail_orphans, find_runs, git_commit, owner_tags, resolve_uri, setup_experiment
from src.train import fit, seed_everything
from src.train_cache import MODEL_ARTIFACT, config_hash, get_or_train

PROJECT_DIR = Path(__file__).resolve().parents[1]
NOT_IN_JOB_HASH = ("tracking", "train.verbose")


@dataclass(frozen=True)
class JobContext:
    """Where and how this job logs: resolved store, experiment, and provenance tags."""

    client: MlflowClient
    experiment_id: str
    tags: dict[str, str]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def training_payload(cfg: DictConfig, data_fingerprint: str) -> dict[str, Any]:
    """Everything training depends on, and nothing else (not pruning, not test size)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    return {
        "lr": c["lr"], "model": c["model"], "optimizer": c["optimizer"],
        "train": {k: v for k, v in c["train"].items() if k != "verbose"},
        "data": {"fingerprint": data_fingerprint, "train_size": c["data"]["train_size"],
                 "val_fraction": c["data"]["val_fraction"]},
    }


def job_payload(cfg: DictConfig) -> dict[str, Any]:
    """The job's identity: its composed config minus tracking/output settings."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not k.startswith(NOT_IN_JOB_HASH)}


def connect(cfg: DictConfig, overrides: list[str], sweep_id: str | None) -> JobContext:
    uri = resolve_uri(cfg.tracking.uri, Path.cwd())
    check_reachable(uri)
    experiment_id = setup_experiment(uri, cfg.tracking.experiment, Path.cwd() / cfg.tracking.artifact_root)
    commit, dirty = git_commit(PROJECT_DIR)
    tags = {"mlflow.source.git.commit": commit, "git_commit": commit, "git_dirty": str(dirty).lower(),
            "hydra_overrides": " ".join(overrides), **({"sweep_id": sweep_id} if sweep_id else {})}
    return JobContext(MlflowClient(), experiment_id, tags)


def k_label(cfg: DictConfig) -> str:
    """'90' for a global k, '[90,80,50,10]' for per-layer k."""
    if cfg.prune.layer_k is not None:
        return "[" + ",".join(f"{v:g}" for v in cfg.prune.layer_k) + "]"
    return f"{cfg.prune.k:g}"


def layer_metrics(kernels: list[np.ndarray], prefix: str = "") -> dict[str, float]:
    """Per-layer weight statistics, named ``layer{i}/{stat}`` with layers numbered from 1."""
    return {f"{prefix}layer{i}/{name}": value
            for i, w in enumerate(kernels, start=1) for name, value in weight_stats(w).items()}


def train_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, train_hash: str):
    """Train a fresh model inside the RUNNING train run ``run_id``; log everything the contract lists."""
    client = ctx.client
    seed_everything(cfg.train.seed)
    model = compile_model(
        build_mlp(list(cfg.model.input_shape), list(cfg.model.hidden), cfg.model.n_classes,
                  cfg.model.use_bias, cfg.model.kernel_initializer),
        cfg.optimizer.name, cfg.lr, cfg.optimizer.momentum)
    params = flatten(training_payload(cfg, splits.fingerprint))
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        names = {"loss": "train_loss", "accuracy": "train_accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy"}
        metrics = [mlflow.entities.Metric(names[k], float(v), now, epoch) for k, v in logs.items() if k in names]
        client.log_batch(run_id, metrics=metrics)
        client.set_tag(run_id, "heartbeat", f"{time.time():.0f}")

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
        hist = weight_histograms(Path(tmp) / "weights_trained.png", kernels, None,
                                 f"trained weights, lr={cfg.lr:g}")
        client.log_artifact(run_id, str(hist), "plots")
    client.log_text(run_id, OmegaConf.to_yaml(cfg), "config.yaml")
    client.set_tag(run_id, "model_sha256", sha)
    return model


def prune_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, model, train_run_id: str,
                  job_hash: str, train_hash: str) -> dict[str, Any]:
    """Prune the trained ``model`` as configured, evaluate and time it, log one prune run."""
    method, prune = cfg.prune.method, cfg.prune
    k = list(prune.layer_k) if prune.layer_k is not None else float(prune.k)
    kernels, biases = get_weights(model)
    kernel_masks = M.layer_masks(kernels, method, k, prune.prune_last)
    pruned_kernels, pruned_biases = M.apply_masks(kernels, biases, kernel_masks, method)
    n_pruned_layers = len(kernels) if prune.prune_last else len(kernels) - 1

    set_weights(model, pruned_kernels, pruned_biases)
    test_loss, test_accuracy = evaluate(model, splits.x_test, splits.y_test)
    val_accuracy = evaluate(model, splits.x_val, splits.y_val)[1] if len(splits.x_val) else float("nan")
    set_weights(model, kernels, biases)

    timing = time_evaluation(cfg, splits, pruned_kernels, pruned_biases)
    metrics = {
        "test_accuracy": test_accuracy, "test_loss": test_loss, "val_accuracy": val_accuracy,
        "sparsity": M.sparsity(pruned_kernels[:n_pruned_layers]),
        **{f"layer{i}/sparsity": M.sparsity([w]) for i, w in enumerate(pruned_kernels, start=1)},
        **layer_metrics(kernels), **timing["metrics"],
    }
    tags = {**ctx.tags, **cfg.run_tags, **owner_tags(), "role": "prune", "job_hash": job_hash, "train_hash": train_hash,
            "mlflow.parentRunId": train_run_id}
    run_name = f"{method}-k{k_label(cfg)}-lr{cfg.lr:g}"
    with mlflow.start_run(experiment_id=ctx.experiment_id, run_name=run_name, tags=tags) as run:
        params = flatten(OmegaConf.to_container(cfg, resolve=True))
        mlflow.log_params({**params, "prune.method": method, "prune.k": prune.k,
                           "eval.engine_used": timing["engine"], "eval.latency_engine_used": timing["latency_engine"]})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
        with tempfile.TemporaryDirectory() as tmp:
            hist = weight_histograms(Path(tmp) / "weights_pruned.png", kernels[:n_pruned_layers],
                                     pruned_kernels[:n_pruned_layers], f"{method} pruning, k={k}, lr={cfg.lr:g}")
            mlflow.log_artifact(str(hist), "plots")
            if method == "unit":
                compact_path = Path(tmp) / "compact.keras"
                compact = compact_units(pruned_kernels, pruned_biases)
                model_from_weights(list(cfg.model.input_shape), *compact).save(compact_path)
                mlflow.log_artifact(str(compact_path), "model")
                mlflow.log_metric("compact_model_bytes", compact_path.stat().st_size)
    return {"run_id": run.info.run_id, **metrics, "engine": timing["engine"]}


def time_evaluation(cfg: DictConfig, splits: Splits, kernels: list[np.ndarray],
                    biases: list[np.ndarray | None]) -> dict[str, Any]:
    """Dense vs sparse timing, alternated, medians in ms, each side timed in its steady state (after
    ``eval.settle_s`` s of untimed calls, see time_alternating): the whole test set in one call (``*_eval_ms``),
    and one example per call averaged over the first LATENCY_EXAMPLES test images (``*_latency_ms``; 3 timed
    passes per turn)."""
    x = splits.x_test.reshape(len(splits.x_test), -1).astype(np.float32) / np.float32(255.0)
    x_lat = x[:LATENCY_EXAMPLES]
    settle = cfg.eval.settle_s
    engine = build_engine(kernels, biases, batch_size=len(x), engine=cfg.eval.engine, settle_s=settle)
    latency_engine = build_engine(kernels, biases, batch_size=1, engine=cfg.eval.engine, sample=x_lat, settle_s=settle)
    reference = forward_dense(kernels, biases, x)
    max_err = float(np.max(np.abs(engine(x) - reference)))
    max_err = max(max_err, float(np.max(np.abs(latency_engine(x_lat) - reference[:len(x_lat)]))))
    throughput = time_alternating({"dense": lambda: forward_dense(kernels, biases, x), "sparse": lambda: engine(x)},
                                  repeats=cfg.eval.repeats, warmup=cfg.eval.warmup, settle_s=settle)
    latency = time_alternating({"dense": in_calls(lambda xi: forward_dense(kernels, biases, xi), x_lat, 1),
                                "sparse": in_calls(latency_engine, x_lat, 1)},
                               repeats=cfg.eval.repeats, warmup=cfg.eval.warmup, settle_s=settle, per_round=3)
    latency = {name: ms / len(x_lat) for name, ms in latency.items()}
    metrics = {
        "dense_eval_ms": throughput["dense"], "sparse_eval_ms": throughput["sparse"],
        "eval_speedup": throughput["dense"] / throughput["sparse"],
        "dense_latency_ms": latency["dense"], "sparse_latency_ms": latency["sparse"],
        "latency_speedup": latency["dense"] / latency["sparse"],
        "sparse_max_abs_err": max_err,
    }
    return {"metrics": metrics, "engine": engine.name, "latency_engine": latency_engine.name}


def run_job(cfg: DictConfig, overrides: list[str], sweep_id: str | None = None) -> dict[str, Any]:
    """The whole job; returns the prune run's metrics (or the finished run's, when skipped).

    ``sweep_id`` tags the prune run (a skipped job's earlier run is re-tagged with the new sweep)."""
    validate(cfg)
    ctx = connect(cfg, overrides, sweep_id)
    job_hash = config_hash(job_payload(cfg))
    previous = find_runs(ctx.client, ctx.experiment_id, role="prune", job_hash=job_hash)
    fail_orphans(ctx.client, previous, cfg.tracking.stale_after_s)
    done = [r for r in previous if r.info.status == "FINISHED"]
    if done and not cfg.tracking.force:
        m = done[-1].data.metrics
        if sweep_id:
            ctx.client.set_tag(done[-1].info.run_id, "sweep_id", sweep_id)
        print(f"[skip] {' '.join(overrides) or 'defaults'}: already finished as run {done[-1].info.run_id} "
              f"(test_accuracy={m.get('test_accuracy', float('nan')):.4f}); tracking.force=true re-runs it")
        return {"run_id": done[-1].info.run_id, **m, "skipped": True}

    splits = make_splits(*load_mnist(cfg.data.source, cfg.data.path), cfg.data.train_size,
                         cfg.data.test_size, cfg.data.val_fraction)
    train_hash = config_hash(training_payload(cfg, splits.fingerprint))
    trained = {}

    def train_in_run(run_id: str) -> None:
        trained["model"] = train_and_log(cfg, splits, ctx, run_id, train_hash)

    train_run_id, model = get_or_train(ctx.client, ctx.experiment_id, train_hash, train_in_run,
                                       {**ctx.tags}, cfg.tracking.stale_after_s)
    model = model if model is not None else trained["model"]
    result = prune_and_log(cfg, splits, ctx, model, train_run_id, job_hash, train_hash)
    print(f"[prune] {cfg.prune.method} k={k_label(cfg)} lr={cfg.lr:g}: test_accuracy={result['test_accuracy']:.4f} "
          f"sparsity={result['sparsity']:.3f} dense {result['dense_eval_ms']:.1f} ms vs sparse "
          f"{result['sparse_eval_ms']:.1f} ms ({result['eval_speedup']:.2f}x, {result['engine']})")
    return result
