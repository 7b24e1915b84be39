"""A structural prune job (``prune=unit`` or ``random_unit`` on a model only Keras runs, or any unit criterion but
the default): whole dependency groups removed, so the model gets smaller and faster in Keras itself.

Stages: the model's channel graph and its groups (src/training/channel_graph, src/pruning/groups); each group scored
by ``prune.criterion`` (src/training/channel_stats, src/pruning/importance) and k% of each family removed (or of all,
``prune.scope=global``: src/pruning/structured); the masked model (every slice of a removed group 0: kernels' outputs
and inputs, biases, BatchNormalization's parameters) and the compact model (src/training/compact) from it. Then
retraining: ``finetune`` trains the compact model itself (nothing to mask; its lr along a cosine when training's
was); ``gradual`` and ``iterative`` train the masked model, groups re-ranked at every step of the schedule, every
slice held at 0. Then evaluation, the compact model's cost (``params_kept``, ``macs_kept``,
``compact_model_bytes``) and its speed against the original in Keras (``keras_latency_speedup`` at batch 1,
``keras_eval_speedup`` at :data:`EVAL_BATCH`), ``model/pruned.keras`` and ``model/compact.keras``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig

from src.cli.phases import PhaseClock
from src.pruning import masks as M
from src.pruning import plan as P
from src.pruning import structured as S
from src.pruning.groups import Group, groups
from src.pruning.importance import group_scores
from src.pruning.tensors import item_of
from src.records.graph_prune import PREDICT_BATCH, cached_graph, logits, scores, tensor_metrics, write_artifacts
from src.records.prune_run import JobContext, PruneArtifacts, epoch_logger, finish_prune_run
from src.records.pruned_eval import median_ms
from src.training.channel_graph import channel_graph
from src.training.channel_stats import slice_stats
from src.training.compact import compact, expand, mask, variable_masks
from src.training.data import Splits
from src.training.keras_graph import GraphModel, arrays_of
from src.training.keras_timing import time_pair
from src.training.model_cost import macs

logging.getLogger("tensorflow").setLevel(logging.ERROR)  # "triggered tf.function retracing": each model traces once

EVAL_BATCH = 256  # keras_eval_speedup: the batch the target names
TAYLOR_BATCH = 512  # training examples the taylor criterion's gradient is taken over
TIMING_ROUNDS = 5


class GroupPlan:
    """A model's dependency groups, their families and how each family's k is set; :meth:`removed` chooses."""

    def __init__(self, model: keras.Model, prune: DictConfig, splits: Splits) -> None:
        self.model, self.prune, self.splits = model, prune, splits
        nodes, outputs = channel_graph(model)
        self.groups: list[Group] = groups(nodes, outputs)
        self.families = S.families(self.groups)
        self.names = [S.family_name(self.groups, f) for f in self.families]
        self.k = [self._family_k(f) for f in self.families]

    def _family_k(self, family: list[int]) -> float:
        """``prune.layer_k`` for a producer of the family (the longest name that covers one), else ``prune.k``."""
        by_name = P.layer_k_by_name(self.prune) or {}
        for node, _ in self.groups[family[0]].producers():
            key = item_of(node, by_name)
            if key is not None:
                return by_name[key]
        return float(self.prune.k)

    def scores(self) -> np.ndarray:
        """The groups' scores under the job's criterion, from the model's current weights."""
        if self.prune.method == "random_unit":
            return S.random_scores(len(self.groups), self.prune.seed)
        criterion = P.criterion(self.prune)
        batch = lambda: (self.splits.x_train[:TAYLOR_BATCH], self.splits.y_train[:TAYLOR_BATCH])  # noqa: E731
        return group_scores(self.groups, slice_stats(self.model, criterion, batch), criterion)

    def removed(self, k: float | list[float] | None = None) -> list[Group]:
        """The groups removed at ``k`` (one for all families, one per family, or None: the configured k)."""
        ks = self.k if k is None else list(k) if not np.isscalar(k) else [float(k)] * len(self.families)
        s = self.scores()
        if self.prune.scope == "global":
            chosen = S.removed_globally(s, self.families, ks[0], self.prune.min_keep)
        else:
            chosen = S.removed_by_family(s, self.families, ks)
        return [self.groups[i] for i in chosen]

    def configured_k(self) -> float | list[float]:
        return self.k if P.layer_k_by_name(self.prune) else float(self.prune.k)

    def kept_notes(self) -> list[str]:
        """Why the groups kept whole are kept, one line per reason."""
        return sorted({g.kept_why for g in self.groups if not g.prunable})


def prune_structured_and_log(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, model_path: Path,
                             train_run_id: str, clock: PhaseClock, reason: str) -> dict[str, Any]:
    """:func:`src.job.prune_and_log` for a structural unit job; returns the run's metrics."""
    prune = cfg.prune
    with clock("prune"):
        graph, trained = cached_graph(model_path, prune.embeddings)
        original = graph.model
        original.set_weights(trained)  # a job before this one in the process left its pruned state in the model
        plan = GroupPlan(original, prune, splits)
        removed = plan.removed()
        state = _masked_state(original, trained, removed)
    metrics: dict[str, float] = {}
    smaller = None
    if prune.schedule != "oneshot":
        with clock("evaluate"):
            oneshot = scores(graph, state, splits)[0]
        metrics |= {"oneshot_test_accuracy": oneshot["test_accuracy"], "oneshot_val_accuracy": oneshot["val_accuracy"]}
        with clock("retrain"):
            sparsity = M.sparsity([a for a, t in zip(arrays_of(graph, state), graph.tensors, strict=True) if t.ranked])
            state, removed, smaller = _retrain(cfg, splits, ctx, run_id, graph, trained, plan, removed, sparsity)
        metrics["finetune_seconds"] = clock.seconds["retrain"]
    with clock("evaluate"):
        original.set_weights(state)
        smaller = smaller or compact(original, removed)
        found, test_logits = scores(graph, state, splits)
        compact_logits = np.asarray(smaller.predict(splits.x_test[:500], batch_size=500, verbose=0))
        pruned, before = arrays_of(graph, state), arrays_of(graph, trained)
        ranked = [i for i, t in enumerate(graph.tensors) if t.ranked]
        metrics |= {**found, **_cost(original, smaller, plan, removed, [pruned[i] for i in ranked]),
                    "compact_max_abs_diff": float(np.abs(compact_logits - test_logits[:500]).max()),
                    **tensor_metrics(graph, pruned, ranked, stats=False),
                    **tensor_metrics(graph, before, ranked, stats=True)}
    engine = f"keras ({reason})"
    if cfg.eval.timing != "off":
        with clock("timing"):
            metrics |= _timing(cfg, graph, state, smaller, splits)
    with tempfile.TemporaryDirectory() as tmp, clock("log"):
        artifacts = _write(cfg, Path(tmp), graph, state, smaller, model_path, [before[i] for i in ranked],
                           [pruned[i] for i in ranked], [graph.tensors[i].name for i in ranked])
        finish_prune_run(cfg, ctx, run_id, metrics, {"eval.engine_used": engine, "eval.latency_engine_used": engine,
                                                      "prune.kept_groups": "; ".join(plan.kept_notes())[:500]},
                         artifacts)
    return {"run_id": run_id, **metrics, "engine": engine}


def _masked_state(model: keras.Model, weights: list[np.ndarray], removed: list[Group]) -> list[np.ndarray]:
    """``weights`` with every slice of ``removed`` zeroed (the masked model's state); ``model`` is left at it."""
    model.set_weights(weights)
    mask(model, removed)
    return model.get_weights()


def _cost(original: keras.Model, smaller: keras.Model, plan: GroupPlan, removed: list[Group],
          pruned_kernels: list[np.ndarray]) -> dict[str, float]:
    """Fractions of the original's parameters and multiply-adds the compact model keeps, and the groups removed."""
    return {"params_kept": smaller.count_params() / original.count_params(),
            "macs_kept": macs(smaller) / macs(original),
            "groups_removed": float(len(removed)), "groups_prunable": float(sum(map(len, plan.families))),
            "group_families": float(len(plan.families)), "sparsity": M.sparsity(pruned_kernels),
            "sparsity_percent": 100 * M.sparsity(pruned_kernels),
            "k_percent": float(np.mean(plan.k)) if plan.k else 0.0, **_family_metrics(plan, removed)}


def _family_metrics(plan: GroupPlan, removed: list[Group]) -> dict[str, float]:
    """``groups/<family>/removed``: the fraction of each family's groups removed, a family named by the first of its
    producers (sorted)."""
    gone = {id(g) for g in removed}
    return {f"groups/{name.split('+')[0]}/removed": sum(id(plan.groups[i]) in gone for i in f) / len(f)
            for name, f in zip(plan.names, plan.families, strict=True)}


def _timing(cfg: DictConfig, graph: GraphModel, state: list[np.ndarray], smaller: keras.Model,
            splits: Splits) -> dict[str, float]:
    """The original against the compact model in Keras: the test set through ``predict`` (``dense_eval_ms``,
    ``compact_eval_ms``) and ABBA ``predict_on_batch`` at batch 1 and :data:`EVAL_BATCH` (the speedups)."""
    rounds = max(cfg.eval.repeats, TIMING_ROUNDS) if cfg.eval.timing == "full" else TIMING_ROUNDS
    out = {"dense_eval_ms": median_ms(lambda: logits(graph, state, splits.x_test), cfg.eval.repeats),
           "compact_eval_ms": median_ms(lambda: smaller.predict(splits.x_test, batch_size=PREDICT_BATCH, verbose=0),
                                        cfg.eval.repeats)}
    one = splits.x_test[:1]
    batch = np.resize(splits.x_test, (EVAL_BATCH, *splits.x_test.shape[1:]))
    a1, b1 = time_pair(graph.model, smaller, one, rounds)
    a, b = time_pair(graph.model, smaller, batch, rounds)
    return {**out, "keras_latency_ms": a1, "compact_latency_ms": b1, "keras_latency_speedup": a1 / b1,
            "keras_batch_ms": a, "compact_batch_ms": b, "keras_eval_speedup": a / b}


def _retrain(cfg: DictConfig, splits: Splits, ctx: JobContext, run_id: str, graph: GraphModel,
             trained: list[np.ndarray], plan: GroupPlan, removed: list[Group], sparsity: float
             ) -> tuple[list[np.ndarray], list[Group], keras.Model | None]:
    """(the retrained masked model's state, the groups removed at the end, the retrained compact model or None);
    ``sparsity``: the one-shot masked model's, what a finetune epoch reports."""
    from src.records.retrain_run import retrain_settings
    from src.training import retrain as R
    from src.training.train import seed_everything

    prune, model = cfg.prune, graph.model
    settings = retrain_settings(cfg, 0, False)
    log = epoch_logger(ctx, run_id)
    seed_everything(prune.finetune.seed)
    if prune.schedule == "finetune":  # the compact model is the masked model's function: retrain it as it is
        model.set_weights(trained)
        smaller = compact(model, removed)
        R.train_compact(smaller, splits, settings, sparsity, log, cosine=cfg.train.lr_schedule == "cosine")
        return expand(model, removed, smaller), removed, smaller
    model.set_weights(trained)
    kernels = [v for t, v in zip(graph.tensors, graph.variables, strict=True) if t.ranked]
    chosen: list[list[Group]] = [removed]

    def mask_fn(_arrays: list[np.ndarray], k: float | list[float]) -> list[np.ndarray]:
        chosen.append(plan.removed(k))
        return variable_masks(model, chosen[-1])

    masked = R.MaskedGroups(model, kernels)
    k = plan.configured_k()
    if prune.schedule == "gradual":
        R.gradual(model, splits, settings, mask_fn, k, initial_k=prune.gradual.initial_k,
                  frequency=prune.gradual.frequency, span_fraction=prune.gradual.span, on_epoch_end=log, masked=masked)
    else:
        R.iterative(model, splits, settings, mask_fn, k, prune.iterative.rounds, on_epoch_end=log, masked=masked)
    return model.get_weights(), chosen[-1], None


def _write(cfg: DictConfig, folder: Path, graph: GraphModel, state: list[np.ndarray], smaller: keras.Model,
           model_path: Path, before: list[np.ndarray], after: list[np.ndarray], names: list[str]) -> PruneArtifacts:
    """The weight histogram, and as ``tracking.save_pruned`` says ``pruned.keras`` (the masked model) and
    ``compact.keras`` (the smaller one); ``compact_model_bytes`` is measured always."""
    out = write_artifacts(cfg, folder, graph, state, model_path, before, after, names)
    compact_path = folder / "compact.keras"
    smaller.save(compact_path)
    out.sizes["compact_model_bytes"] = compact_path.stat().st_size
    if out.files["model"]:  # pruned.keras written: tracking.save_pruned says so
        out.files["model"].append(compact_path)
    return out
