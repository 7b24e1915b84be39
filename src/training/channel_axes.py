"""Where a layer's channels sit in its variables: the rules that cut, zero and score the slices of a dependency group
(src/pruning/groups: ``(node, "out", c)`` a producer's output channel c, ``(node, "in", p)`` a consumer's input
position p), shared by src/training/compact (cut and zero) and src/training/channel_stats (score).

Per layer class, variable ``i`` of value ``v``: a producer's kernel has its output channels on axis -1 (Dense and
Conv; Transpose: -2) and its input positions on axis 0 (Dense), -2 (Conv) or -1 (Transpose), its bias the outputs on
axis 0; a separable conv's depthwise kernel has input channels on axis -2 and its pointwise kernel their rows on axis
-2 (``m`` rows per channel) and its outputs on -1; a depthwise conv's channels are its kernel's axis -2 and ``m``
bias entries each; BatchNormalization and PReLU have the channel on the last axis of every variable. A recurrent
layer (SimpleRNN, LSTM, GRU: 1, 4, 3 gates) has a unit's gate columns on the last axis of its kernel, recurrent kernel
and bias, gate-major (``tiles`` blocks of ``units``), its input positions on the kernel's axis 0 and the unit's own
row on the recurrent kernel's axis 0. A MultiHeadAttention has a head on axis 1 of its query, key and value kernels
(their input positions on axis 0), axis 0 of their biases and of the output projection's kernel.
"""

from __future__ import annotations

import keras
import numpy as np

from src.training.channel_graph import DEPTHWISE, PER_CHANNEL, PRODUCE
from src.training.keras_graph import RNN_GATES

TRANSPOSE = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
Axis = tuple[str, int, int, int]  # (side "out" | "in", axis, entries per channel, tiles: gate blocks along it)


def layers(model, prefix: str = "") -> list[tuple[str, keras.layers.Layer]]:
    """(path, layer) of every layer, nested models walked into (the nested model itself is not listed); paths are
    src/training/channel_graph's node names (``outer/inner``)."""
    out = []
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        out += layers(layer, f"{path}/") if isinstance(layer, keras.Model) else [(path, layer)]
    return out


def multiplier(layer) -> int:
    return int(getattr(layer, "depth_multiplier", 1) or 1)


def variable_axes(kind: str, i: int, ndim: int, m: int = 1, name: str = "") -> list[Axis]:
    """The channel axes of variable ``i`` (``ndim`` dimensions) of a layer of class ``kind`` (the module doc's
    rules; ``m``: depth multiplier; ``name``: the variable's path below the layer, e.g. ``query/kernel``); [] for a
    variable without channels (or a layer without them)."""
    if kind == "MultiHeadAttention":
        sub, var = (name.split("/") + [""])[:2]
        if sub == "attention_output":
            return [("head", 0, 1, 1)] if var == "kernel" else []
        return [("in", 0, 1, 1), ("head", 1, 1, 1)] if var == "kernel" else [("head", 0, 1, 1)]
    if kind in RNN_GATES:
        gates = RNN_GATES[kind]
        return [("out", -1, 1, gates), ("in", 0, 1, 1)] if i == 0 else \
            [("out", -1, 1, gates), ("out", 0, 1, 1)] if i == 1 else [("out", -1, 1, gates)]
    if kind in SEPARABLE:
        return ([("in", -2, 1, 1)] if i == 0 else [("in", -2, m, 1), ("out", -1, 1, 1)] if i == 1
                else [("out", -1, 1, 1)])
    if kind in PRODUCE:
        if ndim == 1:
            return [("out", 0, 1, 1)]
        if kind in TRANSPOSE:
            return [("out", -2, 1, 1), ("in", -1, 1, 1)]
        return [("out", -1, 1, 1), ("in", 0 if ndim == 2 else -2, 1, 1)]
    if kind in DEPTHWISE:
        return [("in", -2, 1, 1)] if ndim >= 2 else [("in", 0, m, 1)]
    if kind in PER_CHANNEL:
        return [("in", -1, 1, 1)]
    return []


def positions(size: int, channels: set[int], repeat: int = 1, tiles: int = 1) -> np.ndarray:
    """Indices along an axis of ``size`` entries that belong to ``channels`` (``repeat`` entries per channel, the
    whole repeated ``tiles`` times: gate blocks)."""
    block = size // tiles
    return np.array([i for i in range(size) if (i % block) // repeat in channels], dtype=np.int64)


def channel_sums(v: np.ndarray, axis: int, repeat: int = 1, tiles: int = 1) -> np.ndarray:
    """Per channel along ``axis``, the sum of ``v`` over every other axis (``repeat`` entries per channel, ``tiles``
    gate blocks)."""
    per_entry = np.moveaxis(np.asarray(v, dtype=np.float64), axis, 0).reshape(v.shape[axis], -1).sum(axis=1)
    return per_entry.reshape(tiles, -1).sum(axis=0).reshape(-1, repeat).sum(axis=1)
