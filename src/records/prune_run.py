"""A prune job's MLflow record: the store it logs to, its prune run (opened RUNNING when the job starts,
finished with metrics and model files), per-epoch retraining metrics, and the train run's kept weights."""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf

from src.cli.config import ConfigError
from src.cli.model_checks import graph_layers, weighted_layer_names
from src.cli.quantize_settings import bits_by_layer, quantized
from src.engine.dense import compact_units
from src.pruning import plan as P
from src.records.model_size import network_sizes, run_sizes
from src.report.histograms import weight_histograms
from src.store import open_runs
from src.store.tracking import PROJECT_DIR, check_reachable, git_commit, owner_tags, resolve_uri, setup_experiment
from src.store.train_cache import INITIAL_ARTIFACT
from src.training.keras_file import read_weights, write_like

Weights = tuple[list[np.ndarray], list[np.ndarray | None]]
EPOCH_METRICS = {"finetune_loss": "finetune_loss", "finetune_accuracy": "finetune_accuracy",
                 "val_loss": "finetune_val_loss", "val_accuracy": "val_accuracy", "sparsity": "sparsity"}


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


_experiment_id = functools.cache(setup_experiment)  # per process: (uri, name, artifact root) -> id
_code_commit = functools.cache(git_commit)  # the code this process runs: read once


def connect(cfg: DictConfig, overrides: list[str], sweep_id: str | None) -> JobContext:
    """The job's MLflow client, experiment id and provenance tags. The experiment lookup and the git commit are
    done once per process (the later jobs of a multirun reuse them: a [skip] then costs a query or two)."""
    uri = resolve_uri(cfg.tracking.uri, Path.cwd())
    check_reachable(uri)
    experiment_id = _experiment_id(uri, cfg.tracking.experiment, Path.cwd() / cfg.tracking.artifact_root)
    commit, dirty = _code_commit(PROJECT_DIR)
    tags = {"mlflow.source.git.commit": commit, "git_commit": commit, "git_dirty": str(dirty).lower(),
            "hydra_overrides": " ".join(overrides), **({"sweep_id": sweep_id} if sweep_id else {})}
    return JobContext(MlflowClient(uri), experiment_id, tags)


def prune_line(cfg: DictConfig, result: dict[str, Any], run_id: str, seconds: float, note: str) -> str:
    """The job's ``[prune]`` line: accuracy (and the pruned model's before quantizing, the one-shot one before
    retraining), what the run made smaller (file bytes, the compact Keras model's parameters and speed), sparsity,
    timing, the run id, the job's time and ``note`` (the sweep's progress: last, a test reads it there)."""
    timing = ("timing off" if cfg.eval.timing == "off" else
              f"dense {result['dense_eval_ms']:.1f} ms ({result['engine']})" if "sparse_eval_ms" not in result else
              f"dense {result['dense_eval_ms']:.1f} ms vs sparse {result['sparse_eval_ms']:.1f} ms "
              f"({result['eval_speedup']:.2f}x, {result['engine']})")
    retrained = (f" (one-shot {result['oneshot_test_accuracy']:.4f}, {cfg.prune.schedule})"
                 if cfg.prune.schedule != "oneshot" else "")
    bits = f" {cfg.quantize.bits} bits" if cfg.quantize.get("bits") is not None else ""
    packed = (f" ({cfg.quantize.method}{bits}: pruned {result['prequant_test_accuracy']:.4f}, "
              f"{result['compressed_file_bytes']:,.0f} B, {result['compression_ratio']:.1f}x)"
              if quantized(cfg) else "")
    compact = (f" (compact model: {result['params_kept']:.0%} of the parameters, {result['keras_eval_speedup']:.2f}x "
               "in Keras, model/compact.keras)" if "keras_eval_speedup" in result and "params_kept" in result else "")
    return (f"[prune] {cfg.prune.method} k={k_label(cfg)} lr={cfg.lr:g}: test_accuracy={result['test_accuracy']:.4f}"
            f"{packed}{retrained}{compact} sparsity={result['sparsity']:.3f} {timing}; run {run_id}; "
            f"in {seconds:.1f} s{note}")


def k_label(cfg: DictConfig) -> str:
    """'90' for a global k, '[90,80,50,10]' for per-layer k, '[conv1=34,dense1=92]' for k by layer name."""
    by_name = P.layer_k_by_name(cfg.prune)
    if by_name is not None:
        return "[" + ",".join(f"{n}={v:g}" for n, v in by_name.items()) + "]"
    if cfg.prune.layer_k is not None:
        return "[" + ",".join(f"{v:g}" for v in cfg.prune.layer_k) + "]"
    return f"{cfg.prune.k:g}"


def now_ms() -> int:
    return int(time.time() * 1000)


def epoch_logger(ctx: JobContext, run_id: str):
    """``on_epoch_end(epoch, logs)`` that logs a retraining epoch to the prune run (step = epoch:
    finetune_loss, finetune_accuracy, finetune_val_loss, val_accuracy, sparsity) with a heartbeat tag."""
    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        now = now_ms()
        ctx.client.log_batch(run_id, metrics=[Metric(EPOCH_METRICS[k], float(v), now, epoch)
                                              for k, v in logs.items() if k in EPOCH_METRICS],
                             tags=[RunTag("heartbeat", f"{time.time():.0f}")])
    return on_epoch_end


def initial_weights(client: MlflowClient, train_run_id: str) -> Weights:
    """The weights at initialisation that the train run kept (``model/initial.keras``), for rewinding."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return read_weights(client.download_artifacts(train_run_id, INITIAL_ARTIFACT, tmp))[:2]
    except Exception:  # noqa: BLE001 - missing or unreadable: the run predates kept initial weights
        raise ConfigError(f"prune.iterative.rewind=true needs the initial weights of train run {train_run_id}, "
                          f"which has no readable {INITIAL_ARTIFACT} (trained before they were kept): train the "
                          "model again (e.g. another train.seed) or use prune.iterative.rewind=false") from None


def run_name(cfg: DictConfig, metrics: dict[str, float] | None = None) -> str:
    """e.g. ``weight-k90-lr0.001``, ``unit-k80-lr0.001-finetune``, ``weight-k95-lr0.001-gradual-global``,
    ``unit-k50-lr0.001-taylor`` (a criterion but the method's default); a search
    trial (``run_tags.trial``): ``trial-007-weight``, and once ``metrics`` are known
    ``trial-007-weight-sp0.912-acc0.9781`` (sparsity, val accuracy)."""
    if "trial" in cfg.run_tags:
        name = f"trial-{int(cfg.run_tags.trial):03d}-{cfg.prune.method}"
        if metrics and "sparsity" in metrics and "val_accuracy" in metrics:
            name += f"-sp{metrics['sparsity']:.3f}-acc{metrics['val_accuracy']:.4f}"
        return name
    extra = [s for s in (cfg.prune.schedule, cfg.prune.scope) if s not in ("oneshot", "layer")]
    extra += [cfg.prune.criterion] if P.custom_criterion(cfg.prune) else []
    return "-".join([f"{cfg.prune.method}-k{k_label(cfg)}-lr{cfg.lr:g}", *extra])


def prune_params(cfg: DictConfig) -> dict[str, str]:
    """The prune run's params, as MLflow stores them: the composed config flattened, ``prune.k_mean`` (the mean
    of a per-layer k, so that such runs sit at a k in charts and tables); of ``quantize`` its method, and when the job
    quantizes its settings with ``quantize.layer_bits`` and ``quantize.bits_used`` (the bits of each layer) as JSON."""
    params = {**flatten(OmegaConf.to_container(cfg, resolve=True)), "prune.method": cfg.prune.method,
              "prune.k": cfg.prune.k}
    layer_k = P.normalized_layer_k(cfg.prune)
    graph = graph_layers(cfg.model, cfg.prune.embeddings)
    if layer_k is not None:  # one param, floats: [90.0, 80.0] or {"conv1": 34.0, ...}
        params = {k: v for k, v in params.items() if not k.startswith("prune.layer_k")}
        params["prune.layer_k"] = json.dumps(layer_k) if isinstance(layer_k, dict) else str(layer_k)
        if graph is not None:
            ks = P.graph_k(cfg.prune, graph.tensors, graph.outputs)
            params["prune.k_mean"] = sum(ks.values()) / max(len(ks), 1)
        else:
            names = weighted_layer_names(cfg.model)
            params["prune.k_mean"] = P.mean_k(cfg.prune, P.n_pruned_layers(cfg.prune, len(names), names), names)
    params = {k: v for k, v in params.items() if not k.startswith("quantize.")}  # a budget's bits: in bits_used
    params["quantize.method"] = cfg.quantize.method
    if quantized(cfg):
        q = cfg.quantize
        params |= {"quantize.bits": q.bits, "quantize.per_channel": q.per_channel, "quantize.index_bits": q.index_bits,
                   "quantize.coder": q.coder, "quantize.layer_bits": json.dumps(dict(q.layer_bits or {})),
                   # the bits each layer got (layer_bits, else bits, else the budget's, else 8)
                   "quantize.bits_used": json.dumps(bits_by_layer(q, weighted_layer_names(cfg.model)))}
    if graph is not None and cfg.prune.method not in P.UNIT_METHODS:  # Keras runs it: what is kept whole, and why
        # (a unit job removes groups: src/records/structured_prune logs prune.kept_groups instead)
        params["prune.kept_layers"] = "; ".join([*graph.kept, *(f"{n}: an output layer" for n in graph.outputs
                                                                  if not cfg.prune.prune_last)]) or "none"
    return {name: str(value) for name, value in params.items()}


def open_prune_run(cfg: DictConfig, ctx: JobContext, train_tags: dict[str, str]) -> str:
    """Create the prune run (RUNNING while the job works; ``train_tags``: job_hash, train_hash, parent run
    id) with its params and config.yaml; return its id."""
    client = ctx.client
    tags = {**ctx.tags, **cfg.run_tags, **owner_tags(), "role": "prune", **train_tags}
    run = client.create_run(ctx.experiment_id, run_name=run_name(cfg), tags=tags)
    run_id = open_runs.opened(client, run.info.run_id)
    client.log_batch(run_id, params=[Param(n, v[:MAX_PARAM_VAL_LENGTH]) for n, v in prune_params(cfg).items()])
    client.log_text(run_id, OmegaConf.to_yaml(cfg), "config.yaml")
    return run_id


@dataclass
class PruneArtifacts:
    """The prune run's files by artifact directory and its model sizes (bytes), filled by the tasks of
    :func:`artifact_tasks` as they run."""

    files: dict[str, list[Path]] = field(default_factory=lambda: {"plots": [], "model": []})
    sizes: dict[str, int] = field(default_factory=dict)


def artifact_tasks(cfg: DictConfig, folder: Path, model_path: Path,
                   histogram: tuple[list[np.ndarray], list[np.ndarray]], pruned: Weights, panels: list | None = None,
                   mlp: bool = True) -> tuple[PruneArtifacts, list[Callable[[], None]]]:
    """The work of writing the prune run's files into ``folder`` and measuring its sizes, as single-threaded tasks
    (a prune job runs them while its batched timing lets the cores settle: src/engine/timing.IdleWork), what they fill
    in: a weight histogram, and, as ``tracking.save_pruned`` says, the pruned model (``model/pruned.keras``: exact
    zeros, no optimizer state, gzip-compressed weights) and, when units were deleted, the compacted model
    (``model/compact.keras``); the sizes of src/records/model_size (gzip only with ``tracking.gzip_size``) and of
    the files written. ``panels``: the trained weights' histogram panels (src/report/histograms.trained_panels),
    if already drawn. ``mlp``: the model is an MLP (compact.keras is written for MLPs; other nets' sparse size is
    file version 2)."""
    out = PruneArtifacts()
    title = f"{run_name(cfg)}: weights"

    def draw() -> None:
        out.files["plots"].append(weight_histograms(folder / "weights_pruned.png", *histogram, title, panels))

    def save_models() -> None:
        files = [write_like(model_path, folder / "pruned.keras", *pruned)]
        if cfg.prune.method in P.UNIT_METHODS and mlp:
            files.append(write_like(model_path, folder / "compact.keras", *compact_units(*pruned)))
        out.files["model"] += files
        out.sizes |= {f"{f.stem}_model_bytes": f.stat().st_size for f in files}

    def measure() -> None:
        out.sizes |= (run_sizes(model_path, *pruned, gzip=cfg.tracking.gzip_size) if mlp
                      else network_sizes(model_path, *pruned))

    save = cfg.tracking.save_pruned
    saving = save == "all" or (save == "retrained" and cfg.prune.schedule != "oneshot")
    return out, [draw, *([save_models] if saving else []), measure]


def finish_prune_run(cfg: DictConfig, ctx: JobContext, run_id: str, metrics: dict[str, float],
                     engines: dict[str, str], artifacts: PruneArtifacts) -> None:
    """Log the job's results to its prune run: the files of :func:`artifact_tasks`, metrics with the model sizes
    (step = retraining epochs, 0 for oneshot) and the engines used."""
    client, step = ctx.client, cfg.prune.finetune.epochs if cfg.prune.schedule != "oneshot" else 0
    for folder, files in artifacts.files.items():
        for f in files:
            client.log_artifact(run_id, str(f), folder)
    client.log_batch(run_id, metrics=[Metric(n, float(v), now_ms(), step)
                                      for n, v in {**metrics, **artifacts.sizes}.items()],
                     params=[Param(n, v) for n, v in engines.items()])
