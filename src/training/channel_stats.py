"""Per-slice statistics of a Keras model for the unit criteria of src/pruning/importance: for every slice
``(node, side, index)`` of src/pruning/groups, a sum over the slice's entries (src/training/channel_axes).

- ``l2`` / ``l1``: squares / absolute values of the producers' kernels, output side only (a separable conv's
  pointwise kernel; a recurrent layer's input kernel, all gates; an attention head's query, key, value and output
  kernel slices): today's rule for a unit, the L2 norm of its kernel column, summed over a group's producers.
- ``bn_scale``: |gamma| of every BatchNormalization (its input side: the channel it normalizes).
- ``taylor``: (w * dL/dw)^2 of every trainable variable, both sides, the gradient of the mean cross-entropy over a
  batch of training data (Molchanov et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from src.training.channel_axes import channel_sums, layers, multiplier, variable_axes
from src.training.channel_graph import PRODUCE
from src.training.keras_graph import RNN_GATES

Stats = dict[tuple[str, str, int], float]


def _add(stats: Stats, path: str, kind: str, i: int, value: np.ndarray, m: int, sides: tuple[str, ...],
         name: str = "") -> None:
    for side, axis, repeat, tiles in variable_axes(kind, i, value.ndim, m, name):
        if side in sides:
            for c, s in enumerate(channel_sums(value, axis, repeat, tiles)):
                stats[(path, side, c)] = stats.get((path, side, c), 0.0) + float(s)


def _kernel_index(kind: str) -> int:
    return 1 if kind.startswith("SeparableConv") else 0


def magnitude_stats(model: keras.Model, power: int) -> Stats:
    """``power`` 2 (l2) or 1 (l1): sums of |kernel|^power of every producer's output slices."""
    stats: Stats = {}
    for path, layer in layers(model):
        kind = type(layer).__name__
        if (kind in PRODUCE or kind in RNN_GATES) and layer.weights:
            i = _kernel_index(kind)
            _add(stats, path, kind, i, np.abs(np.asarray(layer.weights[i])) ** power, multiplier(layer), ("out",))
        elif kind == "MultiHeadAttention":  # a head: its query, key, value and output kernel slices
            for i, v in enumerate(layer.weights):
                if v.path.endswith("kernel"):
                    _add(stats, path, kind, i, np.abs(np.asarray(v)) ** power, 1, ("head",), _var_name(v))
    return stats


def _var_name(v) -> str:
    return "/".join(v.path.split("/")[-2:])


def bn_scale_stats(model: keras.Model) -> Stats:
    """|gamma| of every BatchNormalization with a scale, by channel."""
    stats: Stats = {}
    for path, layer in layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
            _add(stats, path, "BatchNormalization", 0, np.abs(np.asarray(layer.gamma)), 1, ("in",))
    return stats


def taylor_stats(model: keras.Model, x: np.ndarray, y: np.ndarray) -> Stats:
    """(w * dL/dw)^2 summed per slice, over every trainable variable; L the mean sparse cross-entropy of the logits
    on (x, y) in inference mode."""
    import tensorflow as tf  # the TF backend's gradient tape: the only backend prunesweep installs

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=False))
    variables = [v for _, layer in layers(model) for v in layer.trainable_weights]
    grads = dict(zip((id(v) for v in variables), tape.gradient(loss, [v.value for v in variables]), strict=True))
    stats: Stats = {}
    for path, layer in layers(model):
        kind = type(layer).__name__
        for i, v in enumerate(layer.weights):
            g = grads.get(id(v))
            if g is not None:
                _add(stats, path, kind, i, (np.asarray(v) * np.asarray(g)) ** 2, multiplier(layer),
                     ("out", "in", "head"), _var_name(v))
    return stats


def slice_stats(model: keras.Model, criterion: str, batch: Callable[[], tuple[np.ndarray, np.ndarray]]) -> Stats:
    """The statistics ``criterion`` ranks groups by (``batch()``: training examples, read only for taylor)."""
    if criterion in ("l2", "l1"):
        return magnitude_stats(model, 2 if criterion == "l2" else 1)
    if criterion == "bn_scale":
        return bn_scale_stats(model)
    if criterion == "taylor":
        return taylor_stats(model, *batch())
    raise ValueError(f"unknown unit criterion {criterion!r}")
