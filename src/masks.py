"""Pruning masks: pure NumPy functions, no I/O.

Conventions: a dense layer's kernel ``w`` has shape ``(fan_in, fan_out)`` (Keras layout), so
``y = x @ w``; an output neuron ("unit") is a column of ``w``. ``k`` is a percentage in [0, 100].
A mask is a boolean array of ``w``'s shape, True = weight kept.
"""

from __future__ import annotations

import numpy as np


def n_to_prune(k: float, count: int) -> int:
    """Number of items pruned at ``k`` percent of ``count``: round(k/100 * count), halves rounded up."""
    if not 0.0 <= k <= 100.0:
        raise ValueError(f"k must be a percentage in [0, 100], got {k}")
    return min(count, int(np.floor(k / 100.0 * count + 0.5)))


def _keep_mask_by_score(scores: np.ndarray, k: float) -> np.ndarray:
    """True for all but the round(k% of n) smallest scores; ties go by position (first pruned first)."""
    flat = scores.ravel()
    n = n_to_prune(k, flat.size)
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:n]] = False
    return keep.reshape(scores.shape)


def weight_mask(w: np.ndarray, k: float) -> np.ndarray:
    """Mask that zeroes the k% of entries of ``w`` with the smallest absolute value."""
    return _keep_mask_by_score(np.abs(w), k)


def unit_mask(w: np.ndarray, k: float) -> np.ndarray:
    """Mask that zeroes the k% of columns (output units) of ``w`` with the smallest L2 norm."""
    keep_cols = _keep_mask_by_score(np.linalg.norm(w, axis=0), k)
    return np.broadcast_to(keep_cols[None, :], w.shape).copy()


MASK_FUNCTIONS = {"weight": weight_mask, "unit": unit_mask}


def layer_masks(
    kernels: list[np.ndarray], method: str, k: float | list[float], prune_last: bool = False
) -> list[np.ndarray]:
    """Masks for every layer of an MLP.

    ``k`` is one percentage for all pruned layers, or one per pruned layer (hidden layers, plus the
    last when ``prune_last``). The last (logits) layer gets an all-True mask unless ``prune_last``.
    ``method`` "none" keeps everything.
    """
    n_pruned = len(kernels) if prune_last else len(kernels) - 1
    ks = [float(k)] * n_pruned if np.isscalar(k) else [float(v) for v in k]
    if len(ks) != n_pruned:
        raise ValueError(f"got {len(ks)} per-layer k values for {n_pruned} pruned layers")
    if method == "none":
        return [np.ones(w.shape, dtype=bool) for w in kernels]
    if method not in MASK_FUNCTIONS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of none, weight, unit")
    fn = MASK_FUNCTIONS[method]
    masks = [fn(w, kk) for w, kk in zip(kernels, ks, strict=False)]
    masks += [np.ones(w.shape, dtype=bool) for w in kernels[n_pruned:]]
    return masks


def bias_masks(kernel_masks: list[np.ndarray]) -> list[np.ndarray]:
    """Bias masks matching kernel masks: a unit whose whole column is pruned loses its bias too."""
    return [m.any(axis=0) for m in kernel_masks]


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
