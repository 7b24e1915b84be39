"""numba sparse kernels for any Network (src/engine/network): convolutions, pooling, flatten and dense layers, and
the packing of a net into the flat arrays they run.

A net is packed into a short program of ops, each reading one activation plane and writing the next:
- CONV: a sparse convolution (a dense layer is one too: a 1x1 grid whose weights address the input rows
  directly), bias, ReLU or linear, and, when a ``valid`` max-pooling with strides equal to its window follows,
  that pooling fused in (max over the window's conv outputs, then bias and ReLU: both commute with the max).
  Its weights are a CSR per output filter: ``values`` and ``offsets``, the input row of each weight relative to
  the output position's window origin (``(dy * W + dx) * C + c`` in NHWC order).
- POOL: max pooling of any window, strides and padding (``same`` pads with -inf: the window is clipped).
- PAD: a copy into a zero-bordered plane, for ``same`` convolutions.
Flatten is free (planes are NHWC, Keras's flatten order); leading rescale layers become the input's scale and
offset; a softmax on the last layer is applied in numpy to the output.

Two kernels (``Engine.name`` in src/engine/net_engine.py):
- ``conv-csr-numba`` (batches): the scheme of src/engine/kernels.py's csr-numba carried to convolutions. Blocks of
  BLOCK = 128 samples, activations feature-major (row ``r`` of a plane is ``a[r * BLOCK:(r + 1) * BLOCK]``), all
  ops per block, blocks in parallel on numba threads. Each output row (position, filter) accumulates its 128
  samples in 8 vector registers over the filter's stored weights, ``acc += w * a[base + offset]``: 8 vector loads
  and 8 FMAs per weight and position, whatever the layer kind. Positions go outer, filters inner, so a window's
  input rows stay in L1/L2 while every filter reads them.
- ``conv-direct-numba`` (one example at a time): a direct sparse convolution (Park et al. 2017) on NCHW planes.
  Per filter and stored weight (c, dy, dx), one contiguous AXPY over the input channel's plane shifted by
  ``dy * W + dx`` (the output is computed at the full input width; the W - W' columns past each row's end are
  never read; the run is rounded up to whole vectors, whose extra lanes are never read either), 4 weights per
  pass over the run, then pooling (a vector max over the window's rows, then over its columns), bias and ReLU.
  A dense layer lists its nonzero inputs and adds ``a_i * w[i, :]`` for each (as scatter-numba: it skips zero
  activations, about half of a ReLU layer's).
Both return the dense forward pass's outputs to float32 summation-order error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from src.engine import simd
from src.engine.dense import as_input
from src.engine.network import Network, conv_output_shape, output_shapes

BLOCK = 8 * simd.LANES
OP_CONV, OP_POOL, OP_PAD = 0, 1, 2
# columns of the op table: kind; input plane; output plane (pooled); conv or pool strides; pooling window (conv: the
# fused one, 1 x 1 for none); ReLU; first CSR row and first bias; padding before (pool, pad); conv output grid
KIND, IN_H, IN_W, IN_C, OUT_H, OUT_W, OUT_C, SY, SX, PH, PW, RELU, ROW0, BIAS0, PAD_T, PAD_L, GRID_H, GRID_W = range(18)
N_COLUMNS = 18
LAYOUTS = ("nhwc", "nchw")  # conv-csr-numba's planes, conv-direct-numba's


class NotCovered(ValueError):
    """The net has a layer arrangement the sparse kernels do not run; the message says which (one line)."""


@dataclass(frozen=True)
class Program:
    """A net packed for one kernel: ``ops`` (int64, one row per op, columns above), the filters' CSR (``indptr``
    int64 into ``offsets`` int32 / ``values`` float32, rows numbered from each op's ROW0), ``bias`` float32 (from
    each op's BIAS0), ``out_rows``: the plane row of each output value in NHWC order. ``width``: the largest
    plane in rows; ``acc_size``: the per-example kernel's scratch (floats). The input is multiplied by
    ``scale`` and ``offset`` added; ``out_shape``: one example's output (no batch axis)."""

    layout: str
    ops: np.ndarray
    indptr: np.ndarray
    offsets: np.ndarray
    values: np.ndarray
    bias: np.ndarray
    out_rows: np.ndarray
    width: int
    acc_size: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    scale: float
    offset: float
    softmax: bool

    @property
    def n_weights(self) -> int:
        return len(self.values)


def _row(layout: str, plane: tuple[int, int, int], y: np.ndarray, x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The row of element (y, x, c) in a plane of shape ``plane`` (H, W, C) in ``layout``."""
    h, w, ch = plane
    return (y * w + x) * ch + c if layout == "nhwc" else (c * h + y) * w + x


def _flat_rows(layout: str, plane: tuple[int, int, int]) -> np.ndarray:
    """Rows of a plane's elements in NHWC-flatten order (Keras's Flatten)."""
    h, w, c = plane
    y, x, ch = np.unravel_index(np.arange(h * w * c), (h, w, c))
    return _row(layout, plane, y, x, ch).astype(np.int64)


class _Packer:
    """Accumulates ops and their weights (see :func:`pack`)."""

    def __init__(self, layout: str) -> None:
        self.layout, self.ops, self.indptr, self.offsets, self.values, self.bias = layout, [], [0], [], [], []

    def op(self, **columns: int) -> np.ndarray:
        row = np.zeros(N_COLUMNS, np.int64)
        row[[SY, SX, PH, PW, GRID_H, GRID_W]] = 1
        for name, value in columns.items():
            row[globals()[name.upper()]] = value
        self.ops.append(row)
        return row

    def filters(self, columns: list[tuple[np.ndarray, np.ndarray]], bias: np.ndarray | None, n: int) -> tuple[int, int]:
        """Add one CSR row per filter: (offsets, values) each; returns (ROW0, BIAS0)."""
        row0, bias0 = len(self.indptr) - 1, sum(len(b) for b in self.bias)
        for offsets, values in columns:
            self.offsets.append(offsets.astype(np.int64))
            self.values.append(values.astype(np.float32))
            self.indptr.append(self.indptr[-1] + len(values))
        self.bias.append(np.zeros(n, np.float32) if bias is None else np.asarray(bias, np.float32))
        return row0, bias0


def _leading(net: Network) -> tuple[float, float, int]:
    """(scale, offset, index of the first other layer) of the net's leading rescale and flatten layers."""
    scale, offset, i = 1.0, 0.0, 0
    while i < len(net) and net[i].kind in ("rescale", "flatten"):
        if net[i].kind == "rescale":
            scale, offset = scale * net[i].scale, offset * net[i].scale + net[i].offset
        i += 1
    return scale, offset, i


def pack(net: Network, input_shape: tuple[int, ...], layout: str) -> Program:
    """The program of ``net`` (compacted or not) for inputs of ``input_shape`` (no batch axis: ``(H, W)``,
    ``(H, W, C)`` or ``(features,)``) in ``layout`` ("nhwc": conv-csr-numba, "nchw": conv-direct-numba).
    Raises NotCovered for a rescale after the first other layer, a softmax before the last layer, or an
    unknown layer kind; ValueError if a kernel does not fit its input."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    shapes = output_shapes(net, input_shape)
    first = tuple(int(v) for v in input_shape)
    first = (*first, 1) if len(first) == 2 else first
    plane = first if len(first) == 3 else (1, 1, first[0])
    scale, offset, start = _leading(net)
    flat = len(first) != 3 or any(layer.kind == "flatten" for layer in net[:start])
    p = _Packer(layout)
    source = plane  # the plane a flattened vector's rows live in
    fused_ok = False
    for i in range(start, len(net)):
        layer = net[i]
        if layer.kind == "rescale":
            raise NotCovered(f"layer {layer.name or i} (rescale) after the first weighted or pooling layer")
        if layer.activation == "softmax" and i != len(net) - 1:
            raise NotCovered(f"layer {layer.name or i}: a softmax that is not the output")
        if layer.kind == "flatten":
            flat = True
            continue
        if layer.kind == "maxpool2d":
            if flat:
                raise NotCovered(f"layer {layer.name or i}: pooling a flattened vector")
            h, w, c = plane
            oh, ow, _ = shapes[i]
            ph, pw = layer.pool_size
            prev = p.ops[-1] if p.ops else None
            if (fused_ok and layer.padding == "valid" and tuple(layer.strides) == (ph, pw)
                    and prev[PH] == 1 and prev[PW] == 1):
                prev[PH], prev[PW], prev[OUT_H], prev[OUT_W] = ph, pw, h // ph, w // pw
            else:
                pt = max((oh - 1) * layer.strides[0] + ph - h, 0) // 2 if layer.padding == "same" else 0
                pl = max((ow - 1) * layer.strides[1] + pw - w, 0) // 2 if layer.padding == "same" else 0
                p.op(kind=OP_POOL, in_h=h, in_w=w, in_c=c, out_h=oh, out_w=ow, out_c=c, sy=layer.strides[0],
                     sx=layer.strides[1], ph=ph, pw=pw, pad_t=pt, pad_l=pl)
            plane, source, fused_ok = shapes[i], shapes[i], False
            continue
        if layer.kind == "dense" and flat:
            rows = _flat_rows(layout, source) if source[0] * source[1] > 1 else np.arange(source[2])
            w = np.asarray(layer.kernel, np.float32)
            if layout == "nhwc":  # a CSR row per output unit, addressing the input rows
                cols = [(rows[np.flatnonzero(w[:, f])], w[np.flatnonzero(w[:, f]), f]) for f in range(w.shape[1])]
            else:  # a CSR row per input row (in plane order), addressing the output units: scattered
                by_row = np.zeros_like(w)
                by_row[rows] = w
                cols = [(np.flatnonzero(r), r[np.flatnonzero(r)]) for r in by_row]
            row0, bias0 = p.filters(cols, layer.bias, w.shape[1])
            p.op(kind=OP_CONV, in_h=1, in_w=1, in_c=int(np.prod(source)), out_h=1, out_w=1, out_c=w.shape[1],
                 relu=layer.activation == "relu", row0=row0, bias0=bias0)
            plane = source = (1, 1, w.shape[1])
            fused_ok = False  # pooling after a dense layer needs a plane: there is none
            continue
        if layer.kind not in ("dense", "conv2d"):
            raise NotCovered(f"layer {layer.name or i}: kind {layer.kind!r}")
        kernel = np.asarray(layer.kernel, np.float32)
        kernel = kernel.reshape(1, 1, *kernel.shape) if layer.kind == "dense" else kernel
        kh, kw, c_in, f_out = kernel.shape
        h, w, c = plane
        strides, padding = (tuple(layer.strides), layer.padding) if layer.kind == "conv2d" else ((1, 1), "valid")
        gh, gw = conv_output_shape(h, w, (kh, kw), strides, padding)
        if padding == "same":
            th = max((gh - 1) * strides[0] + kh - h, 0)
            tw = max((gw - 1) * strides[1] + kw - w, 0)
            if th or tw:
                padded = (h + th, w + tw, c)
                p.op(kind=OP_PAD, in_h=h, in_w=w, in_c=c, out_h=padded[0], out_w=padded[1], out_c=c,
                     pad_t=th // 2, pad_l=tw // 2)
                plane = h, w, c = padded
        cols = []
        for f in range(f_out):
            dy, dx, ch = np.nonzero(kernel[:, :, :, f])
            rel = (dy * w + dx) * c + ch if layout == "nhwc" else (ch * h + dy) * w + dx
            cols.append((rel, kernel[dy, dx, ch, f]))
        row0, bias0 = p.filters(cols, layer.bias, f_out)
        p.op(kind=OP_CONV, in_h=h, in_w=w, in_c=c, out_h=gh, out_w=gw, out_c=f_out, sy=strides[0], sx=strides[1],
             relu=layer.activation == "relu", row0=row0, bias0=bias0, grid_h=gh, grid_w=gw)
        plane = source = (gh, gw, f_out)
        fused_ok = True
    if not p.ops:
        raise NotCovered("the net has no weighted or pooling layer")
    out_shape = shapes[-1]
    out_rows = _flat_rows(layout, source) if flat or len(out_shape) == 3 else np.arange(out_shape[0])
    planes = [int(np.prod(first))] + [int(np.prod(op[[IN_H, IN_W, IN_C]])) for op in p.ops]
    planes += [int(np.prod(op[[OUT_H, OUT_W, OUT_C]])) for op in p.ops]
    acc = max([int(op[GRID_H] * max(op[GRID_W], op[IN_W])) for op in p.ops if op[KIND] == OP_CONV] + [1])
    return Program(layout, np.array(p.ops, np.int64), np.array(p.indptr, np.int64),
                   np.concatenate(p.offsets).astype(np.int32) if p.offsets else np.zeros(0, np.int32),
                   np.concatenate(p.values) if p.values else np.zeros(0, np.float32),
                   np.concatenate(p.bias) if p.bias else np.zeros(0, np.float32), out_rows.astype(np.int64),
                   max(planes), acc, first, tuple(out_shape), scale, offset, net[-1].activation == "softmax")


# ---------------------------------------------------------------- conv-csr-numba: blocks of 128 samples, NHWC

@njit(fastmath=True, boundscheck=False, cache=True, inline="always")
def _conv_block(a, c, op, indptr, offsets, values, bias):  # pragma: no cover - compiled
    """One CONV op on a block: for each pooled position and filter, the max over the pooling window of the
    filter's sums (8 vector registers each), then bias and ReLU, stored once."""
    w, ch = op[IN_W], op[IN_C]
    out_h, out_w, n_f = op[OUT_H], op[OUT_W], op[OUT_C]
    sy, sx, ph, pw = op[SY], op[SX], op[PH], op[PW]
    relu, row0, bias0 = op[RELU], op[ROW0], op[BIAS0]
    low = simd.splat(np.float32(-np.inf))
    zero = simd.splat(np.float32(0.0))
    for py in range(out_h):
        for px in range(out_w):
            for f in range(n_f):
                q0, q1 = indptr[row0 + f], indptr[row0 + f + 1]
                m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = low
                for wy in range(ph):
                    for wx in range(pw):
                        base = ((py * ph + wy) * sy * w + (px * pw + wx) * sx) * ch
                        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
                        for q in range(q0, q1):
                            v, o = values[q], (base + np.intp(offsets[q])) * BLOCK
                            s0 = simd.fma(s0, v, simd.load(a, o))
                            s1 = simd.fma(s1, v, simd.load(a, o + 16))
                            s2 = simd.fma(s2, v, simd.load(a, o + 32))
                            s3 = simd.fma(s3, v, simd.load(a, o + 48))
                            s4 = simd.fma(s4, v, simd.load(a, o + 64))
                            s5 = simd.fma(s5, v, simd.load(a, o + 80))
                            s6 = simd.fma(s6, v, simd.load(a, o + 96))
                            s7 = simd.fma(s7, v, simd.load(a, o + 112))
                        m0, m1 = simd.maximum(m0, s0), simd.maximum(m1, s1)
                        m2, m3 = simd.maximum(m2, s2), simd.maximum(m3, s3)
                        m4, m5 = simd.maximum(m4, s4), simd.maximum(m5, s5)
                        m6, m7 = simd.maximum(m6, s6), simd.maximum(m7, s7)
                b = simd.splat(bias[bias0 + f])
                m0, m1, m2, m3 = simd.add(m0, b), simd.add(m1, b), simd.add(m2, b), simd.add(m3, b)
                m4, m5, m6, m7 = simd.add(m4, b), simd.add(m5, b), simd.add(m6, b), simd.add(m7, b)
                if relu:
                    m0, m1, m2, m3 = simd.relu(m0), simd.relu(m1), simd.relu(m2), simd.relu(m3)
                    m4, m5, m6, m7 = simd.relu(m4), simd.relu(m5), simd.relu(m6), simd.relu(m7)
                o = ((py * out_w + px) * n_f + f) * BLOCK
                simd.store(c, o, m0)
                simd.store(c, o + 16, m1)
                simd.store(c, o + 32, m2)
                simd.store(c, o + 48, m3)
                simd.store(c, o + 64, m4)
                simd.store(c, o + 80, m5)
                simd.store(c, o + 96, m6)
                simd.store(c, o + 112, m7)


@njit(fastmath=True, boundscheck=False, cache=True, inline="always")
def _pool_block(a, c, op):  # pragma: no cover - compiled
    """One POOL op on a block: max over each window, clipped to the plane (``same`` padding is -inf)."""
    h, w, ch = op[IN_H], op[IN_W], op[IN_C]
    for oy in range(op[OUT_H]):
        y0 = oy * op[SY] - op[PAD_T]
        for ox in range(op[OUT_W]):
            x0 = ox * op[SX] - op[PAD_L]
            for k in range(ch):
                o = ((oy * op[OUT_W] + ox) * ch + k) * BLOCK
                for lane in range(0, BLOCK, simd.LANES):
                    m = simd.splat(np.float32(-np.inf))
                    for y in range(max(y0, 0), min(y0 + op[PH], h)):
                        for x in range(max(x0, 0), min(x0 + op[PW], w)):
                            m = simd.maximum(m, simd.load(a, ((y * w + x) * ch + k) * BLOCK + lane))
                    simd.store(c, o + lane, m)


@njit(fastmath=True, boundscheck=False, cache=True, inline="always")
def _pad_block(a, c, op):  # pragma: no cover - compiled
    """One PAD op on a block: ``c`` is ``a`` inside a zero border."""
    h, w, ch, out_w = op[IN_H], op[IN_W], op[IN_C], op[OUT_W]
    c[:op[OUT_H] * out_w * ch * BLOCK] = 0.0
    for y in range(h):
        src = y * w * ch * BLOCK
        dst = ((y + op[PAD_T]) * out_w + op[PAD_L]) * ch * BLOCK
        c[dst:dst + w * ch * BLOCK] = a[src:src + w * ch * BLOCK]


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _block_forward(x, scale, ops, indptr, offsets, values, bias, out_rows, scratch):  # pragma: no cover
    """``x``: (n, features) uint8 or float32, NHWC rows. Blocks of BLOCK samples, transposed 16 x 16 into
    feature-major planes (scaled as read), all ops per block; each of ``scratch``'s chunks (simd.scratch) is a
    thread's run of blocks and its two buffers."""
    (n, fan_in), n_chunks = x.shape, scratch.shape[0]
    n_out = out_rows.size
    pixels = x.reshape(-1)
    out = np.empty((n, n_out), np.float32)
    n_blocks = (n + BLOCK - 1) // BLOCK
    per_chunk = (n_blocks + n_chunks - 1) // n_chunks
    full_cols = fan_in - fan_in % simd.LANES
    for chunk in prange(n_chunks):
        buf_a, buf_c = scratch[chunk, 0], scratch[chunk, 1]
        for blk in range(chunk * per_chunk, min(n_blocks, (chunk + 1) * per_chunk)):
            b0 = blk * BLOCK
            nb = min(BLOCK, n - b0)
            a, c = buf_a, buf_c
            full = nb - nb % simd.LANES
            for r0 in range(0, full, simd.LANES):
                for c0 in range(0, full_cols, simd.LANES):
                    simd.transpose_tile(pixels, (b0 + r0) * fan_in + c0, fan_in, a, c0 * BLOCK + r0, BLOCK, scale,
                                        simd.ALL_COLUMNS)
            for col in range(fan_in):  # the rest: rows past the last 16, columns past the last 16, zeros
                first = full if col < full_cols else 0
                row = a[col * BLOCK:(col + 1) * BLOCK]
                for b in range(first, nb):
                    row[b] = np.float32(x[b0 + b, col]) * scale
                row[nb:] = 0.0
            for i in range(ops.shape[0]):
                op = ops[i]
                if op[KIND] == OP_CONV:
                    _conv_block(a, c, op, indptr, offsets, values, bias)
                elif op[KIND] == OP_POOL:
                    _pool_block(a, c, op)
                else:
                    _pad_block(a, c, op)
                a, c = c, a
            for b in range(nb):
                for j in range(n_out):
                    out[b0 + b, j] = a[out_rows[j] * BLOCK + b]
    return out


# ---------------------------------------------------------------- conv-direct-numba: one example at a time, NCHW

@njit(fastmath=True, boundscheck=False, cache=True, inline="always")
def _conv_direct(a, c, acc, pooled, listed, op, indptr, offsets, values, bias):  # pragma: no cover - compiled
    h, w = op[IN_H], op[IN_W]
    out_h, out_w, n_f = op[OUT_H], op[OUT_W], op[OUT_C]
    sy, sx, ph, pw = op[SY], op[SX], op[PH], op[PW]
    gh, gw = op[GRID_H], op[GRID_W]
    relu, row0, bias0 = op[RELU], op[ROW0], op[BIAS0]
    if h * w == 1:  # a dense layer: CSR rows by input; the nonzero inputs are listed, then scattered
        c[:n_f] = bias[bias0:bias0 + n_f]
        n_in = op[IN_C]
        n_listed = 0
        for i in range(n_in):
            listed[n_listed] = i
            n_listed += a[i] != 0
        for k in range(n_listed):
            i = listed[k]
            v = a[i]
            for q in range(indptr[row0 + i], indptr[row0 + i + 1]):
                c[offsets[q]] += v * values[q]
        if relu:
            for f in range(n_f):
                c[f] = max(c[f], np.float32(0.0))
        return
    unit = sy == 1 and sx == 1
    row = w if unit else gw  # acc holds the grid at the input's width (stride 1) or at its own
    span = (gh - 1) * w + gw
    span = span + (-span) % simd.LANES  # whole vectors: the lanes past the grid are computed, never read
    for f in range(n_f):
        q, q1 = indptr[row0 + f], indptr[row0 + f + 1]
        if unit:
            dst = acc[:span]
            dst[:] = 0.0
            while q + 4 <= q1:  # 4 weights per pass: one load and store of acc per 4 FMAs (1.5x, measured)
                v0, v1, v2, v3 = values[q], values[q + 1], values[q + 2], values[q + 3]
                s0, s1 = a[offsets[q]:offsets[q] + span], a[offsets[q + 1]:offsets[q + 1] + span]
                s2, s3 = a[offsets[q + 2]:offsets[q + 2] + span], a[offsets[q + 3]:offsets[q + 3] + span]
                for p in range(span):  # slices: LLVM vectorizes this loop (with a[offsets[q] + p] it does not)
                    dst[p] += v0 * s0[p] + v1 * s1[p] + v2 * s2[p] + v3 * s3[p]
                q += 4
            while q < q1:
                v0, s0 = values[q], a[offsets[q]:offsets[q] + span]
                for p in range(span):
                    dst[p] += v0 * s0[p]
                q += 1
        else:
            acc[:gh * gw] = 0.0
            for k in range(q, q1):
                v, off = values[k], offsets[k]
                for y in range(gh):
                    for x in range(gw):
                        acc[y * gw + x] += v * a[off + y * sy * w + x * sx]
        b = bias[bias0 + f]
        across = out_w * pw
        for py in range(out_h):  # the max over the window's rows, a vector op, then over its columns
            top = acc[py * ph * row:py * ph * row + across]
            pooled[:across] = top
            for wy in range(1, ph):
                below = acc[(py * ph + wy) * row:(py * ph + wy) * row + across]
                for p in range(across):
                    pooled[p] = max(pooled[p], below[p])
            for px in range(out_w):
                m = pooled[px * pw]
                for wx in range(1, pw):
                    m = max(m, pooled[px * pw + wx])
                m += b
                c[(f * out_h + py) * out_w + px] = max(m, np.float32(0.0)) if relu else m


@njit(fastmath=True, boundscheck=False, cache=True, inline="always")
def _pool_direct(a, c, op):  # pragma: no cover - compiled
    h, w = op[IN_H], op[IN_W]
    out_h, out_w = op[OUT_H], op[OUT_W]
    for k in range(op[IN_C]):
        for oy in range(out_h):
            y0 = oy * op[SY] - op[PAD_T]
            for ox in range(out_w):
                x0 = ox * op[SX] - op[PAD_L]
                m = np.float32(-np.inf)
                for y in range(max(y0, 0), min(y0 + op[PH], h)):
                    for x in range(max(x0, 0), min(x0 + op[PW], w)):
                        m = max(m, a[(k * h + y) * w + x])
                c[(k * out_h + oy) * out_w + ox] = m


@njit(fastmath=True, boundscheck=False, cache=True, inline="always")
def _pad_direct(a, c, op):  # pragma: no cover - compiled
    h, w, out_h, out_w = op[IN_H], op[IN_W], op[OUT_H], op[OUT_W]
    c[:op[IN_C] * out_h * out_w] = 0.0
    for k in range(op[IN_C]):
        for y in range(h):
            dst = (k * out_h + y + op[PAD_T]) * out_w + op[PAD_L]
            c[dst:dst + w] = a[(k * h + y) * w:(k * h + y + 1) * w]


@njit(fastmath=True, boundscheck=False, cache=True)
def _direct_forward(x, scale, ops, indptr, offsets, values, bias, out_rows, width, acc_size):  # pragma: no cover
    """``x``: (n, features) uint8 or float32, NCHW rows; one example at a time, all ops."""
    n, fan_in = x.shape
    n_out = out_rows.size
    out = np.empty((n, n_out), np.float32)
    buf_a = np.zeros(width + simd.LANES, np.float32)  # + a vector: a rounded-up run reads past the plane
    buf_c = np.zeros(width + simd.LANES, np.float32)
    acc = np.zeros(acc_size + simd.LANES, np.float32)
    listed = np.empty(width, np.int64)
    pooled = np.empty(width, np.float32)
    for s in range(n):
        a, c = buf_a, buf_c
        for i in range(fan_in):
            a[i] = np.float32(x[s, i]) * scale
        for i in range(ops.shape[0]):
            op = ops[i]
            if op[KIND] == OP_CONV:
                _conv_direct(a, c, acc, pooled, listed, op, indptr, offsets, values, bias)
            elif op[KIND] == OP_POOL:
                _pool_direct(a, c, op)
            else:
                _pad_direct(a, c, op)
            a, c = c, a
        for j in range(n_out):
            out[s, j] = a[out_rows[j]]
    return out


def _softmax(h: np.ndarray) -> np.ndarray:
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def network_forward(program: Program):
    """The forward pass of ``program``: a function ``x -> outputs`` (float32, ``(N, *out_shape)``) for inputs
    ``(N, *in_shape)`` (or ``(N, H, W)`` for one channel; uint8 is read as it is, other dtypes as float32)."""
    args = (program.ops, program.indptr, program.offsets, program.values, program.bias, program.out_rows,
            program.width)
    h, w, c = program.in_shape if len(program.in_shape) == 3 else (1, 1, program.in_shape[0])
    transpose = program.layout == "nchw" and c > 1 and h * w > 1
    pool = simd.ScratchPool(numba.get_num_threads(), program.width * BLOCK) if program.layout == "nhwc" else None

    def run(x: np.ndarray) -> np.ndarray:
        x = as_input(x)
        n = len(x)
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != h * w * c:  # the kernels index the rows unchecked
            raise ValueError(f"the sparse engine takes inputs of shape (n, {', '.join(map(str, program.in_shape))}), "
                             f"not {x.shape}")
        scale = np.float32(program.scale)
        if program.offset != 0:  # rare: a leading Rescaling with an offset; applied here, in float32
            x = np.asarray(x, np.float32) * scale + np.float32(program.offset)
            scale = np.float32(1.0)
        if transpose:
            x = np.ascontiguousarray(x.reshape(n, h, w, c).transpose(0, 3, 1, 2))
        x = x.reshape(n, -1)
        if program.layout == "nhwc":
            with pool.borrow() as scratch:
                out = _block_forward(x, scale, *args[:-1], scratch)
        else:
            out = _direct_forward(x, scale, *args, program.acc_size)
        out = out.reshape(n, *program.out_shape)
        return _softmax(out) if program.softmax else out
    return run
