"""One Hydra job: get the trained model (cache or train), prune it, evaluate, time, log one prune run.

A job on a cached model imports neither TensorFlow nor Keras: it reads the weights from the model file
(src/keras_file), evaluates with numpy (src/evaluation) and writes its model artifacts the same way. Only
training (src/train_run) imports Keras. Each phase's wall time is logged as ``job_seconds/<phase>``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from src import masks as M
from src.config import validate
from src.data import Splits, as_inputs, load_mnist, make_splits
from src.evaluation import accuracy_and_loss, time_evaluation
from src.keras_file import read_dense_weights, write_like
from src.phases import PhaseClock
from src.plots import trained_panels, weight_histograms
from src.sparse_engine import compact_units, forward_dense
from src.stats import layer_metrics
from src.tracking import check_reachable, fail_orphans, find_runs, git_commit, owner_tags, resolve_uri, setup_experiment
from src.train_cache import config_hash, get_or_train

PROJECT_DIR = Path(__file__).resolve().parents[1]
NOT_IN_JOB_HASH = ("tracking", "train.verbose")
# Per model file, what is the same for every job of that model: its layer metrics and histogram panels
_TRAINED_STATS: dict[Path, dict[str, float]] = {}
_TRAINED_PANELS: dict[Path, list] = {}


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
    return JobContext(MlflowClient(uri), experiment_id, tags)


def k_label(cfg: DictConfig) -> str:
    """'90' for a global k, '[90,80,50,10]' for per-layer k."""
    if cfg.prune.layer_k is not None:
        return "[" + ",".join(f"{v:g}" for v in cfg.prune.layer_k) + "]"
    return f"{cfg.prune.k:g}"


def trained_model(cfg: DictConfig, splits: Splits, ctx: JobContext) -> tuple[str, Path, str]:
    """(train run id, local model file, train hash): the cached model of this training config, trained here
    if no run has it."""
    payload = training_payload(cfg, splits.fingerprint)
    train_hash = config_hash(payload)

    def train_in_run(run_id: str) -> None:
        from src.train_run import train_and_log  # Keras and TensorFlow: only when a model must be trained

        train_and_log(cfg, splits, ctx.client, run_id, flatten(payload))

    run_id, path = get_or_train(ctx.client, ctx.experiment_id, train_hash, train_in_run, {**ctx.tags},
                                cfg.tracking.stale_after_s)
    return run_id, path, train_hash


def evaluate_masked(kernels: list[np.ndarray], biases: list[np.ndarray | None], splits: Splits
                    ) -> tuple[dict[str, float], np.ndarray]:
    """(test accuracy and loss and validation accuracy (NaN without a validation split), test logits), numpy."""
    logits = forward_dense(kernels, biases, as_inputs(splits.x_test))
    test_accuracy, test_loss = accuracy_and_loss(logits, splits.y_test)
    val_accuracy = (accuracy_and_loss(forward_dense(kernels, biases, as_inputs(splits.x_val)), splits.y_val)[0]
                    if len(splits.x_val) else float("nan"))
    return {"test_accuracy": test_accuracy, "test_loss": test_loss, "val_accuracy": val_accuracy}, logits


def prune_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, model_path: Path, train_tags: dict[str, str],
                  clock: PhaseClock) -> dict[str, Any]:
    """Prune the trained model in ``model_path`` as configured, evaluate and time it, log one prune run."""
    method, prune = cfg.prune.method, cfg.prune
    k = list(prune.layer_k) if prune.layer_k is not None else float(prune.k)
    with clock("prune"):
        kernels, biases = read_dense_weights(model_path)
        pruned_kernels, pruned_biases = M.apply_masks(kernels, biases,
                                                      M.layer_masks(kernels, method, k, prune.prune_last), method)
        n_pruned_layers = len(kernels) if prune.prune_last else len(kernels) - 1
        if model_path not in _TRAINED_STATS:
            _TRAINED_STATS[model_path] = layer_metrics(kernels)
            _TRAINED_PANELS[model_path] = trained_panels(kernels[:n_pruned_layers])
    with clock("evaluate"):
        scores, test_logits = evaluate_masked(pruned_kernels, pruned_biases, splits)
        metrics = {**scores,
                   "sparsity": M.sparsity(pruned_kernels[:n_pruned_layers]),
                   **{f"layer{i}/sparsity": M.sparsity([w]) for i, w in enumerate(pruned_kernels, start=1)},
                   **_TRAINED_STATS[model_path]}
    engines = {"eval.engine_used": "none", "eval.latency_engine_used": "none"}
    if cfg.eval.timing != "off":
        with clock("timing"):
            timed = time_evaluation(pruned_kernels, pruned_biases, as_inputs(splits.x_test), cfg.eval.timing,
                                    cfg.eval.engine, cfg.eval.repeats, cfg.eval.warmup, cfg.eval.settle_s,
                                    test_logits)
        metrics.update(timed.metrics)
        engines = {"eval.engine_used": timed.engine, "eval.latency_engine_used": timed.latency_engine}
    with clock("log"):
        run_id = log_prune_run(cfg, ctx, model_path, train_tags, metrics, engines,
                               (kernels[:n_pruned_layers], pruned_kernels[:n_pruned_layers]),
                               (pruned_kernels, pruned_biases))
    ctx.client.log_batch(run_id, metrics=[Metric(n, v, _now_ms(), 0) for n, v in clock.metrics().items()])
    ctx.client.set_terminated(run_id, "FINISHED")
    return {"run_id": run_id, **metrics, "engine": engines["eval.engine_used"]}


def _now_ms() -> int:
    return int(time.time() * 1000)


def log_prune_run(cfg: DictConfig, ctx: JobContext, model_path: Path, train_tags: dict[str, str],
                  metrics: dict[str, float], engines: dict[str, str],
                  histogram: tuple[list[np.ndarray], list[np.ndarray]],
                  pruned: tuple[list[np.ndarray], list[np.ndarray | None]]) -> str:
    """Create the prune run (``train_tags``: job_hash, train_hash, parent run id) with its params, metrics,
    config, weight histogram and, for unit pruning, the compacted model (``model/compact.keras``); return its
    id, still RUNNING."""
    method, client = cfg.prune.method, ctx.client
    tags = {**ctx.tags, **cfg.run_tags, **owner_tags(), "role": "prune", **train_tags}
    run_id = client.create_run(ctx.experiment_id, run_name=f"{method}-k{k_label(cfg)}-lr{cfg.lr:g}",
                               tags=tags).info.run_id
    try:
        params = {**flatten(OmegaConf.to_container(cfg, resolve=True)), "prune.method": method,
                  "prune.k": cfg.prune.k, **engines}
        client.log_batch(run_id, metrics=[Metric(n, float(v), _now_ms(), 0) for n, v in metrics.items()],
                         params=[Param(n, str(v)[:MAX_PARAM_VAL_LENGTH]) for n, v in params.items()])
        client.log_text(run_id, OmegaConf.to_yaml(cfg), "config.yaml")
        with tempfile.TemporaryDirectory() as tmp:
            before, after = histogram
            k = k_label(cfg)
            hist = weight_histograms(Path(tmp) / "weights_pruned.png", before, after,
                                     f"{method} pruning, k={k}, lr={cfg.lr:g}", _TRAINED_PANELS.get(model_path))
            client.log_artifact(run_id, str(hist), "plots")
            if method == "unit":
                compact = write_like(model_path, Path(tmp) / "compact.keras", *compact_units(*pruned))
                client.log_artifact(run_id, str(compact), "model")
                client.log_batch(run_id, metrics=[Metric("compact_model_bytes", compact.stat().st_size, _now_ms(), 0)])
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def run_job(cfg: DictConfig, overrides: list[str], sweep_id: str | None = None) -> dict[str, Any]:
    """The whole job; returns the prune run's metrics (or the finished run's, when skipped).

    ``sweep_id`` tags the prune run (a skipped job's earlier run is re-tagged with the new sweep)."""
    clock = PhaseClock()
    validate(cfg)
    with clock("connect"):
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
    with clock("data"):
        splits = make_splits(*load_mnist(cfg.data.source, cfg.data.path), cfg.data.train_size,
                             cfg.data.test_size, cfg.data.val_fraction)
    with clock("model"):
        train_run_id, model_path, train_hash = trained_model(cfg, splits, ctx)
    train_tags = {"job_hash": job_hash, "train_hash": train_hash, "mlflow.parentRunId": train_run_id}
    result = prune_and_log(cfg, splits, ctx, model_path, train_tags, clock)
    timing = (f"dense {result['dense_eval_ms']:.1f} ms vs sparse {result['sparse_eval_ms']:.1f} ms "
              f"({result['eval_speedup']:.2f}x, {result['engine']})" if cfg.eval.timing != "off" else "timing off")
    print(f"[prune] {cfg.prune.method} k={k_label(cfg)} lr={cfg.lr:g}: test_accuracy={result['test_accuracy']:.4f} "
          f"sparsity={result['sparsity']:.3f} {timing} in {clock.metrics()['job_seconds/total']:.1f} s")
    return result
