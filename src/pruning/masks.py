"""Pruning masks: pure NumPy functions, no I/O.

Conventions: a kernel's LAST axis is its outputs: a dense kernel ``w`` is ``(fan_in, fan_out)`` (Keras layout,
``y = x @ w``), a conv kernel ``(kh, kw, c_in, c_out)``. A "unit" is one output: a dense column, or a conv
filter (all its ``kh * kw * c_in`` weights), ranked by the L2 norm over all of them. ``k`` is a percentage in
[0, 100]. A mask is a boolean array of ``w``'s shape, True = weight kept.
"""

from __future__ import annotations

import math

import numpy as np


def n_to_prune(k: float, count: int) -> int:
    """Number of items pruned at ``k`` percent of ``count``: round(k/100 * count), halves rounded up."""
    if not 0.0 <= k <= 100.0:
        raise ValueError(f"k must be a percentage in [0, 100], got {k}")
    return min(count, int(np.floor(k / 100.0 * count + 0.5)))


def _keep_mask_by_score(scores: np.ndarray, k: float) -> np.ndarray:
    """True for all but the round(k% of n) smallest scores; ties go by position (first pruned first).

    The same mask as pruning the first n entries of a stable argsort, found with a partition (O(n))."""
    flat = scores.ravel()
    n = n_to_prune(k, flat.size)
    keep = np.ones(flat.size, dtype=bool)
    if n > 0:
        threshold = np.partition(flat, n - 1)[n - 1]  # the n-th smallest score
        below = flat < threshold
        keep[below] = False
        keep[np.flatnonzero(flat == threshold)[:n - int(below.sum())]] = False
    return keep.reshape(scores.shape)


def weight_mask(w: np.ndarray, k: float) -> np.ndarray:
    """Mask that zeroes the k% of entries of ``w`` with the smallest absolute value."""
    return _keep_mask_by_score(np.abs(w), k)


def unit_norms(w: np.ndarray) -> np.ndarray:
    """L2 norm of each output unit of ``w`` (dense column or conv filter): shape ``(outputs,)``."""
    return np.linalg.norm(w.reshape(-1, w.shape[-1]), axis=0)


def unit_mask(w: np.ndarray, k: float) -> np.ndarray:
    """Mask that zeroes the k% of output units (columns, filters) of ``w`` with the smallest L2 norm."""
    return _column_mask(_keep_mask_by_score(unit_norms(w), k), w.shape)


def _column_mask(keep_cols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Kernel mask of ``shape`` that keeps or drops whole output units (last axis) as ``keep_cols`` says."""
    return np.broadcast_to(keep_cols, shape).copy()


MASK_FUNCTIONS = {"weight": weight_mask, "unit": unit_mask}


def _per_layer_k(k: float | list[float], n_pruned: int) -> list[float]:
    ks = [float(k)] * n_pruned if np.isscalar(k) else [float(v) for v in k]
    if len(ks) != n_pruned:
        raise ValueError(f"got {len(ks)} per-layer k values for {n_pruned} pruned layers")
    return ks


def _check_method(method: str) -> None:
    if method not in MASK_FUNCTIONS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of none, weight, unit")


def layer_masks(
    kernels: list[np.ndarray], method: str, k: float | list[float], prune_last: bool = False,
    scope: str = "layer", min_keep: float = 0.0,
) -> list[np.ndarray]:
    """Masks for every weighted layer of a network, in order (the last one is the logits layer).

    ``k`` is one percentage for all pruned layers, or one per pruned layer (hidden layers, plus the
    last when ``prune_last``). The last (logits) layer gets an all-True mask unless ``prune_last``.
    ``method`` "none" keeps everything. ``scope`` "layer" prunes k% of each layer; "global" ranks all
    pruned layers together (:func:`global_masks`, one k only, with the per-layer floor ``min_keep``).
    """
    n_pruned = len(kernels) if prune_last else len(kernels) - 1
    if scope == "global":
        if not np.isscalar(k):
            raise ValueError("prune.scope=global takes one k for all pruned layers, not per-layer values")
        return global_masks(kernels, method, float(k), n_pruned, min_keep)
    if scope != "layer":
        raise ValueError(f"unknown pruning scope {scope!r}; choose layer or global")
    ks = _per_layer_k(k, n_pruned)
    if method == "none":
        return [np.ones(w.shape, dtype=bool) for w in kernels]
    _check_method(method)
    fn = MASK_FUNCTIONS[method]
    masks = [fn(w, kk) for w, kk in zip(kernels, ks, strict=False)]
    masks += [np.ones(w.shape, dtype=bool) for w in kernels[n_pruned:]]
    return masks


def _global_scores(w: np.ndarray, method: str) -> np.ndarray:
    """Per-item scores comparable across layers: |w| per weight, or per unit its column's L2 norm divided
    by the mean column L2 norm of its layer (all columns, pruned ones included; 0 if the layer is all zero)."""
    if method == "weight":
        return np.abs(w).ravel().astype(np.float64)
    norms = unit_norms(w.astype(np.float64))
    mean = norms.mean()
    return norms / mean if mean > 0 else np.zeros_like(norms)


def min_keep_count(min_keep: float, count: int) -> int:
    """Items a pruned layer of ``count`` items must keep: ceil(min_keep * count) for a fraction
    ``min_keep`` < 1, else the whole number ``min_keep``. ValueError naming prune.min_keep if invalid."""
    if not (math.isfinite(min_keep) and min_keep >= 0 and (min_keep < 1 or float(min_keep).is_integer())):
        raise ValueError(f"prune.min_keep={min_keep} is invalid: give a fraction in [0, 1) of each layer's "
                         "items or a whole number of items >= 1")
    return math.ceil(min_keep * count - 1e-9) if min_keep < 1 else int(min_keep)


def global_masks(
    kernels: list[np.ndarray], method: str, k: float, n_pruned: int, min_keep: float = 0.0
) -> list[np.ndarray]:
    """Masks that prune the first ``n_pruned`` layers together: exactly n_to_prune(k, all their items)
    of the lowest-scoring items (weights, or units: see :func:`_global_scores`) across those layers.

    Every pruned layer keeps at least :func:`min_keep_count` items; prunes a floor refuses go to the
    next-lowest items elsewhere, so the total stays exact unless the floors leave too few prunable items.
    Ties go by layer, then position. Later layers get all-True masks."""
    if not 0 <= n_pruned <= len(kernels):
        raise ValueError(f"n_pruned={n_pruned} is not between 0 and the number of layers ({len(kernels)})")
    if method == "none" or n_pruned == 0:
        return [np.ones(w.shape, dtype=bool) for w in kernels]
    _check_method(method)
    scores = [_global_scores(w, method) for w in kernels[:n_pruned]]
    counts = np.array([s.size for s in scores])
    floors = np.array([min_keep_count(min_keep, int(c)) for c in counts])
    for i, (floor, count) in enumerate(zip(floors, counts, strict=True), start=1):
        if floor > count:
            raise ValueError(f"prune.min_keep={min_keep} keeps {floor} items but pruned layer {i} has only "
                             f"{count} {'weights' if method == 'weight' else 'units'}")
    order = np.argsort(np.concatenate(scores), kind="stable")
    layer_of = np.repeat(np.arange(n_pruned), counts)[order]
    rank_in_layer = np.empty(order.size, dtype=np.int64)
    for i in range(n_pruned):
        rank_in_layer[layer_of == i] = np.arange(counts[i])
    prunable = order[rank_in_layer < (counts - floors)[layer_of]]
    keep = np.ones(order.size, dtype=bool)
    keep[prunable[:n_to_prune(k, int(counts.sum()))]] = False
    layer_keeps = np.split(keep, np.cumsum(counts)[:-1])
    masks = [kp.reshape(w.shape) if method == "weight" else _column_mask(kp, w.shape)
             for kp, w in zip(layer_keeps, kernels, strict=False)]
    return masks + [np.ones(w.shape, dtype=bool) for w in kernels[n_pruned:]]


def random_masks(
    kernels: list[np.ndarray], method: str, k: float | list[float], n_pruned: int, seed: int
) -> list[np.ndarray]:
    """Random-pruning baseline: in each of the first ``n_pruned`` layers, prune exactly as many items as
    ``method`` would (n_to_prune(k, weights) weights, or n_to_prune(k, units) whole columns), those with the
    lowest of a random score per item drawn by ``np.random.default_rng(seed)``. The scores depend on the seed
    and the shapes only, so for one seed a larger k prunes a superset (gradual and iterative schedules stay
    nested, as with magnitudes). ``k``: one percentage or one per pruned layer."""
    ks = _per_layer_k(k, n_pruned)
    if method == "none":
        return [np.ones(w.shape, dtype=bool) for w in kernels]
    _check_method(method)
    rng = np.random.default_rng(seed)
    masks = []
    for w, kk in zip(kernels, ks, strict=False):
        if method == "weight":
            masks.append(_keep_mask_by_score(rng.random(w.shape), kk))
        else:
            masks.append(_column_mask(_keep_mask_by_score(rng.random(w.shape[-1]), kk), w.shape))
    return masks + [np.ones(w.shape, dtype=bool) for w in kernels[n_pruned:]]


def mask_sparsity(masks: list[np.ndarray]) -> list[float]:
    """Fraction of entries each mask prunes (False), per layer (0..1)."""
    return [float(1.0 - np.count_nonzero(m) / m.size) if m.size else 0.0 for m in masks]


def bias_masks(kernel_masks: list[np.ndarray]) -> list[np.ndarray]:
    """Bias masks matching kernel masks: a unit whose whole column (or filter) is pruned loses its bias too."""
    return [m.reshape(-1, m.shape[-1]).any(axis=0) for m in kernel_masks]


def sparsity(arrays: list[np.ndarray]) -> float:
    """Fraction of exactly-zero entries over all ``arrays`` (0..1)."""
    total = sum(a.size for a in arrays)
    zeros = sum(int(a.size - np.count_nonzero(a)) for a in arrays)
    return zeros / total if total else 0.0


def apply_masks(
    kernels: list[np.ndarray], biases: list[np.ndarray | None], kernel_masks: list[np.ndarray], method: str
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Zero the masked weights. Unit pruning also zeroes a deleted unit's bias, so the neuron is gone."""
    pruned_kernels = [np.where(m, w, 0).astype(w.dtype) for w, m in zip(kernels, kernel_masks, strict=False)]
    if method != "unit":
        return pruned_kernels, list(biases)
    pruned_biases = [None if b is None else np.where(keep, b, 0).astype(b.dtype)
                     for b, keep in zip(biases, bias_masks(kernel_masks), strict=False)]
    return pruned_kernels, pruned_biases
