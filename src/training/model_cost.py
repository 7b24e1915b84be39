"""What a Keras model costs per example: multiply-adds of its Dense and convolution layers (nested models walked
into). BatchNormalization, activations, pooling and adds are not counted (as in the papers' MAC counts)."""

from __future__ import annotations

import keras
import numpy as np

CONV = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose")


def macs(model: keras.Model) -> int:
    """Multiply-adds of one example: Dense in * out; a convolution its output positions x kernel size (a transposed
    one its input positions); a separable conv its depthwise and pointwise parts."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        kind = type(layer).__name__
        if kind in ("Dense", "EinsumDense"):
            total += int(np.prod(layer.kernel.shape))
        elif kind in CONV:
            where = layer.input if "Transpose" in kind else layer.output
            total += int(np.prod(where.shape[1:-1])) * int(np.prod(layer.kernel.shape))
        elif kind in ("SeparableConv1D", "SeparableConv2D"):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.depthwise_kernel.shape) + np.prod(layer.pointwise_kernel.shape))
    return total
