"""Prunable tensors of any model as data, and their masks: pure NumPy, no idea of Keras.

A model is a list of :class:`Tensor` records (one per weight variable a method may touch) and a list of arrays in
the same order. A tensor belongs to one *unit layer* (``layer``): the Keras layer whose output channels, heads or
RNN units are the units that unit pruning removes. Where a tensor's units are is data: ``unit_axis`` indexes them,
laid out as ``gates`` blocks of ``units`` (gate-major: an LSTM's 4 gate columns per unit) or as ``units`` blocks of
``repeat`` (unit-major: a depthwise conv bias with a depth multiplier). ``ranked`` tensors are pruned by weight and
count in their unit's L2 norm; the others (biases) only follow their unit when it is removed.

Masks: True = kept. ``k`` is a percentage in [0, 100] per *item*: a ranked tensor (weight methods) or a unit layer
(unit methods). Ranking, ties and the global floor are those of src/pruning/masks.py, which these functions call on
each item (a unit layer becomes its *unit matrix*: rows = every ranked entry of one unit, columns = units).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from src.pruning import masks as M


@dataclass(frozen=True)
class Tensor:
    """One prunable weight variable. ``name``: ``<layer path>/<variable>`` (e.g. ``mha/query/kernel``);
    ``layer``: the unit layer's path (e.g. ``mha``); ``unit_axis``: None when the tensor is not part of the layer's
    units (a separable conv's depthwise kernel under unit pruning)."""

    name: str
    layer: str
    kind: str  # the Keras class of the unit layer, e.g. "Conv2D"
    shape: tuple[int, ...]
    unit_axis: int | None = -1
    gates: int = 1
    repeat: int = 1
    ranked: bool = True

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def units(self) -> int:
        """How many units the tensor's unit axis holds (0 when it has none)."""
        if self.unit_axis is None:
            return 0
        return self.shape[self.unit_axis] // (self.gates * self.repeat)


def unit_view(a: np.ndarray, t: Tensor) -> np.ndarray:
    """``a`` (of ``t.shape``) as a matrix ``(entries per unit, units)``: column u holds every entry of unit u."""
    moved = np.moveaxis(a, t.unit_axis, -1)
    lead = moved.shape[:-1]
    blocks = moved.reshape(*lead, t.gates, t.units, t.repeat)  # gate-major, then unit-major repeats
    return np.moveaxis(blocks, -2, -1).reshape(-1, t.units)


def expand_units(keep_units: np.ndarray, t: Tensor) -> np.ndarray:
    """The mask of ``t.shape`` that keeps every entry of the units ``keep_units`` (bool, ``(units,)``) keeps."""
    along = np.repeat(np.tile(keep_units, t.gates).reshape(t.gates, t.units), t.repeat, axis=1).reshape(-1)
    shape = [1] * len(t.shape)
    shape[t.unit_axis] = along.size
    return np.broadcast_to(along.reshape(shape), t.shape).copy()


def unit_layers(tensors: Sequence[Tensor]) -> list[str]:
    """The unit layers that have units (a ranked tensor with a unit axis), in first-seen order."""
    seen: dict[str, None] = {}
    for t in tensors:
        if t.ranked and t.unit_axis is not None:
            seen.setdefault(t.layer)
    return list(seen)


def unit_matrix(arrays: Sequence[np.ndarray], tensors: Sequence[Tensor], layer: str) -> np.ndarray:
    """Every ranked entry of each unit of ``layer``, stacked: ``(entries, units)``; a unit's L2 norm is its column's."""
    views = [unit_view(a, t) for a, t in zip(arrays, tensors, strict=True)
             if t.layer == layer and t.ranked and t.unit_axis is not None]
    counts = {v.shape[1] for v in views}
    if len(counts) != 1:
        raise ValueError(f"layer {layer}: its tensors disagree on the number of units ({sorted(counts)})")
    return np.concatenate(views, axis=0)


def items(tensors: Sequence[Tensor], method: str) -> list[str]:
    """What one k applies to: the ranked tensors' names (``weight``) or the unit layers (``unit``)."""
    if method == "unit":
        return unit_layers(tensors)
    return [t.name for t in tensors if t.ranked]


def item_of(name: str, keys: Mapping[str, float]) -> str | None:
    """The key of ``keys`` that names ``name``: itself, or its longest prefix ending at a ``/`` (a layer's or a
    nested model's name covers all its tensors). None when no key does."""
    best = None
    for key in keys:
        if (name == key or name.startswith(key.rstrip("/") + "/")) and (best is None or len(key) > len(best)):
            best = key
    return best


def masks(arrays: Sequence[np.ndarray], tensors: Sequence[Tensor], method: str, k: Mapping[str, float],
          scope: str = "layer", min_keep: float = 0.0, seed: int | None = None) -> list[np.ndarray]:
    """One mask per tensor. ``method``: ``weight`` or ``unit``; ``k``: percent per pruned item (see :func:`items`);
    items not in ``k`` are kept whole. ``scope="global"`` ranks all pruned items together (one k for all: the
    value given for each, which must agree), each keeping :func:`src.pruning.masks.min_keep_count` of
    ``min_keep``. ``seed``: a random baseline with that seed (the same counts, random scores). Weight methods keep
    every unranked tensor (biases); unit methods mask every tensor of a removed unit (biases included)."""
    if method not in ("weight", "unit"):
        raise ValueError(f"unknown pruning method {method!r}; choose weight or unit")
    names = [n for n in items(tensors, method) if n in k]
    if method == "weight":
        by_name = {t.name: a for a, t in zip(arrays, tensors, strict=True)}
        matrices = [by_name[n] for n in names]
    else:
        matrices = [unit_matrix(arrays, tensors, n) for n in names]
    kept = _item_masks(matrices, [float(k[n]) for n in names], method, scope, min_keep, seed)
    keep_of = dict(zip(names, kept, strict=True))
    out = []
    for a, t in zip(arrays, tensors, strict=True):
        if method == "weight":
            out.append(keep_of[t.name] if t.name in keep_of else np.ones(a.shape, bool))
        elif t.layer in keep_of and t.unit_axis is not None:
            out.append(expand_units(keep_of[t.layer].any(axis=0), t))
        else:
            out.append(np.ones(a.shape, bool))
    return out


def _item_masks(matrices: list[np.ndarray], ks: list[float], method: str, scope: str, min_keep: float,
                seed: int | None) -> list[np.ndarray]:
    """src/pruning/masks.py on the items: every one pruned (a unit matrix's last axis is its units)."""
    if not matrices:
        return []
    if seed is not None:
        return M.random_masks(matrices, method, ks, len(matrices), seed)
    if scope == "global":
        if len(set(ks)) != 1:
            raise ValueError("prune.scope=global takes one k for all pruned items, not per-layer values")
        return M.global_masks(matrices, method, ks[0], len(matrices), min_keep)
    return M.layer_masks(matrices, method, ks, prune_last=True)


def apply(arrays: Sequence[np.ndarray], tensor_masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The arrays with their masked entries set to exactly 0 (dtype kept)."""
    return [np.where(m, a, 0).astype(a.dtype) for a, m in zip(arrays, tensor_masks, strict=True)]
