"""The retraining step of a prune job (``prune.schedule`` finetune, gradual or iterative), in Keras.

It turns the job's config into the calls of src/training/retrain.py (the loops that hold masks) and src/pruning/plan.py
(which weights a mask keeps), and hands each epoch's numbers to the caller, who logs them. Only jobs that
retrain import this module, and with it Keras and TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from src.pruning import plan as P
from src.training import retrain as R
from src.training.data import Splits
from src.training.keras_graph import load_graph
from src.training.model import get_weights, load_trained, weighted_layers
from src.training.train import seed_everything
from src.training.weight_stats import ranked_mask_fn

Weights = tuple[list[np.ndarray], list[np.ndarray | None]]


def retrain(cfg: DictConfig, splits: Splits, model_path: Path, oneshot_masks: list[np.ndarray],
            initial: Weights | None, on_epoch_end: Callable[[int, dict[str, float]], None]) -> Weights:
    """Retrain the trained model in ``model_path`` as ``prune.schedule`` says; return the final (kernels,
    biases) of its weighted layers, pruned entries exact zeros. ``oneshot_masks``: the one-shot masks
    (``finetune`` holds them); ``initial``: the weights at initialisation (``prune.iterative.rewind``);
    ``on_epoch_end(epoch, logs)`` gets epochs 1..prune.finetune.epochs with finetune_loss, finetune_accuracy,
    sparsity, val_loss, val_accuracy."""
    prune = cfg.prune
    model = load_trained(model_path)
    names = [layer.name for layer in weighted_layers(model)]
    n_layers = len(names)
    settings = retrain_settings(cfg, P.n_pruned_layers(prune, n_layers, names), prune.method in P.UNIT_METHODS)
    _run(cfg, splits, model, settings, oneshot_masks, P.mask_fn(prune, n_layers, names),
         P.configured_k(prune, names), initial, on_epoch_end, None)
    return get_weights(model)


def retrain_graph(cfg: DictConfig, splits: Splits, model_path: Path, oneshot_masks: list[np.ndarray],
                  initial: list[np.ndarray] | None, pruned: list[int],
                  on_epoch_end: Callable[[int, dict[str, float]], None]) -> list[np.ndarray]:
    """:func:`retrain` for any Keras model (src/records/graph_prune): masks per prunable tensor
    (src/training/keras_graph), ``pruned`` the indices of the pruned tensors (the reported sparsity); returns every
    variable of the retrained model (``model.get_weights()``: normalization statistics move too)."""
    prune = cfg.prune
    graph = load_graph(model_path, prune.embeddings)
    settings = retrain_settings(cfg, len(pruned), False)
    mask_fn = ranked_mask_fn(graph, prune, splits.x_train, splits.y_train)  # every re-ranking scores the weights now
    _run(cfg, splits, graph.model, settings, oneshot_masks, mask_fn,
         P.graph_configured_k(prune, graph.tensors, graph.outputs), initial, on_epoch_end,
         R.MaskedGraph(graph, pruned))
    return graph.model.get_weights()


def retrain_settings(cfg: DictConfig, n_pruned: int, mask_biases: bool) -> R.RetrainConfig:
    prune, ft = cfg.prune, cfg.prune.finetune
    return R.RetrainConfig(epochs=ft.epochs, lr=P.retrain_lr(prune.schedule, cfg.lr, ft.lr),
                           batch_size=ft.batch_size, seed=ft.seed, n_pruned=n_pruned, optimizer_name=cfg.optimizer.name,
                           momentum=cfg.optimizer.momentum, mask_biases=mask_biases, verbose=cfg.train.verbose)


def _run(cfg: DictConfig, splits: Splits, model, settings: R.RetrainConfig, oneshot_masks: list[np.ndarray],
         masks: P.MaskFn, k: float | list[float], initial, on_epoch_end, masked: R.MaskedModel | None) -> None:
    """The loop of ``prune.schedule`` (src/training/retrain) on ``model``."""
    prune = cfg.prune
    seed_everything(prune.finetune.seed)
    if prune.schedule == "finetune":
        R.finetune(model, splits, settings, oneshot_masks, on_epoch_end, masked=masked)
    elif prune.schedule == "gradual":
        R.gradual(model, splits, settings, masks, k, initial_k=prune.gradual.initial_k,
                  frequency=prune.gradual.frequency, span_fraction=prune.gradual.span, on_epoch_end=on_epoch_end,
                  masked=masked)
    elif prune.schedule == "iterative":
        R.iterative(model, splits, settings, masks, k, prune.iterative.rounds,
                    rewind_to=initial if prune.iterative.rewind else None, on_epoch_end=on_epoch_end, masked=masked)
    else:
        raise ValueError(f"prune.schedule={prune.schedule} does not retrain")
