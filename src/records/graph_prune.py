"""A prune job on a model that only Keras runs: a Functional graph (residual adds, concatenations, shared inputs),
a nested model (a ``keras.applications`` backbone), or layers other than Dense and Conv2D (depthwise and separable
convs, attention, RNNs; src/training/keras_graph has the table).

The same stages as src/job.prune_and_log, on the model's prunable tensors (src/pruning/tensors): one-shot masks
(method, scope, random baseline, ``prune.layer_k`` by layer or tensor name), retraining with every mask held
(src/records/retrain_run.retrain_graph), evaluation and timing through Keras's ``predict`` (the dense Keras forward
pass: ``dense_eval_ms``; ``eval.engine_used=keras (<why>)``), the weight histogram, per-tensor metrics
(``weights/<tensor>/...``) and ``model/pruned.keras`` written by Keras itself. The job imports Keras (~7 s per
process) and loads the model once per process.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from src.cli.phases import PhaseClock
from src.engine.evaluation import accuracy_and_loss
from src.pruning import masks as M
from src.pruning import plan as P
from src.pruning import tensors as T
from src.pruning.stats import WEIGHTS_PREFIX, layer_metrics
from src.records.prune_run import JobContext, PruneArtifacts, epoch_logger, finish_prune_run, run_name
from src.records.pruned_eval import median_ms
from src.report.histograms import weight_histograms
from src.store.train_cache import INITIAL_ARTIFACT
from src.training.data import Splits
from src.training.keras_graph import GraphModel, arrays_of, load_graph, state_with
from src.training.weight_stats import ranked_mask_fn

PREDICT_BATCH = 500


@functools.cache
def cached_graph(model_path: Path, embeddings: bool) -> tuple[GraphModel, list[np.ndarray]]:
    """The model file's graph (loaded once per process) and its trained state (every variable)."""
    graph = load_graph(model_path, embeddings)
    return graph, graph.model.get_weights()


def logits(graph: GraphModel, state: list[np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """The model's logits for raw ``pixels`` with every variable set to ``state``."""
    graph.model.set_weights(state)
    return np.asarray(graph.model.predict(pixels, batch_size=PREDICT_BATCH, verbose=0), dtype=np.float32)


def scores(graph: GraphModel, state: list[np.ndarray], splits: Splits) -> tuple[dict[str, float], np.ndarray]:
    """(test accuracy and loss, validation accuracy (NaN without a validation split)), test logits."""
    test = logits(graph, state, splits.x_test)
    accuracy, loss = accuracy_and_loss(test, splits.y_test)
    val = (accuracy_and_loss(logits(graph, state, splits.x_val), splits.y_val)[0] if len(splits.x_val)
           else float("nan"))
    return {"test_accuracy": accuracy, "test_loss": loss, "val_accuracy": val}, test


def tensor_metrics(graph: GraphModel, arrays: list[np.ndarray], indices: list[int], stats: bool) -> dict[str, float]:
    """``weights/<tensor>/sparsity`` of the tensors at ``indices``, or with ``stats`` their weight statistics."""
    names = [graph.tensors[i].name for i in indices]
    if stats:
        return layer_metrics([arrays[i] for i in indices], names=names)
    return {f"{WEIGHTS_PREFIX}{n}/sparsity": M.sparsity([arrays[i]]) for n, i in zip(names, indices, strict=True)}


def prune_graph_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, model_path: Path,
                        train_run_id: str, clock: PhaseClock, reason: str) -> dict[str, Any]:
    """:func:`src.job.prune_and_log` for a model only Keras runs (``reason``: why); returns the run's metrics."""
    prune = cfg.prune
    with clock("prune"):
        graph, trained = cached_graph(model_path, prune.embeddings)
        arrays = arrays_of(graph, trained)
        graph.model.set_weights(trained)  # a criterion reads the model: an earlier job left its state in it
        mask_fn = ranked_mask_fn(graph, prune, splits.x_train, splits.y_train)
        masks = mask_fn(arrays, P.graph_configured_k(prune, graph.tensors, graph.outputs))
        pruned_idx = P.graph_pruned_tensors(prune, graph.tensors, graph.outputs)
        state = state_with(graph, trained, T.apply(arrays, masks))
    metrics: dict[str, float] = {}
    if prune.schedule != "oneshot":
        with clock("evaluate"):
            oneshot = scores(graph, state, splits)[0]
        metrics |= {"oneshot_test_accuracy": oneshot["test_accuracy"], "oneshot_val_accuracy": oneshot["val_accuracy"]}
        with clock("retrain"):
            state = _retrain(cfg, splits, ctx, run_id, model_path, masks, train_run_id, pruned_idx)
        metrics["finetune_seconds"] = clock.seconds["retrain"]
    pruned = arrays_of(graph, state)
    with clock("evaluate"):
        found, _ = scores(graph, state, splits)
        ks = P.graph_k(prune, graph.tensors, graph.outputs)
        kept = [pruned[i] for i in pruned_idx]
        metrics |= {**found, "sparsity": M.sparsity(kept), "sparsity_percent": 100 * M.sparsity(kept),
                    "k_percent": float(np.mean(list(ks.values()))) if ks else 0.0,
                    **tensor_metrics(graph, pruned, pruned_idx, stats=False),
                    **tensor_metrics(graph, arrays, pruned_idx, stats=True)}
    engine = f"keras ({reason})"
    engines = {"eval.engine_used": engine, "eval.latency_engine_used": engine}
    if cfg.eval.timing != "off":
        with clock("timing"):
            metrics["dense_eval_ms"] = median_ms(lambda: logits(graph, state, splits.x_test), cfg.eval.repeats)
    with tempfile.TemporaryDirectory() as tmp, clock("log"):
        artifacts = write_artifacts(cfg, Path(tmp), graph, state, model_path, [arrays[i] for i in pruned_idx], kept,
                                     [graph.tensors[i].name for i in pruned_idx])
        finish_prune_run(cfg, ctx, run_id, metrics, engines, artifacts)
    return {"run_id": run_id, **metrics, "engine": engine}


def _retrain(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, model_path: Path,
             masks: list[np.ndarray], train_run_id: str, pruned_idx: list[int]) -> list[np.ndarray]:
    from src.records.retrain_run import retrain_graph  # Keras training: only jobs that retrain

    rewind = cfg.prune.schedule == "iterative" and cfg.prune.iterative.rewind
    initial = _initial_arrays(ctx, train_run_id, cfg.prune.embeddings) if rewind else None
    return retrain_graph(cfg, splits, model_path, masks, initial, pruned_idx, epoch_logger(ctx, run_id))


def _initial_arrays(ctx: JobContext, train_run_id: str, embeddings: bool) -> list[np.ndarray]:
    """The prunable tensors at initialisation (the train run's ``model/initial.keras``), for rewinding."""
    from src.cli.config import ConfigError

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return load_graph(ctx.client.download_artifacts(train_run_id, INITIAL_ARTIFACT, tmp), embeddings).arrays()
    except Exception:  # noqa: BLE001 - missing or unreadable: a user's trained file has no initial weights
        raise ConfigError(f"prune.iterative.rewind=true needs the initial weights of train run {train_run_id}, "
                          f"which has no readable {INITIAL_ARTIFACT} (a model given as trained has none): use "
                          "prune.iterative.rewind=false, or model.trained=false to train it here") from None


def write_artifacts(cfg: DictConfig, folder: Path, graph: GraphModel, state: list[np.ndarray], model_path: Path,
                     before: list[np.ndarray], after: list[np.ndarray], names: list[str]) -> PruneArtifacts:
    """The weight histogram of the pruned tensors and, as ``tracking.save_pruned`` says, ``pruned.keras`` (Keras's
    own file: plain ``keras.models.load_model`` opens it); their sizes."""
    out = PruneArtifacts()
    out.files["plots"].append(weight_histograms(folder / "weights_pruned.png", before, after,
                                                f"{run_name(cfg)}: weights", names=names))
    out.sizes["dense_file_bytes"] = model_path.stat().st_size
    save = cfg.tracking.save_pruned
    if save == "all" or (save == "retrained" and cfg.prune.schedule != "oneshot"):
        graph.model.set_weights(state)
        path = folder / "pruned.keras"
        graph.model.save(path)
        out.files["model"].append(path)
        out.sizes["pruned_model_bytes"] = path.stat().st_size
    return out
