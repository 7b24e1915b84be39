"""Compaction of any Network (src/engine/network): dead output channels (dense units, conv filters) removed with the
next weighted layer's matching inputs, so a unit- or filter-pruned net runs as the smaller net it is.

Contracts:
- A channel (last axis) of weighted layer i is dead when it has no input (its kernel slice all zero and its bias
  zero or absent: it always outputs act(0) = 0) or no output (the next weighted layer j reads it with all-zero
  weights). It is removed from layer i (kernel's last axis, bias) and from layer j's inputs: a conv's input
  channel (kernel axis 2), a dense's rows ``r`` with ``r % C_i == c`` (after a flatten, Keras's NHWC order puts
  channel c of every spatial position at those rows; without one it is row c), repeated until none is left.
- Between i and j only pooling, flatten and rescale layers may sit (the others are weighted); a zero channel
  stays zero through pooling and flatten, not through a rescale with an offset: then only the no-output rule
  applies. A softmax on layer i (not channel-wise) keeps its channels.
- The net's output channels are never removed; a layer whose channels are all dead keeps its first one, so the
  result stays a valid net. Logits equal the input net's to float32 rounding (exactly the same sums, fewer zeros).
"""

from __future__ import annotations

import numpy as np

from src.engine.network import Network, kernels_of, weighted, with_weights


def _reads(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Bool per input channel of a layer with ``kernel``: whether any of its weights reads that channel."""
    if kernel.ndim == 4:
        return kernel.any(axis=(0, 1, 3))
    rows = kernel.any(axis=1)
    return np.bincount(np.arange(len(rows)) % channels, weights=rows, minlength=channels) > 0


def _drop_inputs(kernel: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``kernel`` without the input channels ``~keep`` (all spatial positions' rows for a flattened dense)."""
    if kernel.ndim == 4:
        return kernel[:, :, keep, :]
    return kernel[keep[np.arange(kernel.shape[0]) % len(keep)]]


def _offset_between(net: Network, i: int, j: int) -> bool:
    return any(layer.kind == "rescale" and layer.offset != 0 for layer in net[i + 1:j])


def compact_network(net: Network) -> Network:
    """``net`` with its dead channels removed (module docstring); a new list, the input is unchanged."""
    index = weighted(net)
    ws, bs = (list(v) for v in kernels_of(net))
    changed = True
    while changed:
        changed = False
        for n, (i, j) in enumerate(zip(index, index[1:], strict=False)):
            channels = ws[n].shape[-1]
            if ws[n + 1].shape[-2 if ws[n + 1].ndim == 4 else 0] % channels:
                continue  # layer j does not read layer i's channels as a whole number of positions: leave it
            read = _reads(ws[n + 1], channels)
            alive = read.copy()
            if net[i].activation == "softmax":
                alive[:] = True
            elif not _offset_between(net, i, j):
                fed = ws[n].reshape(-1, channels).any(axis=0)
                if bs[n] is not None:
                    fed |= bs[n] != 0
                alive &= fed
            if not alive.any():
                alive[0] = True
            if alive.all():
                continue
            ws[n] = ws[n][..., alive]
            bs[n] = None if bs[n] is None else bs[n][alive]
            ws[n + 1] = _drop_inputs(ws[n + 1], alive)
            changed = True
    return with_weights(net, ws, bs)


def macs(net: Network, shapes: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    """(multiply-adds of the dense layer, of its nonzero weights) per weighted layer, per example; ``shapes``:
    src/engine/network.output_shapes of the net (each weight is used once per output position)."""
    out = []
    for i in weighted(net):
        positions = int(np.prod(shapes[i][:-1]))
        kernel: np.ndarray = net[i].kernel
        out.append((positions * kernel.size, positions * int(np.count_nonzero(kernel))))
    return out


def mac_density(net: Network, shapes: list[tuple[int, ...]]) -> float:
    """Multiply-adds of the nonzero weights over those of all weights, per example (0..1)."""
    pairs = macs(net, shapes)
    total = sum(d for d, _ in pairs)
    return sum(k for _, k in pairs) / total if total else 0.0

