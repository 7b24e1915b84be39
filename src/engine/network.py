"""A feed-forward network as plain arrays: a sequence of layers (rescale, flatten, dense, conv2d, maxpool2d) and
its numpy forward pass, the dense reference every engine is held to.

Contracts and units:
- Images are NHWC (Keras's default): ``x`` is ``(N, H, W)`` (one channel) or ``(N, H, W, C)``; any dtype, read
  as float32. A net that starts with ``flatten`` also takes ``(N, features)``.
- ``dense`` kernels are ``(fan_in, fan_out)``; ``conv2d`` kernels ``(kh, kw, c_in, c_out)`` (Keras layouts);
  biases ``(fan_out,)`` / ``(c_out,)`` or None. Pruned weights are exact zeros.
- ``activation`` is applied after a layer: ``linear``, ``relu`` or ``softmax`` (the last layer only).
- ``conv2d`` has ``strides`` and ``padding`` (``valid`` or ``same``, as Keras pads); ``maxpool2d`` has
  ``pool_size``, ``strides`` and ``padding``; ``rescale`` computes ``x * scale + offset``.
The forward pass computes a conv layer as im2col + one BLAS matmul, so the dense baseline stays a strong one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

KINDS = ("rescale", "flatten", "dense", "conv2d", "maxpool2d")
WEIGHTED = ("dense", "conv2d")


@dataclass(frozen=True)
class Layer:
    """One layer; fields a kind does not use keep their defaults."""

    kind: str
    name: str = ""
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    activation: str = "linear"
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    pool_size: tuple[int, int] = (2, 2)
    scale: float = 1.0
    offset: float = 0.0


Network = list[Layer]


def weighted(net: Network) -> list[int]:
    """Indices of the layers that have a kernel (dense, conv2d), in order: the prunable ones."""
    return [i for i, layer in enumerate(net) if layer.kind in WEIGHTED]


def kernels_of(net: Network) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """(kernels, biases) of the weighted layers, in order."""
    return [net[i].kernel for i in weighted(net)], [net[i].bias for i in weighted(net)]


def with_weights(net: Network, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> Network:
    """``net`` with its weighted layers' kernels and biases replaced, in order (shapes may shrink: compaction)."""
    out, index = list(net), weighted(net)
    if len(index) != len(kernels):
        raise ValueError(f"the net has {len(index)} weighted layers, got {len(kernels)} kernels")
    for i, w, b in zip(index, kernels, biases, strict=True):
        out[i] = replace(out[i], kernel=w, bias=b)
    return out


def as_mlp(net: Network) -> tuple[list[np.ndarray], list[np.ndarray | None], float] | None:
    """(kernels, biases, input scale) when ``net`` is an MLP the dense-chain engines run as they are: optional
    flatten and offset-free rescale first, then dense layers, ReLU on all but the last (linear); else None."""
    scale, i = 1.0, 0
    while i < len(net) and net[i].kind in ("flatten", "rescale"):
        if net[i].kind == "rescale":
            if net[i].offset != 0:
                return None
            scale *= net[i].scale
        i += 1
    rest = net[i:]
    if not rest or any(layer.kind != "dense" for layer in rest):
        return None
    if any(layer.activation != "relu" for layer in rest[:-1]) or rest[-1].activation != "linear":
        return None
    return [layer.kernel for layer in rest], [layer.bias for layer in rest], scale


def _pad_same(x: np.ndarray, size: tuple[int, int], strides: tuple[int, int], fill: float) -> np.ndarray:
    """Pad H and W as Keras's ``padding="same"`` does (the odd pixel after)."""
    pads = []
    for dim, k, s in zip(x.shape[1:3], size, strides, strict=True):
        total = max((-(-dim // s) - 1) * s + k - dim, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)


def _windows(x: np.ndarray, size: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """``(N, H', W', C, kh, kw)`` view of the ``size`` windows of NHWC ``x`` at ``strides``."""
    view = np.lib.stride_tricks.sliding_window_view(x, size, axis=(1, 2))
    return view[:, ::strides[0], ::strides[1]]


def im2col(x: np.ndarray, size: tuple[int, int], strides: tuple[int, int], padding: str) -> np.ndarray:
    """Patches of NHWC ``x`` as rows ``(N * H' * W', kh * kw * C)``, in the order of a Keras kernel reshaped to
    ``(kh * kw * c_in, c_out)``."""
    if padding == "same":
        x = _pad_same(x, size, strides, 0.0)
    win = _windows(x, size, strides)  # (N, H', W', C, kh, kw)
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(-1, size[0] * size[1] * x.shape[3])


def conv_output_shape(h: int, w: int, size: tuple[int, int], strides: tuple[int, int], padding: str
                      ) -> tuple[int, int]:
    """Output height and width of a conv or pooling window over ``h`` x ``w``."""
    if padding == "same":
        return -(-h // strides[0]), -(-w // strides[1])
    return (h - size[0]) // strides[0] + 1, (w - size[1]) // strides[1] + 1


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, strides: tuple[int, int],
           padding: str) -> np.ndarray:
    """NHWC convolution (Keras's cross-correlation) as im2col + matmul: ``(N, H', W', c_out)`` float32."""
    kh, kw, c_in, c_out = kernel.shape
    ho, wo = conv_output_shape(x.shape[1], x.shape[2], (kh, kw), strides, padding)
    out = im2col(x, (kh, kw), strides, padding) @ kernel.reshape(kh * kw * c_in, c_out)
    if bias is not None:
        out += bias
    return out.reshape(len(x), ho, wo, c_out)


def maxpool2d(x: np.ndarray, pool_size: tuple[int, int], strides: tuple[int, int], padding: str) -> np.ndarray:
    """NHWC max pooling."""
    if padding == "same":
        x = _pad_same(x, pool_size, strides, -np.inf)
    if tuple(pool_size) == tuple(strides):  # non-overlapping windows: the max of ph * pw strided views (2.3x
        (ph, pw), oh, ow = pool_size, x.shape[1] // pool_size[0], x.shape[2] // pool_size[1]  # a reshape's max)
        out = x[:, :oh * ph:ph, :ow * pw:pw].copy()
        for i in range(ph):
            for j in range(pw):
                if i or j:
                    np.maximum(out, x[:, i:oh * ph:ph, j:ow * pw:pw], out=out)
        return out
    return _windows(x, pool_size, strides).max(axis=(4, 5))


def _activate(h: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(h, 0, out=h)
    if activation == "softmax":
        e = np.exp(h - h.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return h


def as_images(x: np.ndarray) -> np.ndarray:
    """float32 ``x``, with a channel axis added to ``(N, H, W)`` images."""
    x = np.asarray(x, dtype=np.float32)
    return x[..., None] if x.ndim == 3 else x


def forward(net: Network, x: np.ndarray) -> np.ndarray:
    """The network's output for ``x`` (numpy/BLAS, float32): logits ``(N, n_out)`` (probabilities when the last
    activation is softmax)."""
    h = as_images(x) if any(layer.kind in ("conv2d", "maxpool2d") for layer in net) else np.asarray(x, np.float32)
    for layer in net:
        if layer.kind == "rescale":
            h = h * np.float32(layer.scale) + np.float32(layer.offset)
        elif layer.kind == "flatten":
            h = h.reshape(len(h), -1)
        elif layer.kind == "dense":
            h = h @ layer.kernel  # on the last axis, as Keras's Dense
            if layer.bias is not None:
                h += layer.bias
        elif layer.kind == "conv2d":
            h = conv2d(h, layer.kernel, layer.bias, layer.strides, layer.padding)
        elif layer.kind == "maxpool2d":
            h = maxpool2d(h, layer.pool_size, layer.strides, layer.padding)
        else:
            raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r} (known: {', '.join(KINDS)})")
        if layer.kind in WEIGHTED:
            h = _activate(h, layer.activation)
    return h


def output_shapes(net: Network, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shape (without the batch axis) of each layer's output for inputs of ``input_shape`` (``(H, W)`` is
    read as ``(H, W, 1)`` when the net has a conv or pooling layer, as ``forward`` does). Raises ValueError
    naming the first layer whose kernel does not fit what it receives."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2 and any(layer.kind in ("conv2d", "maxpool2d") for layer in net):
        shape = (*shape, 1)
    shapes = []
    for layer in net:
        if layer.kind == "flatten":
            shape = (math.prod(shape),)
        elif layer.kind == "dense":
            if shape[-1] != layer.kernel.shape[0]:
                raise ValueError(f"layer {layer.name!r}: a {layer.kernel.shape[0]}-input dense kernel on {shape}")
            shape = (*shape[:-1], layer.kernel.shape[1])
        elif layer.kind in ("conv2d", "maxpool2d"):
            size = layer.kernel.shape[:2] if layer.kind == "conv2d" else layer.pool_size
            if len(shape) != 3 or (layer.kind == "conv2d" and shape[2] != layer.kernel.shape[2]):
                what = f"kernel {layer.kernel.shape}" if layer.kind == "conv2d" else "window"
                raise ValueError(f"layer {layer.name!r}: a {layer.kind} {what} on {shape}")
            h, w = conv_output_shape(shape[0], shape[1], tuple(size), layer.strides, layer.padding)
            if h < 1 or w < 1:
                raise ValueError(f"layer {layer.name!r}: its {tuple(size)} window does not fit {shape}")
            shape = (h, w, layer.kernel.shape[3] if layer.kind == "conv2d" else shape[2])
        elif layer.kind != "rescale":
            raise ValueError(f"layer {layer.name!r}: unknown kind {layer.kind!r} (known: {', '.join(KINDS)})")
        shapes.append(shape)
    return shapes
