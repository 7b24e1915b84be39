"""What a job's ``prune`` config removes: its masks (method, scope, random baseline) and the pruned weights.

Pure numpy on top of src/pruning/masks.py; shared by the one-shot path (src/job.py) and the retraining loops
(src/records/retrain_run.py), so both prune exactly alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from src.pruning import masks as M

RANDOM_METHODS = {"random": "weight", "random_unit": "unit"}  # random baseline -> the method whose counts it uses
UNIT_METHODS = ("unit", "random_unit")  # methods that delete whole units (their biases go too)

MaskFn = Callable[[list[np.ndarray], float | list[float]], list[np.ndarray]]


def unused_settings(schedule: str, method: str, scope: str) -> tuple[str, ...]:
    """Prefixes of the ``prune.*`` settings that a job with this schedule, method and scope does not read:
    they are left out of its identity (job_hash) and of the settings a report compares."""
    return tuple(name for name, used in (("prune.finetune.", schedule != "oneshot"),
                                         ("prune.gradual.", schedule == "gradual"),
                                         ("prune.iterative.", schedule == "iterative"),
                                         ("prune.seed", method in RANDOM_METHODS),
                                         ("prune.min_keep", scope == "global")) if not used)


def n_pruned_layers(prune: Any, n_layers: int) -> int:
    """How many leading Dense layers are pruned: the hidden ones, plus the logits layer with prune_last."""
    return n_layers if prune.prune_last else n_layers - 1


def mean_k(prune: Any, n_pruned: int) -> float:
    """The k (percent) a chart can place a run at: ``prune.k``, or the mean of ``prune.layer_k`` over the
    ``n_pruned`` pruned layers."""
    if prune.layer_k is not None:
        return float(sum(prune.layer_k[:n_pruned]) / max(len(prune.layer_k[:n_pruned]), 1))
    return float(prune.k)


def mask_fn(prune: Any, n_layers: int) -> MaskFn:
    """``masks(kernels, k)`` for ``prune``'s method and scope; k is one percentage, or one per pruned layer
    (layer scope). Random methods draw with ``prune.seed``, the same draw for the same k."""
    if prune.method in RANDOM_METHODS:
        level, n = RANDOM_METHODS[prune.method], n_pruned_layers(prune, n_layers)
        return lambda kernels, k: M.random_masks(kernels, level, k, n, prune.seed)
    return lambda kernels, k: M.layer_masks(kernels, prune.method, k, prune.prune_last, scope=prune.scope,
                                            min_keep=prune.min_keep)


def configured_k(prune: Any) -> float | list[float]:
    """``prune.layer_k`` as a list when set, else ``prune.k``."""
    return [float(v) for v in prune.layer_k] if prune.layer_k is not None else float(prune.k)


def apply(prune: Any, kernels: list[np.ndarray], biases: list[np.ndarray | None], masks: list[np.ndarray]
          ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Zero the masked weights; methods that delete units zero those units' biases too."""
    return M.apply_masks(kernels, biases, masks, "unit" if prune.method in UNIT_METHODS else "weight")


def oneshot(prune: Any, kernels: list[np.ndarray], biases: list[np.ndarray | None]
            ) -> tuple[list[np.ndarray], tuple[list[np.ndarray], list[np.ndarray | None]]]:
    """(masks, (pruned kernels, pruned biases)) of one-shot pruning as configured."""
    masks = mask_fn(prune, len(kernels))(kernels, configured_k(prune))
    return masks, apply(prune, kernels, biases, masks)
