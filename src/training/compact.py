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
from src.training.channel_graph import DEPTHWISE, PER_CHANNEL, PRODUCE

TRANSPOSE = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
SEPARABLE = ("SeparableConv1D", "SeparableConv2D")


def removed_slices(groups: Iterable[Group]) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """(removed output channels by producer, removed input positions by consumer) of the groups removed."""
    outs: dict[str, set[int]] = {}
    ins: dict[str, set[int]] = {}
    for g in groups:
        if not g.prunable:
            raise ValueError(f"a group kept whole cannot be removed ({g.kept_why})")
        for node, side, index in g.slices:
            (outs if side == "out" else ins).setdefault(node, set()).add(index)
    return outs, ins


def _layers(model, prefix: str = "") -> list[tuple[str, keras.layers.Layer]]:
    """(path, layer) of every layer, nested models walked into (the nested model itself is not listed)."""
    out = []
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        out += _layers(layer, f"{path}/") if isinstance(layer, keras.Model) else [(path, layer)]
    return out


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


def _removed(size: int, removed: set[int], repeat: int = 1) -> np.ndarray:
    """Indices removed along an axis of ``size`` entries, ``repeat`` entries per channel."""
    return np.array([i for i in range(size) if i // repeat in removed], dtype=np.int64)


def _axes(kind: str, i: int, v: np.ndarray, out_removed: set[int], in_removed: set[int], multiplier: int
          ) -> list[tuple[int, np.ndarray]]:
    """(axis, removed indices) of variable ``i`` of a layer of class ``kind`` (the module doc's rules)."""
    out = lambda axis: (axis, _removed(v.shape[axis], out_removed))  # noqa: E731
    inp = lambda axis, repeat=1: (axis, _removed(v.shape[axis], in_removed, repeat))  # noqa: E731
    if kind in SEPARABLE:
        return [inp(-2)] if i == 0 else [inp(-2, multiplier), out(-1)] if i == 1 else [out(-1)]
    if kind in PRODUCE:
        if v.ndim == 1:
            return [out(0)]
        return [out(-2), inp(-1)] if kind in TRANSPOSE else [out(-1), inp(0 if v.ndim == 2 else -2)]
    if kind in DEPTHWISE:
        return [inp(-2)] if v.ndim >= 2 else [inp(0, multiplier)]
    if kind in PER_CHANNEL:
        return [inp(-1)]
    return []


def _layer_values(model: keras.Model, groups: Iterable[Group], zero: bool
                  ) -> dict[str, list[np.ndarray]]:
    """Each weighted layer's variables (by path) with the groups' slices cut out, or set to 0 with ``zero``."""
    outs, ins = removed_slices(groups)
    values = {}
    for path, layer in _layers(model):
        weights = [np.array(w) for w in layer.get_weights()]
        if not weights:
            continue
        kind, multiplier = type(layer).__name__, int(getattr(layer, "depth_multiplier", 1) or 1)
        for i, v in enumerate(weights):
            for axis, idx in _axes(kind, i, v, outs.get(path, set()), ins.get(path, set()), multiplier):
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
    layers = dict(_layers(model))
    for path, values in _layer_values(model, groups, zero=True).items():
        layers[path].set_weights(values)


def compact(model: keras.Model, groups: Iterable[Group]) -> keras.Model:
    """``model`` without the channels of ``groups`` (all prunable): a new Keras model of the same architecture with
    fewer filters, units and channels, its weights the kept slices of ``model``'s."""
    groups = list(groups)
    outs, _ = removed_slices(groups)
    config = copy.deepcopy(keras.saving.serialize_keras_object(model))
    by_path = _configs(config)
    for path, removed in outs.items():
        c = by_path[path]["config"]
        key = "units" if "units" in c else "filters"
        c[key] = int(c[key]) - len(removed)
    _drop_build_configs(config)
    smaller = keras.saving.deserialize_keras_object(config)
    new_layers = dict(_layers(smaller))
    for path, values in _layer_values(model, groups, zero=False).items():
        new_layers[path].set_weights(values)
    return smaller
