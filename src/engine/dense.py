"""The numpy reference of a pruned ReLU MLP: the dense forward pass, unit compaction and density.

Contracts and units:
- ``kernels[i]``: float32 array ``(fan_in, fan_out)`` (Keras layout); ``biases[i]``: float32 ``(fan_out,)`` or
  None (``biases`` itself may be None: no biases). Pruned weights are exact zeros.
- ``x``: ``(N, fan_in of layer 0)``, float32 pixels scaled to 0..1; or raw uint8 pixels with
  ``build_engine(..., input_scale=1/255)`` (the sparse kernels read them as they are: a quarter of the bytes).
- Forward: hidden layer ``h = relu(h @ w + b)``; the last layer gives logits (no ReLU), float32 ``(N, n_out)``.
- Every engine returns the logits of ``forward_dense`` on the same kernels to within float32 summation-order
  error (tests hold it to max abs diff 1e-3). Times are milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Kernels = Sequence[np.ndarray]
Biases = Sequence[np.ndarray | None] | None


def as_input(x: np.ndarray) -> np.ndarray:
    """``x`` as the engines read it: C-contiguous uint8 if it is uint8, else float32 (no copy when it already is)."""
    x = np.asarray(x)
    return np.ascontiguousarray(x if x.dtype == np.uint8 else x.astype(np.float32, copy=False))


def bias_list(kernels: Kernels, biases: Biases) -> list[np.ndarray | None]:
    return [None] * len(kernels) if biases is None else list(biases)


def forward_dense(kernels: Kernels, biases: Biases, x: np.ndarray) -> np.ndarray:
    """Dense reference forward pass (numpy/BLAS, float32): logits ``(N, n_out)``; other input dtypes (raw uint8
    pixels) are converted to float32 first. (Converting in cache-sized chunks as the first layer reads them
    was measured too: no steady gain.)"""
    h = np.asarray(x, dtype=np.float32)
    last = len(kernels) - 1
    for i, (w, b) in enumerate(zip(kernels, bias_list(kernels, biases), strict=True)):
        h = h @ w
        if b is not None:
            h += b
        if i < last:
            np.maximum(h, 0, out=h)
    return h


def compact_units(kernels: Kernels, biases: Biases) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Drop dead hidden units: those with no input (all-zero column in layer i and zero bias, if any: they
    always output relu(0) = 0) and those with no output (all-zero row in layer i+1: nothing reads them),
    with their column in layer i and row in layer i+1, repeated until none is left (a drop can leave a
    unit of a neighbouring layer with no input or no output).

    The logits are unchanged. Logits columns are never removed; a hidden layer whose units are all dead
    keeps its first unit, so the result stays a valid MLP (Keras Dense needs units >= 1). Returns new
    lists; ``biases`` comes back as a list (None entries kept).
    """
    ws, bs = list(kernels), bias_list(kernels, biases)
    changed = True
    while changed:
        changed = False
        for i in range(len(ws) - 1):
            alive = ws[i].any(axis=0) & ws[i + 1].any(axis=1)
            if bs[i] is not None:
                alive |= (bs[i] != 0) & ws[i + 1].any(axis=1)
            if not alive.any():
                alive[0] = True
            if alive.all():
                continue
            ws[i], ws[i + 1] = ws[i][:, alive], ws[i + 1][alive, :]
            bs[i] = None if bs[i] is None else bs[i][alive]
            changed = True
    return ws, bs


def density(kernels: Kernels) -> float:
    """Fraction of nonzero entries over all ``kernels`` (0..1)."""
    total = sum(w.size for w in kernels)
    return sum(int(np.count_nonzero(w)) for w in kernels) / total if total else 0.0
