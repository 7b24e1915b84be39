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
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from src import masks as M
from src import pruning as P
from src.config import ConfigError, validate
from src.data import Splits, as_inputs, load_mnist, make_splits
from src.evaluation import accuracy_and_loss, time_evaluation
from src.keras_file import read_dense_weights, write_like
from src.phases import PhaseClock
from src.plots import trained_panels, weight_histograms
from src.sparse_engine import compact_units, forward_dense
from src.stats import layer_metrics
from src.tracking import check_reachable, fail_orphans, find_runs, git_commit, owner_tags, resolve_uri, setup_experiment
from src.train_cache import INITIAL_ARTIFACT, config_hash, get_or_train

PROJECT_DIR = Path(__file__).resolve().parents[1]
Weights = tuple[list[np.ndarray], list[np.ndarray | None]]
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
    """The job's identity: its composed config minus tracking/output settings and minus the pruning settings
    its schedule, method and scope do not read (so e.g. prune.finetune.epochs does not split one-shot jobs)."""
    prune = cfg.prune
    unused = [name for name, used in (("prune.finetune.", prune.schedule != "oneshot"),
                                      ("prune.gradual.", prune.schedule == "gradual"),
                                      ("prune.iterative.", prune.schedule == "iterative"),
                                      ("prune.seed", prune.method in P.RANDOM_METHODS),
                                      ("prune.min_keep", prune.scope == "global")) if not used]
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not k.startswith((*NOT_IN_JOB_HASH, *unused))}


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


def prune_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, model_path: Path,
                  train_run_id: str, clock: PhaseClock) -> dict[str, Any]:
    """Prune the trained model in ``model_path`` as configured (one-shot, then retrained by the schedule),
    evaluate and time it, and log it all to the RUNNING prune run ``run_id``; return its metrics."""
    prune = cfg.prune
    with clock("prune"):
        kernels, biases = read_dense_weights(model_path)
        masks, pruned = P.oneshot(prune, kernels, biases)
        n_pruned = P.n_pruned_layers(prune, len(kernels))
        if model_path not in _TRAINED_STATS:
            _TRAINED_STATS[model_path] = layer_metrics(kernels)
            _TRAINED_PANELS[model_path] = trained_panels(kernels[:n_pruned])
    metrics: dict[str, float] = {}
    if prune.schedule != "oneshot":
        with clock("evaluate"):
            oneshot = evaluate_masked(*pruned, splits)[0]
        metrics |= {"oneshot_test_accuracy": oneshot["test_accuracy"], "oneshot_val_accuracy": oneshot["val_accuracy"]}
        with clock("retrain"):
            pruned = retrain_logged(cfg, splits, ctx, run_id, (kernels, biases), masks, train_run_id)
        metrics["finetune_seconds"] = clock.seconds["retrain"]
    with clock("evaluate"):
        scores, test_logits = evaluate_masked(*pruned, splits)
        metrics |= {**scores, "sparsity": M.sparsity(pruned[0][:n_pruned]),
                    **{f"layer{i}/sparsity": M.sparsity([w]) for i, w in enumerate(pruned[0], start=1)},
                    **_TRAINED_STATS[model_path]}
    engines = {"eval.engine_used": "none", "eval.latency_engine_used": "none"}
    if cfg.eval.timing != "off":
        with clock("timing"):
            timed = time_evaluation(*pruned, as_inputs(splits.x_test), cfg.eval.timing, cfg.eval.engine,
                                    cfg.eval.repeats, cfg.eval.warmup, cfg.eval.settle_s, test_logits)
        metrics.update(timed.metrics)
        engines = {"eval.engine_used": timed.engine, "eval.latency_engine_used": timed.latency_engine}
    with clock("log"):
        finish_prune_run(cfg, ctx, run_id, model_path, metrics, engines, (kernels[:n_pruned], pruned[0][:n_pruned]),
                         pruned)
    step = prune.finetune.epochs if prune.schedule != "oneshot" else 0
    ctx.client.log_batch(run_id, metrics=[Metric(n, v, _now_ms(), step) for n, v in clock.metrics().items()])
    return {"run_id": run_id, **metrics, "engine": engines["eval.engine_used"]}


def retrain_logged(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, trained: Weights,
                   masks: list[np.ndarray], train_run_id: str) -> Weights:
    """Retrain as ``prune.schedule`` says (src/retrain_run, Keras), logging each epoch to the prune run
    (step = epoch: finetune_loss, finetune_accuracy, finetune_val_loss, val_accuracy, sparsity) and a
    heartbeat; return the final pruned weights."""
    from src.retrain_run import retrain  # Keras and TensorFlow: only jobs that retrain import them

    names = {"finetune_loss": "finetune_loss", "finetune_accuracy": "finetune_accuracy",
             "val_loss": "finetune_val_loss", "val_accuracy": "val_accuracy", "sparsity": "sparsity"}

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        now = _now_ms()
        ctx.client.log_batch(run_id, metrics=[Metric(names[k], float(v), now, epoch) for k, v in logs.items()
                                              if k in names],
                             tags=[RunTag("heartbeat", f"{time.time():.0f}")])

    initial = initial_weights(ctx.client, train_run_id) if cfg.prune.schedule == "iterative" and \
        cfg.prune.iterative.rewind else None
    return retrain(cfg, splits, trained, masks, initial, on_epoch_end)


def initial_weights(client: MlflowClient, train_run_id: str) -> Weights:
    """The weights at initialisation that the train run kept (``model/initial.keras``), for rewinding."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return read_dense_weights(client.download_artifacts(train_run_id, INITIAL_ARTIFACT, tmp))
    except Exception:  # noqa: BLE001 - missing or unreadable: the run predates kept initial weights
        raise ConfigError(f"prune.iterative.rewind=true needs the initial weights of train run {train_run_id}, "
                          f"which has no readable {INITIAL_ARTIFACT} (trained before they were kept): train the "
                          "model again (e.g. another train.seed) or use prune.iterative.rewind=false") from None


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_name(cfg: DictConfig) -> str:
    """e.g. ``weight-k90-lr0.001``, ``unit-k80-lr0.001-finetune``, ``weight-k95-lr0.001-gradual-global``."""
    extra = [s for s in (cfg.prune.schedule, cfg.prune.scope) if s not in ("oneshot", "layer")]
    return "-".join([f"{cfg.prune.method}-k{k_label(cfg)}-lr{cfg.lr:g}", *extra])


def open_prune_run(cfg: DictConfig, ctx: JobContext, train_tags: dict[str, str]) -> str:
    """Create the prune run (RUNNING while the job works; ``train_tags``: job_hash, train_hash, parent run
    id) with its params and config.yaml; return its id."""
    client = ctx.client
    tags = {**ctx.tags, **cfg.run_tags, **owner_tags(), "role": "prune", **train_tags}
    run_id = client.create_run(ctx.experiment_id, run_name=run_name(cfg), tags=tags).info.run_id
    params = {**flatten(OmegaConf.to_container(cfg, resolve=True)), "prune.method": cfg.prune.method,
              "prune.k": cfg.prune.k}
    client.log_batch(run_id, params=[Param(n, str(v)[:MAX_PARAM_VAL_LENGTH]) for n, v in params.items()])
    client.log_text(run_id, OmegaConf.to_yaml(cfg), "config.yaml")
    return run_id


def finish_prune_run(cfg: DictConfig, ctx: JobContext, run_id: str, model_path: Path, metrics: dict[str, float],
                     engines: dict[str, str], histogram: tuple[list[np.ndarray], list[np.ndarray]],
                     pruned: Weights) -> None:
    """Log the job's results to its prune run: metrics (step = retraining epochs, 0 for oneshot), the engines
    used, a weight histogram, the pruned model (``model/pruned.keras``: exact zeros, no optimizer state,
    gzip-compressed weights) and, when units were deleted, the compacted model (``model/compact.keras``)."""
    client, step = ctx.client, cfg.prune.finetune.epochs if cfg.prune.schedule != "oneshot" else 0
    with tempfile.TemporaryDirectory() as tmp:
        hist = weight_histograms(Path(tmp) / "weights_pruned.png", *histogram, f"{run_name(cfg)}: weights",
                                 _TRAINED_PANELS.get(model_path))
        client.log_artifact(run_id, str(hist), "plots")
        files = [write_like(model_path, Path(tmp) / "pruned.keras", *pruned)]
        if cfg.prune.method in P.UNIT_METHODS:
            files.append(write_like(model_path, Path(tmp) / "compact.keras", *compact_units(*pruned)))
        for f in files:
            client.log_artifact(run_id, str(f), "model")
        sizes = {f"{f.stem}_model_bytes": f.stat().st_size for f in files}
    client.log_batch(run_id, metrics=[Metric(n, float(v), _now_ms(), step) for n, v in {**metrics, **sizes}.items()],
                     params=[Param(n, v) for n, v in engines.items()])


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
    run_id = open_prune_run(cfg, ctx, {"job_hash": job_hash, "train_hash": train_hash,
                                       "mlflow.parentRunId": train_run_id})
    try:
        result = prune_and_log(cfg, splits, ctx, run_id, model_path, train_run_id, clock)
    except BaseException as e:
        ctx.client.set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    ctx.client.set_terminated(run_id, "FINISHED")
    timing = (f"dense {result['dense_eval_ms']:.1f} ms vs sparse {result['sparse_eval_ms']:.1f} ms "
              f"({result['eval_speedup']:.2f}x, {result['engine']})" if cfg.eval.timing != "off" else "timing off")
    retrained = (f" (one-shot {result['oneshot_test_accuracy']:.4f}, {cfg.prune.schedule})"
                 if cfg.prune.schedule != "oneshot" else "")
    print(f"[prune] {cfg.prune.method} k={k_label(cfg)} lr={cfg.lr:g}: test_accuracy={result['test_accuracy']:.4f}"
          f"{retrained} "
          f"sparsity={result['sparsity']:.3f} {timing} in {clock.metrics()['job_seconds/total']:.1f} s")
    return result
