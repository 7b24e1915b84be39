"""A layer's JSON object in the sparse model files (versions 2 and 3): its kind, name and settings; the weights
are stored beside it.

Keys: ``kind`` (src/engine/network.KINDS), ``name``, and per kind ``activation`` / ``strides`` / ``padding``
(dense, conv2d), ``pool_size`` / ``strides`` / ``padding`` (maxpool2d), ``scale`` / ``offset`` (rescale), ``shape``
(the kernel's, Keras layout) and ``bias`` (true / false) for weighted layers.
"""

from __future__ import annotations

import numpy as np

from src.engine.network import WEIGHTED, Layer


def describe(layer: Layer) -> dict:
    """The JSON object of ``layer`` (module docstring)."""
    if layer.kind in WEIGHTED:
        described = {"activation": layer.activation, "shape": list(layer.kernel.shape), "bias": layer.bias is not None}
        if layer.kind == "conv2d":
            described |= {"strides": list(layer.strides), "padding": layer.padding}
    elif layer.kind == "maxpool2d":
        described = {"pool_size": list(layer.pool_size), "strides": list(layer.strides), "padding": layer.padding}
    elif layer.kind == "rescale":
        described = {"scale": float(layer.scale), "offset": float(layer.offset)}
    else:
        described = {}
    return {"kind": layer.kind, "name": layer.name, **described}


def build(described: dict, kernel: np.ndarray | None = None, bias: np.ndarray | None = None) -> Layer:
    """The Layer of a JSON object whose ``kind`` the caller checked, with the ``kernel`` and ``bias`` it read for a
    weighted layer. KeyError / TypeError / ValueError when a setting is missing or malformed."""
    kind, name = described["kind"], str(described.get("name", ""))
    if kind == "rescale":
        return Layer(kind, name, scale=float(described["scale"]), offset=float(described["offset"]))
    if kind == "maxpool2d":
        return Layer(kind, name, pool_size=tuple(described["pool_size"]), strides=tuple(described["strides"]),
                     padding=described["padding"])
    if kind == "flatten":
        return Layer(kind, name)
    if kind == "dense":
        return Layer(kind, name, kernel, bias, described["activation"])
    return Layer(kind, name, kernel, bias, described["activation"], tuple(described["strides"]), described["padding"])


def weighted_shape(described: dict) -> tuple[int, ...]:
    """The kernel shape a weighted layer's object states (ValueError unless positive whole numbers)."""
    shape = tuple(int(v) for v in described["shape"])
    if len(shape) != (4 if described["kind"] == "conv2d" else 2) or min(shape) < 1:
        raise ValueError(f"layer {described.get('name', '')!r} states the kernel shape {shape}")
    return shape
