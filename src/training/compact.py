"""The smaller model: a Keras model with whole dependency groups (src/pruning/groups.py) removed, rebuilt with Keras's
own layers (fewer filters, units and channels) so that plain ``keras.models.load_model`` opens it and it retrains as
is. Its function is the masked model's (every slice of a removed group zeroed) wherever the removed channels were
zero channels, which src/training/channel_graph makes sure of (activations with f(0) = 0 only).

How a layer's variables are cut: a producer's kernel loses its removed outputs (Dense and Conv: axis -1; Transpose:
-2) and removed inputs (Dense: axis 0; Conv: -2; Transpose: -1), its bias the removed outputs; a separable conv's
depthwise kernel loses removed input channels (axis -2) and its pointwise kernel their rows (axis -2, ``m`` rows per
channel) and its removed outputs; a depthwise conv loses removed channels (kernel axis -2, bias ``m`` entries each);
BatchNormalization and PReLU the removed channels of every variable. Every other variable is copied as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import keras
import numpy as np

from src.pruning.groups import Group
from src.training.channel_axes import layers, multiplier, positions, variable_axes


def removed_slices(groups: Iterable[Group]) -> dict[str, dict[str, set[int]]]:
    """Side ("out": output channels, "in": input positions, "head": attention heads) -> node -> the indices the
    groups remove."""
    removed: dict[str, dict[str, set[int]]] = {"out": {}, "in": {}, "head": {}}
    for g in groups:
        if not g.prunable:
            raise ValueError(f"a group kept whole cannot be removed ({g.kept_why})")
        for node, side, index in g.slices:
            removed[side].setdefault(node, set()).add(index)
    return removed


def _configs(config: dict, prefix: str = "") -> dict[str, dict]:
    """Layer path -> the layer's config dict inside a serialized model (nested models walked into)."""
    out = {}
    for layer in config["config"]["layers"]:
        path = f"{prefix}{layer['config']['name']}"
        if layer.get("class_name") in ("Functional", "Sequential", "Model"):
            out |= _configs(layer, f"{path}/")
        else:
            out[path] = layer
    return out


def _drop_build_configs(node) -> None:
    """Remove every recorded build shape: the smaller layers build from the shapes they are called on."""
    if isinstance(node, dict):
        node.pop("build_config", None)
        node.pop("compile_config", None)
        for value in node.values():
            _drop_build_configs(value)
    elif isinstance(node, list):
        for value in node:
            _drop_build_configs(value)


def _axes_of(layer: keras.layers.Layer, i: int) -> list:
    """The channel axes of the layer's variable ``i`` (src/training/channel_axes.variable_axes), by its class,
    dimensions, depth multiplier and its path below the layer (``query/kernel`` in a MultiHeadAttention)."""
    v = layer.weights[i]
    return variable_axes(type(layer).__name__, i, len(v.shape), multiplier(layer), "/".join(v.path.split("/")[-2:]))


def _layer_values(model: keras.Model, groups: Iterable[Group], zero: bool
                  ) -> dict[str, list[np.ndarray]]:
    """Each weighted layer's variables (by path) with the groups' slices cut out, or set to 0 with ``zero``."""
    removed = removed_slices(groups)
    values = {}
    for path, layer in layers(model):
        weights = [np.array(w) for w in layer.get_weights()]
        if not weights:
            continue
        for i, v in enumerate(weights):
            for side, axis, repeat, tiles in _axes_of(layer, i):
                idx = positions(v.shape[axis], removed[side].get(path, set()), repeat, tiles)
                if zero:
                    np.moveaxis(v, axis, 0)[idx] = 0
                else:
                    v = np.delete(v, idx, axis=axis)
            weights[i] = v
        values[path] = weights
    return values


def mask(model: keras.Model, groups: Iterable[Group]) -> None:
    """Zero every slice of ``groups`` in ``model`` (kernels' outputs and inputs, biases, BatchNormalization's
    gamma, beta and statistics): the masked model, which computes what :func:`compact` does."""
    by_path = dict(layers(model))
    for path, values in _layer_values(model, groups, zero=True).items():
        by_path[path].set_weights(values)


def compact(model: keras.Model, groups: Iterable[Group]) -> keras.Model:
    """``model`` without the channels of ``groups`` (all prunable): a new Keras model of the same architecture with
    fewer filters, units and channels, its weights the kept slices of ``model``'s."""
    groups = list(groups)
    removed = removed_slices(groups)
    config = copy.deepcopy(keras.saving.serialize_keras_object(model))
    by_path = _configs(config)
    for path, gone in removed["out"].items():
        c = by_path[path]["config"]
        key = "units" if "units" in c else "filters"
        c[key] = int(c[key]) - len(gone)
    for path, gone in removed["head"].items():
        c = by_path[path]["config"]
        c["num_heads"] = int(c["num_heads"]) - len(gone)
    _drop_build_configs(config)
    smaller = keras.saving.deserialize_keras_object(config)
    new_layers = dict(layers(smaller))
    for path, values in _layer_values(model, groups, zero=False).items():
        _set(new_layers[path], values)
    return smaller


def _set(layer: keras.layers.Layer, values: list[np.ndarray]) -> None:
    """``layer.set_weights(values)``, then what loading a file does after it: a preprocessing layer's state
    (Normalization's mean and variance) is finalized from its variables."""
    layer.set_weights(values)
    if hasattr(layer, "finalize_state"):
        layer.finalize_state()


def expand(model: keras.Model, groups: Iterable[Group], smaller: keras.Model) -> list[np.ndarray]:
    """The inverse of :func:`compact`: ``model.get_weights()`` order, every variable of ``smaller`` (e.g. after
    retraining it) put back at its kept positions, the removed slices 0: the masked model of ``smaller``."""
    removed = removed_slices(groups)
    small_layers = dict(layers(smaller))
    out: dict[int, np.ndarray] = {}
    for path, layer in layers(model):
        for i, (v, small) in enumerate(zip(layer.weights, small_layers[path].weights, strict=True)):
            index: list = [slice(None)] * len(v.shape)
            for side, axis, repeat, tiles in _axes_of(layer, i):
                size = int(v.shape[axis])
                gone = positions(size, removed[side].get(path, set()), repeat, tiles)
                index[axis] = np.setdiff1d(np.arange(size), gone)
            full = np.zeros(v.shape, dtype=np.asarray(small).dtype)
            kept = [np.arange(int(d)) if isinstance(ix, slice) else ix for ix, d in zip(index, v.shape, strict=True)]
            full[np.ix_(*kept)] = np.asarray(small)
            out[id(v)] = full
    return [out[id(v)] if id(v) in out else np.asarray(v) for v in model.weights]


def variable_masks(model: keras.Model, groups: Iterable[Group]) -> list[np.ndarray]:
    """One mask per ``model.trainable_weights`` entry (1 keep, 0 a slice of ``groups``): what holds the removed
    channels at 0 while the masked model retrains (src/training/retrain.MaskedGroups)."""
    removed = removed_slices(groups)
    found: dict[int, np.ndarray] = {}
    for path, layer in layers(model):
        for i, v in enumerate(layer.weights):
            m = np.ones(v.shape, dtype=np.float32)
            for side, axis, repeat, tiles in _axes_of(layer, i):
                gone = positions(int(v.shape[axis]), removed[side].get(path, set()), repeat, tiles)
                np.moveaxis(m, axis, 0)[gone] = 0
            found[id(v)] = m
    return [found.get(id(v), np.ones(v.shape, dtype=np.float32)) for v in model.trainable_weights]
