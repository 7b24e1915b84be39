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
from src.training.model import get_weights, load_trained, weighted_layers
from src.training.train import seed_everything

Weights = tuple[list[np.ndarray], list[np.ndarray | None]]


def retrain(cfg: DictConfig, splits: Splits, model_path: Path, oneshot_masks: list[np.ndarray],
            initial: Weights | None, on_epoch_end: Callable[[int, dict[str, float]], None]) -> Weights:
    """Retrain the trained model in ``model_path`` as ``prune.schedule`` says; return the final (kernels,
    biases) of its weighted layers, pruned entries exact zeros. ``oneshot_masks``: the one-shot masks
    (``finetune`` holds them); ``initial``: the weights at initialisation (``prune.iterative.rewind``);
    ``on_epoch_end(epoch, logs)`` gets epochs 1..prune.finetune.epochs with finetune_loss, finetune_accuracy,
    sparsity, val_loss, val_accuracy."""
    prune, ft = cfg.prune, cfg.prune.finetune
    model = load_trained(model_path)
    names = [layer.name for layer in weighted_layers(model)]
    n_layers = len(names)
    settings = R.RetrainConfig(epochs=ft.epochs, lr=P.retrain_lr(prune.schedule, cfg.lr, ft.lr),
                               batch_size=ft.batch_size, seed=ft.seed,
                               n_pruned=P.n_pruned_layers(prune, n_layers, names), optimizer_name=cfg.optimizer.name,
                               momentum=cfg.optimizer.momentum, mask_biases=prune.method in P.UNIT_METHODS,
                               verbose=cfg.train.verbose)
    seed_everything(ft.seed)
    k, masks = P.configured_k(prune, names), P.mask_fn(prune, n_layers, names)
    if prune.schedule == "finetune":
        R.finetune(model, splits, settings, oneshot_masks, on_epoch_end)
    elif prune.schedule == "gradual":
        R.gradual(model, splits, settings, masks, k, initial_k=prune.gradual.initial_k,
                  frequency=prune.gradual.frequency, span_fraction=prune.gradual.span, on_epoch_end=on_epoch_end)
    elif prune.schedule == "iterative":
        R.iterative(model, splits, settings, masks, k, prune.iterative.rounds,
                    rewind_to=initial if prune.iterative.rewind else None, on_epoch_end=on_epoch_end)
    else:
        raise ValueError(f"prune.schedule={prune.schedule} does not retrain")
    return get_weights(model)
