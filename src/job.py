"""One Hydra job: get the trained model (cache or train), prune it (and retrain it), evaluate, time, log.

A job on a cached model imports neither TensorFlow nor Keras: it reads the weights from the model file
(src/training/keras_file), evaluates with numpy (src/engine/evaluation) and writes its model artifacts the same
way. Only training (src/records/train_run) and retraining (src/records/retrain_run) import Keras. The prune run's
MLflow record is src/records/prune_run. Each phase's wall time is logged as ``job_seconds/<phase>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf

from src.cli.config import model_keys, validate
from src.cli.model_checks import weighted_layer_names
from src.cli.phases import PhaseClock
from src.cli.quantize_settings import identity as quantize_identity
from src.cli.quantize_settings import quantized
from src.cli.sweep import SweepJob
from src.engine.timing import IdleWork
from src.pruning import masks as M
from src.pruning import plan as P
from src.pruning.stats import WEIGHTS_PREFIX, layer_metrics
from src.records.prune_run import (
    JobContext,
    Weights,
    artifact_tasks,
    connect,
    epoch_logger,
    finish_prune_run,
    flatten,
    initial_weights,
    now_ms,
    open_prune_run,
    prune_line,
    prune_params,
    run_name,
)
from src.records.pruned_eval import evaluator
from src.records.quantize_run import WEIGHTS_FROM_TAG, WEIGHTS_HASH_TAG, quantize_and_score, twin_weights
from src.report.histograms import trained_panels
from src.report.sweep_live import job_finished
from src.store import open_runs
from src.store.tracking import fail_orphans, find_runs
from src.store.train_cache import config_hash, get_or_train
from src.training.data import Splits, file_sha256, load_mnist, make_splits
from src.training.keras_file import graph_reason, read_weights

NOT_IN_JOB_HASH = ("tracking", "train.verbose")
# Settings added after models and jobs were cached: at these values they are left out of both identities, so
# what was cached before them is still found
ADDED_DEFAULTS = {"train.lr_schedule": "constant", "prune.embeddings": False, "prune.criterion": None}
# Per model file, what is the same for every job of that model: its layer metrics and histogram panels
_TRAINED_STATS: dict[Path, dict[str, float]] = {}
_TRAINED_PANELS: dict[Path, list] = {}


def _without_added_defaults(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``settings`` (keys below ``prefix``) without those at their ADDED_DEFAULTS value."""
    missing = object()
    return {k: v for k, v in settings.items() if ADDED_DEFAULTS.get(f"{prefix}{k}", missing) != v}


def training_payload(cfg: DictConfig, data_fingerprint: str) -> dict[str, Any]:
    """Everything training depends on, and nothing else (not pruning, not test size): the model settings its
    kind reads (src/cli/config.model_keys; a user's file by its SHA-256), optimizer, lr, train, data.
    Settings at their ADDED_DEFAULTS value do not count."""
    c = OmegaConf.to_container(cfg, resolve=True)
    model = {k: v for k, v in c["model"].items() if k in model_keys(cfg.model)}
    if cfg.model.name == "keras":
        model["path"] = file_sha256(Path(cfg.model.path).expanduser())
    return {
        "lr": c["lr"], "model": model, "optimizer": c["optimizer"],
        "train": _without_added_defaults({k: v for k, v in c["train"].items() if k != "verbose"}, "train."),
        "data": {"fingerprint": data_fingerprint, "train_size": c["data"]["train_size"],
                 "val_fraction": c["data"]["val_fraction"]},
    }


def job_payload(cfg: DictConfig) -> dict[str, Any]:
    """The job's identity: its composed config minus tracking/output settings, minus the model settings its kind
    does not read, and minus the pruning settings its schedule, method and scope do not read (so e.g.
    prune.finetune.epochs does not split one-shot jobs); the quantize settings only when it quantizes
    (src/cli/quantize_settings.identity)."""
    unused = P.unused_settings(cfg.prune.schedule, cfg.prune.method, cfg.prune.scope)
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    if not P.custom_criterion(cfg.prune):
        flat["prune.criterion"] = None  # the method's default, given by name: the same job as leaving it null
    used_model = {f"model.{k}" for k in model_keys(cfg.model)}
    payload = {k: v for k, v in _without_added_defaults(flat).items()
               if not k.startswith((*NOT_IN_JOB_HASH, *unused, "quantize."))
               and (not k.startswith("model.") or k in used_model)}
    if quantized(cfg):
        payload |= quantize_identity(cfg.quantize, weighted_layer_names(cfg.model))
    if cfg.prune.layer_k is not None:
        payload = {k: v for k, v in payload.items() if not k.startswith("prune.layer_k")}
        layer_k = P.normalized_layer_k(cfg.prune)
        payload |= ({f"prune.layer_k.{n}": v for n, v in layer_k.items()} if isinstance(layer_k, dict)
                    else {"prune.layer_k": layer_k})
    if cfg.prune.method in P.UNIT_METHODS and cfg.model.name == "keras" and _keras_runs(cfg.model.path):
        payload["prune.unit"] = "groups"  # since issue 28 a graph's unit job removes dependency groups: not a cache hit
    schedule = cfg.prune.schedule
    if schedule != "oneshot" and cfg.prune.finetune.lr is None \
            and P.RETRAIN_LR_FRACTION[schedule] != P.LEGACY_RETRAIN_LR_FRACTION:
        payload["prune.finetune.lr"] = P.retrain_lr(schedule, cfg.lr, None)  # null meant lr/10 before
    return payload


def weights_hash(cfg: DictConfig) -> str:
    """What a prune job's pruned (and retrained) weights depend on: its identity without the quantize and eval
    settings, which do not change them. Every prune run carries it (tag WEIGHTS_HASH_TAG), so a quantized job finds a
    run that retrained the same pruning whatever it timed."""
    return config_hash({k: v for k, v in job_payload(cfg).items() if not k.startswith(("quantize.", "eval."))})


def twin_hash(cfg: DictConfig) -> str:
    """The job hash of a quantized job's unquantized twin (the same settings, quantize=none): how a twin run before
    the weights_hash tag is found."""
    return config_hash({k: v for k, v in job_payload(cfg).items() if not k.startswith("quantize.")})


def _keras_runs(path: str) -> bool:
    """Whether a user's model file is one only Keras runs (src/training/keras_file.graph_reason); False if unreadable
    (the model checks report that)."""
    try:
        return graph_reason(Path(path).expanduser()) is not None
    except Exception:  # noqa: BLE001 - the model checks report an unreadable file before any job runs
        return False


def given_trained(cfg: DictConfig) -> bool:
    """Whether the job's model is a user's file used as trained (``model.trained=true``): logged, not trained."""
    return cfg.model.name == "keras" and bool(cfg.model.trained)


def train_run_name(cfg: DictConfig) -> str:
    """A train run's name from the settings people compare, e.g. ``train-lr0.001-adam-e10-s0``; a user's trained
    file: ``trained-file-<its name>``."""
    if given_trained(cfg):
        return f"trained-file-{Path(str(cfg.model.path)).stem}"
    cosine = "-cosine" if cfg.train.lr_schedule == "cosine" else ""
    return f"train-lr{cfg.lr:g}-{cfg.optimizer.name}-e{cfg.train.epochs}{cosine}-s{cfg.train.seed}"


def trained_model(cfg: DictConfig, splits: Splits, ctx: JobContext) -> tuple[str, Path, str]:
    """(train run id, local model file, train hash): the cached model of this training config, trained here
    if no run has it."""
    payload = training_payload(cfg, splits.fingerprint)
    train_hash = config_hash(payload)

    def train_in_run(run_id: str) -> None:
        from src.records.train_run import train_and_log  # Keras and TensorFlow: only when a model must be trained

        train_and_log(cfg, splits, ctx.client, run_id, flatten(payload))

    run_id, path = get_or_train(ctx.client, ctx.experiment_id, train_hash, train_in_run, {**ctx.tags},
                                cfg.tracking.stale_after_s, run_name=train_run_name(cfg),
                                doing=f"logging {cfg.model.path} as trained (nothing is trained)"
                                if given_trained(cfg) else "training it")
    return run_id, path, train_hash


def prune_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, model_path: Path,
                  train_run_id: str, clock: PhaseClock) -> dict[str, Any]:
    """Prune the trained model in ``model_path`` as configured (one-shot, then retrained by the schedule),
    evaluate and time it, and log it all to the RUNNING prune run ``run_id``; return its metrics. A model only
    Keras runs, or ranked by a criterion that reads gradients or activations, goes to src/records/graph_prune, a unit
    job on one to src/records/structured_prune (whole dependency groups; a chain's default l2 units stay here)."""
    reason = graph_reason(model_path) or (f"prune.criterion={cfg.prune.criterion}"
                                          if P.custom_criterion(cfg.prune) else None)
    if reason is not None and cfg.prune.method in P.UNIT_METHODS:  # whole dependency groups: a smaller model
        from src.records.structured_prune import prune_structured_and_log

        result = prune_structured_and_log(cfg, splits, ctx, run_id, model_path, train_run_id, clock, reason)
    elif reason is not None:  # a graph, a nested model, a layer the chain reader lacks, or a criterion that reads
        # gradients or activations: Keras runs it
        from src.records.graph_prune import prune_graph_and_log

        result = prune_graph_and_log(cfg, splits, ctx, run_id, model_path, train_run_id, clock, reason)
    else:
        result = _prune_chain_and_log(cfg, splits, ctx, run_id, model_path, train_run_id, clock)
    step = cfg.prune.finetune.epochs if cfg.prune.schedule != "oneshot" else 0
    ctx.client.log_batch(run_id, metrics=[Metric(n, v, now_ms(), step) for n, v in clock.metrics().items()])
    return result


def _prune_chain_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, model_path: Path,
                         train_run_id: str, clock: PhaseClock) -> dict[str, Any]:
    """:func:`prune_and_log` for a chain the numpy engine runs (read without Keras)."""
    prune = cfg.prune
    with clock("prune"):
        kernels, biases, names = read_weights(model_path)
        masks, pruned = P.oneshot(prune, kernels, biases, names)
        n_pruned = P.n_pruned_layers(prune, len(kernels), names)
        model = evaluator(model_path)
        if model_path not in _TRAINED_STATS:
            _TRAINED_STATS[model_path] = layer_metrics(kernels)
            _TRAINED_PANELS[model_path] = trained_panels(kernels)  # all layers: jobs differ in prune_last
    metrics: dict[str, float] = {}
    if prune.schedule != "oneshot":
        with clock("evaluate"):
            oneshot = model.scores(pruned, splits)[0]
        metrics |= {"oneshot_test_accuracy": oneshot["test_accuracy"], "oneshot_val_accuracy": oneshot["val_accuracy"]}
        twin = (twin_weights(ctx.client, ctx.experiment_id, weights_hash(cfg), twin_hash(cfg), train_run_id)
                if quantized(cfg) else None)
        if twin is None:
            with clock("retrain"):
                pruned = retrain_logged(cfg, splits, ctx, run_id, model_path, masks, train_run_id)
            metrics["finetune_seconds"] = clock.seconds["retrain"]
        else:  # the same pruning retrained by a finished run: its weights, no retraining
            pruned = twin[0]
        if quantized(cfg):
            ctx.client.set_tag(run_id, WEIGHTS_FROM_TAG, "retrained" if twin is None else twin[1])
    with clock("evaluate"):
        scores, test_logits = model.scores(pruned, splits)
        metrics |= {**scores, "sparsity": M.sparsity(pruned[0][:n_pruned]),
                    **{f"{WEIGHTS_PREFIX}layer{i}/sparsity": M.sparsity([w]) for i, w in enumerate(pruned[0], start=1)},
                    "k_percent": P.mean_k(prune, n_pruned, names),
                    "sparsity_percent": 100 * M.sparsity(pruned[0][:n_pruned]), **_TRAINED_STATS[model_path]}
    run_weights, q = pruned, None  # what is timed: the quantized network, when the job quantizes
    if quantized(cfg):
        with clock("quantize"):
            q = quantize_and_score(cfg, model, pruned, scores, splits, names)
        metrics |= q.metrics
        run_weights, test_logits = q.weights, q.test_logits
    engines = {"eval.engine_used": "none", "eval.latency_engine_used": "none"}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts, tasks = artifact_tasks(cfg, Path(tmp), model_path, (kernels[:n_pruned], pruned[0][:n_pruned]),
                                          pruned, _TRAINED_PANELS[model_path][:n_pruned], mlp=model.is_mlp)
        work = IdleWork(tasks)  # the run's files are written while the batched timing lets the cores settle
        if cfg.eval.timing != "off":
            with clock("timing"):
                timed, engines = model.timing(run_weights, splits, cfg.eval, test_logits, idle=work)
            metrics.update(timed)
        with clock("log"):
            work.finish()
            if q is not None:
                artifacts.files["model"].append(q.write(Path(tmp)))
            finish_prune_run(cfg, ctx, run_id, metrics, engines, artifacts)
    return {"run_id": run_id, **metrics, "engine": engines["eval.engine_used"]}


def retrain_logged(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, model_path: Path,
                   masks: list[np.ndarray], train_run_id: str) -> Weights:
    """Retrain as ``prune.schedule`` says (src/records/retrain_run, Keras), each epoch logged to the prune run; return
    the final pruned weights."""
    from src.records.retrain_run import retrain  # Keras and TensorFlow: only jobs that retrain import them

    rewind = cfg.prune.schedule == "iterative" and cfg.prune.iterative.rewind
    initial = initial_weights(ctx.client, train_run_id) if rewind else None
    return retrain(cfg, splits, model_path, masks, initial, epoch_logger(ctx, run_id))


def progress(ctx: JobContext, sweep: SweepJob | None, params: dict[str, str], metrics: dict[str, Any],
             seconds: float) -> str:
    """`` (n/N, ETA ...)`` for the job's line when it is one of a sweep's (which it adds to the sweep run,
    src/report/sweep_live), else ""."""
    note = job_finished(ctx.client, ctx.experiment_id, sweep, params, metrics, seconds) if sweep else ""
    return f" {note}" if note else ""


def run_job(cfg: DictConfig, overrides: list[str], sweep: SweepJob | None = None) -> dict[str, Any]:
    """The whole job; returns the prune run's metrics (or the finished run's, when skipped).

    ``sweep``: the multirun this job is one of; its id tags the prune run (a skipped job's earlier run is re-tagged
    with the new sweep), and the job adds itself to its sweep run."""
    clock = PhaseClock()
    validate(cfg)
    sweep_id = sweep.sweep_id if sweep else None
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
        note = progress(ctx, sweep, done[-1].data.params, m, clock.metrics()["job_seconds/total"])
        print(f"[skip] {' '.join(overrides) or 'defaults'}: already finished as run {done[-1].info.run_id} "
              f"(test_accuracy={m.get('test_accuracy', float('nan')):.4f}); tracking.force=true re-runs it{note}",
              flush=True)
        return {"run_id": done[-1].info.run_id, **m, "skipped": True}
    with clock("data"):
        splits = make_splits(*load_mnist(cfg.data.source, cfg.data.path), cfg.data.train_size,
                             cfg.data.test_size, cfg.data.val_fraction)
    with clock("model"):
        train_run_id, model_path, train_hash = trained_model(cfg, splits, ctx)
    run_id = open_prune_run(cfg, ctx, {"job_hash": job_hash, "train_hash": train_hash,
                                       "mlflow.parentRunId": train_run_id,
                                       WEIGHTS_HASH_TAG: weights_hash(cfg)})
    try:
        result = prune_and_log(cfg, splits, ctx, run_id, model_path, train_run_id, clock)
    except BaseException as e:
        open_runs.close(ctx.client, run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    open_runs.close(ctx.client, run_id, "FINISHED")
    if "trial" in cfg.run_tags:  # a search trial's name carries its result
        ctx.client.update_run(run_id, name=run_name(cfg, result))
    seconds = clock.metrics()["job_seconds/total"]
    note = progress(ctx, sweep, prune_params(cfg), result, seconds)
    print(prune_line(cfg, result, run_id, seconds, note), flush=True)
    return result
