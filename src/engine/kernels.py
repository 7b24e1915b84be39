"""numba sparse kernels for pruned ReLU MLPs, and the packing of a net's kernels into their flat arrays.

Same contracts as src/engine/dense.py: every kernel returns ``forward_dense``'s logits to within float32
summation-order error, for finite inputs (compiled with fastmath: a NaN may come out as 0 where numpy propagates
it). Two kernels (``Engine.name`` in src/engine/choice.py):
- ``scatter-numba``: small batches. CSR of each ``w`` by INPUT row; per sample, the nonzero activations are
  listed and each ``a_i`` adds ``a_i * w[i, :]`` (its stored nonzeros) into the layer's output. It skips pruned
  weights and zero activations alike (MNIST pixels are ~80% zero; a trained ReLU layer's outputs are mostly
  zero), so its speed depends on the model and the data, not only on k. Its loop is bound by loads and
  stores (~1.4 cycles per multiply-add here), so it takes 4 entries per step with one vector load of weights
  and one of 2 index pairs. Serial: a 2-thread version (work units claimed with atomics, one barrier per
  layer) gained 0-15% here, where the two vCPUs often share one physical core, and its spinning threads
  fought OpenBLAS's; a SELL-16 gather kernel lost to it at every k but 99 (benchmarks/RESULTS.md).
- ``csr-numba``: larger batches. Each ``w.T`` cut into segments (an output row's weights within one chunk of
  inputs, :func:`_segments`); the batch is cut into blocks of 128 samples held feature-major (``(width, 128)``
  float32, 0.5 MB: L2-resident), all layers run per block, blocks in parallel on numba threads (as many as usable
  cores). The block's inputs are transposed 16 x 16 in registers (only the 16-input groups layer 1 reads). Each
  segment holds its output row's 128 samples in 8 vector registers (src/simd), starts from the bias or the row's
  partial sum, streams ``acc += w * h_in[col, :]`` and stores the row (ReLU'd after its last segment). Each weight
  costs 8 vector loads (512 bytes) and 8 FMAs. Unchunked (one segment a row), the rows read come from anywhere in
  the 0.5 MB block, from L2: ~11 multiply-adds per cycle per core, ~44 bytes per cycle, a core's L2 bandwidth. In
  chunks of about SEGMENT_WEIGHTS weights a row (128 inputs at 10% density, 64 from 19% up), every segment
  of a chunk reads the same 64 KB of rows, and the chunk's segments go shortest first, so the inner loop's exit is
  predicted: at batch 2000, 2 threads, Intel Xeon, 12-06: k=90 1.28x, k=80 1.44x, k=50 1.67x faster than
  unchunked; at k=99 a chunk would hold one weight a row, so its layers stay whole (chunks of 1-4 weights a row
  were 1.2-1.4x slower, unsorted chunks of 6 1.25x slower). (The kernel before it loaded and stored the output row
  at every 4 weights: 1.3x slower. Blocks of 64 or 32 samples, software prefetch of the rows 2-8 weights ahead,
  skipping rows all zero in a block (7% of the weights), units renumbered by row length, no multiply for float
  input at scale 1: no steady gain, benchmarks/RESULTS.md.) Blocks of at most 64 samples run with 4 registers a
  row (``_narrow_segment``): a call of at most 64 on the calling thread (``_csr_narrow``), and each thread's last
  block when that short.
The sparse engines run on the compacted net and keep indices as uint16 (widths < 65536). Library kernels
(scipy.sparse, MKL through sparse_dot_mkl, pydata sparse, TensorFlow) were measured and were all slower than
these: ``python benchmarks/sparse_bench.py --candidates``, numbers in benchmarks/RESULTS.md.

"""

from __future__ import annotations

import os

import llvmlite.ir as llir
import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from src.engine import simd
from src.engine.dense import Kernels

BLOCK = 8 * simd.LANES  # samples per block in the batched kernel: 8 vector registers per output row
NARROW = 4 * simd.LANES  # calls of at most this many samples a thread: blocks of 4 registers per row
SMALL_BATCH = 8  # calls of fewer rows run the per-sample kernel (it won at batch 1-4, the blocked kernel from 8 on)
SEGMENT_WEIGHTS = 12  # a layer's inputs are cut in chunks holding about this many of an output row's weights

numba.set_num_threads(min(numba.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0))))


# ---------------------------------------------------------------- packing (build time, numpy only)

def _chunk_size(fan_in: int, density: float) -> int:
    """Inputs per chunk for a layer of this density: about SEGMENT_WEIGHTS of an output row's weights a chunk, at
    least 64 inputs; ``fan_in`` (one chunk) where that many would cover the layer anyway."""
    if density <= 0:
        return fan_in
    size = max(4 * simd.LANES, simd.LANES * int(np.ceil(SEGMENT_WEIGHTS / density / simd.LANES)))
    return fan_in if size >= fan_in else size


def _segments(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``w``'s weights as segments for the batched kernels: the output rows of ``w.T`` cut by chunks of inputs
    (:func:`_chunk_size`). Returns ``code`` (int64 per segment: ``row * 4 + first + 2 * last``, first / last: the
    row's first / last segment), ``lengths`` (weights per segment), column indices (uint16) and values (float32),
    the segments' entries in order, columns ascending within each. Segments go chunk by chunk and, within a chunk,
    shortest first (the inner loop's exits then repeat: a branch the CPU predicts). A row without weights gets one
    empty segment (first and last: it stores its bias)."""
    wt = np.asarray(w, np.float32).T
    fan_out, fan_in = wt.shape
    rows, cols = np.nonzero(wt)
    chunk = _chunk_size(fan_in, len(rows) / max(1, wt.size))
    n_chunks = -(-fan_in // chunk)
    chunks = cols // chunk
    counts = np.bincount(chunks * fan_out + rows, minlength=n_chunks * fan_out).reshape(n_chunks, fan_out)
    present = counts > 0
    present[0, ~present.any(axis=0)] = True
    seg_chunk, seg_row = np.nonzero(present)
    lengths = counts[seg_chunk, seg_row]
    order = np.lexsort((seg_row, lengths, seg_chunk))
    seg_chunk, seg_row, lengths = seg_chunk[order], seg_row[order], lengths[order]
    first, last = present.argmax(axis=0), n_chunks - 1 - present[::-1].argmax(axis=0)
    code = seg_row.astype(np.int64) * 4 + (seg_chunk == first[seg_row]) + 2 * (seg_chunk == last[seg_row])
    rank = np.zeros(n_chunks * fan_out, np.int64)
    rank[seg_chunk * fan_out + seg_row] = np.arange(len(seg_row))
    entries = np.lexsort((cols, rank[chunks * fan_out + rows]))
    return code, lengths.astype(np.int64), cols[entries].astype(np.uint16), wt[rows[entries], cols[entries]]


def _flat_biases(kernels: Kernels, biases: list[np.ndarray | None]) -> np.ndarray:
    parts = [np.zeros(w.shape[1], np.float32) if b is None else np.asarray(b, np.float32)
             for w, b in zip(kernels, biases, strict=True)]
    return np.concatenate(parts)


def _pack_csr(kernels: Kernels, biases: list[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    """All layers' segments (:func:`_segments`) in flat arrays: ``meta`` row per layer (fan_in, fan_out, first
    row, first segment, end segment; the first row is also the layer's first entry in the flat biases), segment
    codes, ``seg_ptr`` (int64: segment s's entries are ``seg_ptr[s]:seg_ptr[s + 1]``), column indices, values,
    biases. Last, ``input_tiles`` (int64): the first input of each 16-input group that layer 1 reads (the kernel
    transposes only those groups of ``x``: at k=99 a quarter of MNIST's pixels go unread), and ``tile_columns``
    (int64): per group, a bit per input that layer 1 reads (only those rows are stored: 18% of the group's rows
    at k=99)."""
    meta, codes, lengths, indices, data, row, n_seg = [], [], [], [], [], 0, 0
    for w in kernels:
        code, length, idx, val = _segments(w)
        meta.append((w.shape[0], w.shape[1], row, n_seg, n_seg + len(code)))
        codes.append(code)
        lengths.append(length)
        indices.append(idx)
        data.append(val)
        row, n_seg = row + w.shape[1], n_seg + len(code)
    seg_ptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    read = np.asarray(kernels[0]).any(axis=1)
    input_tiles = np.flatnonzero(np.add.reduceat(read, np.arange(0, len(read), simd.LANES)) > 0) * simd.LANES
    padded = np.concatenate([read, np.zeros(simd.LANES, bool)])
    tile_columns = np.array([int(np.dot(padded[c0:c0 + simd.LANES], 1 << np.arange(simd.LANES)))
                             for c0 in input_tiles], np.int64)
    return (np.array(meta, np.int64), np.concatenate(codes), seg_ptr, np.concatenate(indices),
            np.concatenate(data), _flat_biases(kernels, biases), input_tiles.astype(np.int64), tile_columns)


def _steps(w: np.ndarray) -> np.ndarray:
    """Steps of 4 stored entries per row of ``w`` (the scatter kernel's inner trip count)."""
    return (np.count_nonzero(w, axis=1) + 3) // 4


def _rows_by_length(kernels: Kernels, biases: list[np.ndarray | None]
                    ) -> tuple[list[np.ndarray], list[np.ndarray | None], np.ndarray]:
    """The same network with its units reordered so every layer's rows come in order of ``_steps``, and the
    inputs it reads, in that order (``x[:, order]`` is the new input; inputs without weights are left out).
    Renumbering hidden units changes nothing but float summation order; consecutive nonzero inputs then
    mostly have equal trip counts, which the branch predictor learns (measured: ~5% faster at k=90). Logit
    columns keep their order."""
    ws, bs = [np.asarray(w, np.float32) for w in kernels], list(biases)
    for i in range(len(ws) - 1):
        order = np.argsort(_steps(ws[i + 1]), kind="stable")
        ws[i], ws[i + 1] = ws[i][:, order], ws[i + 1][order]
        bs[i] = None if bs[i] is None else bs[i][order]
    input_order = np.argsort(_steps(ws[0]), kind="stable")
    input_order = input_order[_steps(ws[0])[input_order] > 0]  # an input with no weights adds nothing
    ws[0] = ws[0][input_order]
    return ws, bs, input_order


def _pack_scatter(kernels: Kernels, biases: list[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    """For the scatter kernel: all layers' CSR of ``w`` by INPUT row in flat arrays. Each row is padded to a
    multiple of 4 entries with (its layer's column 0, weight 0.0), which adds exactly nothing, so the kernel
    takes 4 entries at a time: one vector load of 4 weights and two uint32 loads of 2 column indices (uint16)
    each: ``pairs[indptr[r] // 2 + q]`` holds the columns of entries 2q and 2q + 1 of row r.
    ``layers`` row per layer: (fan_in, fan_out, first row in indptr, first bias). Units are first reordered
    (``_rows_by_length``); ``input_order`` says which input feeds row i of the first layer."""
    kernels, biases, input_order = _rows_by_length(kernels, biases)
    layers, indptrs, indices, data, nnz, row, first_bias = [], [], [], [], 0, 0, 0
    for w in kernels:
        w = np.asarray(w, np.float32)
        lens = np.count_nonzero(w, axis=1)
        padded = lens + (-lens) % 4
        starts = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64)
        rows, cols = np.nonzero(w)
        rank = np.arange(len(rows)) - np.concatenate([[0], np.cumsum(lens)[:-1]])[rows]  # position within row
        idx, val = np.zeros(int(padded.sum()), np.uint16), np.zeros(int(padded.sum()), np.float32)
        idx[starts[rows] + rank], val[starts[rows] + rank] = cols, w[rows, cols]
        layers.append((w.shape[0], w.shape[1], row, first_bias))
        indptrs.append(starts + nnz)
        indices.append(idx)
        data.append(val)
        nnz, row, first_bias = nnz + len(val), row + w.shape[0], first_bias + w.shape[1]
    indptrs.append(np.array([nnz], np.int64))
    last, logit_rows = kernels[-1], np.zeros((0, simd.LANES), np.float32)  # empty: the logits are scattered
    if last.shape[1] <= simd.LANES:
        logit_rows = np.zeros((last.shape[0], simd.LANES), np.float32)
        logit_rows[:, :last.shape[1]] = last
    return (np.array(layers, np.int64), np.concatenate(indptrs), np.concatenate(indices).view(np.uint32),
            np.concatenate(data), _flat_biases(kernels, biases), input_order, logit_rows.reshape(-1))


# ---------------------------------------------------------------- numba kernels

@intrinsic
def _mul4(typingctx, arr, i, scale):  # pragma: no cover - compiled
    """``arr[i:i + 4] * scale`` as a 4-tuple, from one (unaligned) vector load and one vector multiply: a scalar
    loop needs a load per weight, and loads, not arithmetic, limit the scatter loop."""
    sig = types.UniTuple(types.float32, 4)(types.Array(types.float32, 1, "C"), types.intp, types.float32)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        vec, lane = llir.VectorType(llir.FloatType(), 4), llir.IntType(32)
        weights = builder.load(builder.bitcast(ptr, vec.as_pointer()), align=4)
        undef = llir.Constant(vec, llir.Undefined)
        splat = builder.insert_element(undef, args[2], lane(0))
        splat = builder.shuffle_vector(splat, undef, llir.Constant(llir.VectorType(lane, 4), [0] * 4))
        product = builder.fmul(weights, splat)
        lanes = [builder.extract_element(product, lane(k)) for k in range(4)]
        return context.make_tuple(builder, sig.return_type, lanes)
    return sig, codegen


@njit(fastmath=True, boundscheck=False, cache=True)
def _scatter_forward(x, scale, layers, indptr, pairs, data, bias, input_order, logit_rows, width):  # pragma: no cover
    """Per sample, per layer: list the nonzero inputs (no branch), then for each one a_i add a_i * w[i, :]
    (its stored entries, 4 at a time) into the output; the ReLU is the listing of the positive outputs (nothing
    else is read). A logits layer of at most 16 outputs (``logit_rows`` not empty: its rows padded to 16) adds
    a_i * w[i, :] into one vector register instead (measured: 1-1.7 us less per image). Slices and unsigned
    counters keep numba's negative-index code out of the loops."""
    n, n_layers = x.shape[0], layers.shape[0]
    n_out, fan_in = layers[n_layers - 1, 1], layers[0, 0]
    out = np.empty((n, n_out), np.float32)
    a = np.empty(width, np.float32)
    c = np.empty(max(width, simd.LANES), np.float32)
    listed = np.empty(width, np.uint16)
    n_scattered = n_layers - 1 if logit_rows.size else n_layers  # the logits layer below, in one register
    for s in range(n):
        xs = x[s]
        n_nonzero = np.uint64(0)
        for i in range(fan_in):
            a[i] = np.float32(xs[input_order[i]]) * scale
            listed[n_nonzero] = i
            n_nonzero += np.uint64(a[i] != 0)
        for layer in range(n_scattered):
            fan_out, r0, b0 = layers[layer, 1], layers[layer, 2], layers[layer, 3]
            c[:fan_out] = bias[b0:b0 + fan_out]
            nonzero = listed[:n_nonzero]
            for k in range(nonzero.size):
                i = nonzero[k]
                ai = a[i]
                p0, p1 = indptr[r0 + i], indptr[r0 + i + 1]
                ix = pairs[p0 >> 1:p1 >> 1]
                for q in range(ix.size >> 1):  # 4 entries: 2 index loads, 1 weight load, 4 loads + 4 stores of c
                    j01, j23 = ix[2 * q], ix[2 * q + 1]
                    t0, t1, t2, t3 = _mul4(data, p0 + 4 * q, ai)
                    c[j01 & 0xFFFF] += t0
                    c[j01 >> 16] += t1
                    c[j23 & 0xFFFF] += t2
                    c[j23 >> 16] += t3
            if layer < n_layers - 1:  # ReLU by listing: only the positive outputs are ever read again
                h = c[:fan_out]
                n_nonzero = np.uint64(0)
                for j in range(h.size):
                    listed[n_nonzero] = j
                    n_nonzero += np.uint64(h[j] > 0)
            a, c = c, a
        if n_scattered < n_layers:  # logits: acc += a_i * w[i, :] over the nonzero a_i, w's rows padded to 16
            b0 = layers[n_layers - 1, 3]
            c[:n_out] = bias[b0:b0 + n_out]
            c[n_out:simd.LANES] = 0.0
            acc = simd.load(c, 0)
            nonzero = listed[:n_nonzero]
            for k in range(nonzero.size):
                i = np.intp(nonzero[k])
                acc = simd.fma(acc, a[i], simd.load(logit_rows, i * simd.LANES))
            simd.store(c, 0, acc)
            out[s] = c[:n_out]
        else:
            out[s] = a[:n_out]
    return out


@njit(inline="always", fastmath=True, boundscheck=False)
def _transpose_block(x, scale, a, b0, nb, lanes, input_tiles, tile_columns):  # pragma: no cover - compiled
    """``x[b0:b0 + nb] * scale`` into ``a``'s feature-major rows (row ``i``: ``a[i * BLOCK:(i + 1) * BLOCK]``), the
    16-input groups layer 1 reads, 16 x 16 at a time in registers (simd.transpose_tile: only the inputs set in
    ``tile_columns``); rows past the last 16 samples and the last partial group element by element; lanes ``nb``
    to ``lanes`` (those the kernel reads) zero."""
    fan_in = x.shape[1]
    pixels = x.reshape(-1)
    full = nb - nb % simd.LANES
    for r0 in range(0, full, simd.LANES):  # 16 rows of x at a time (L1-resident), group by group
        for t in range(input_tiles.size):
            c0 = input_tiles[t]
            if c0 + simd.LANES <= fan_in:
                simd.transpose_tile(pixels, (b0 + r0) * fan_in + c0, fan_in, a, c0 * BLOCK + r0, BLOCK, scale,
                                    tile_columns[t])
    for c0 in input_tiles:  # the rest: rows past the last 16, the last partial group of inputs, zeros
        first = full if c0 + simd.LANES <= fan_in else 0
        for col in range(c0, min(c0 + simd.LANES, fan_in)):
            row = a[col * BLOCK:(col + 1) * BLOCK]
            for b in range(first, nb):
                row[b] = np.float32(x[b0 + b, col]) * scale
            row[nb:lanes] = 0.0


@njit(inline="always", fastmath=True, boundscheck=False)
def _narrow_segment(a, c, out_at, data, indices, p0, p1, b, code, relu):  # pragma: no cover - compiled
    """One segment of output row ``c[out_at:out_at + 64]`` in a block of at most 64 samples: the row's bias (its
    first segment) or its partial sum so far, plus ``w * a[col]`` over the segment's weights ``p0:p1``, in 4 vector
    registers; ReLU'd after its last segment when ``relu``. (A 2-register version for up to 32 samples, two weights
    a step, was 15% faster at k=90 and 2.4x slower at k=99, where rows hold ~10 weights.)"""
    if code & 1:
        s0 = s1 = s2 = s3 = simd.splat(b)
    else:
        s0, s1, s2, s3 = simd.load(c, out_at), simd.load(c, out_at + 16), simd.load(c, out_at + 32), \
            simd.load(c, out_at + 48)
    for q in range(p0, p1):
        v, o = data[q], np.intp(indices[q]) * BLOCK
        s0 = simd.fma(s0, v, simd.load(a, o))
        s1 = simd.fma(s1, v, simd.load(a, o + 16))
        s2 = simd.fma(s2, v, simd.load(a, o + 32))
        s3 = simd.fma(s3, v, simd.load(a, o + 48))
    if relu and code & 2:
        s0, s1, s2, s3 = simd.relu(s0), simd.relu(s1), simd.relu(s2), simd.relu(s3)
    simd.store(c, out_at, s0)
    simd.store(c, out_at + 16, s1)
    simd.store(c, out_at + 32, s2)
    simd.store(c, out_at + 48, s3)


@njit(inline="always", fastmath=True, boundscheck=False)
def _wide_segment(a, c, out_at, data, indices, p0, p1, b, code, relu):  # pragma: no cover - compiled
    """:func:`_narrow_segment` for a block of up to BLOCK samples: the row's 128 samples in 8 vector registers."""
    if code & 1:
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = simd.splat(b)
    else:
        s0, s1, s2, s3 = simd.load(c, out_at), simd.load(c, out_at + 16), simd.load(c, out_at + 32), \
            simd.load(c, out_at + 48)
        s4, s5, s6, s7 = simd.load(c, out_at + 64), simd.load(c, out_at + 80), simd.load(c, out_at + 96), \
            simd.load(c, out_at + 112)
    for q in range(p0, p1):
        v, o = data[q], np.intp(indices[q]) * BLOCK
        s0 = simd.fma(s0, v, simd.load(a, o))
        s1 = simd.fma(s1, v, simd.load(a, o + 16))
        s2 = simd.fma(s2, v, simd.load(a, o + 32))
        s3 = simd.fma(s3, v, simd.load(a, o + 48))
        s4 = simd.fma(s4, v, simd.load(a, o + 64))
        s5 = simd.fma(s5, v, simd.load(a, o + 80))
        s6 = simd.fma(s6, v, simd.load(a, o + 96))
        s7 = simd.fma(s7, v, simd.load(a, o + 112))
    if relu and code & 2:
        s0, s1, s2, s3 = simd.relu(s0), simd.relu(s1), simd.relu(s2), simd.relu(s3)
        s4, s5, s6, s7 = simd.relu(s4), simd.relu(s5), simd.relu(s6), simd.relu(s7)
    simd.store(c, out_at, s0)
    simd.store(c, out_at + 16, s1)
    simd.store(c, out_at + 32, s2)
    simd.store(c, out_at + 48, s3)
    simd.store(c, out_at + 64, s4)
    simd.store(c, out_at + 80, s5)
    simd.store(c, out_at + 96, s6)
    simd.store(c, out_at + 112, s7)


@njit(inline="always", fastmath=True, boundscheck=False)
def _block(x, scale, b0, nb, meta, seg_code, seg_ptr, indices, data, bias, input_tiles, tile_columns, a, c,
           out):  # pragma: no cover - compiled
    """Samples ``x[b0:b0 + nb]`` (``nb`` <= BLOCK) through every layer into ``out[b0:b0 + nb]``, ``a`` and ``c`` this
    block's two scratch rows: its inputs transposed (:func:`_transpose_block`), then each layer segment by segment,
    each output row in 4 vector registers (:func:`_narrow_segment`) when ``nb`` <= NARROW, else in 8
    (:func:`_wide_segment`)."""
    n_layers, narrow = meta.shape[0], nb <= NARROW
    n_out = meta[n_layers - 1, 1]
    _transpose_block(x, scale, a, b0, nb, NARROW if narrow else BLOCK, input_tiles, tile_columns)
    for layer in range(n_layers):
        r0, relu = meta[layer, 2], layer < n_layers - 1
        for s in range(meta[layer, 3], meta[layer, 4]):
            code = seg_code[s]
            j = code >> 2
            if narrow:
                _narrow_segment(a, c, j * BLOCK, data, indices, seg_ptr[s], seg_ptr[s + 1], bias[r0 + j], code, relu)
            else:
                _wide_segment(a, c, j * BLOCK, data, indices, seg_ptr[s], seg_ptr[s + 1], bias[r0 + j], code, relu)
        a, c = c, a
    for b in range(nb):
        for j in range(n_out):
            out[b0 + b, j] = a[j * BLOCK + b]


@njit(fastmath=True, boundscheck=False, cache=True)
def _csr_narrow(x, scale, meta, seg_code, seg_ptr, indices, data, bias, input_tiles, tile_columns,
                scratch):  # pragma: no cover - compiled
    """:func:`_csr_forward` for at most NARROW samples: one block on this thread (no threads to wake), each output
    row in 4 vector registers instead of 8 (the other 64 lanes would be padding)."""
    out = np.empty((x.shape[0], meta[meta.shape[0] - 1, 1]), np.float32)
    _block(x, scale, 0, x.shape[0], meta, seg_code, seg_ptr, indices, data, bias, input_tiles, tile_columns,
           scratch[0, 0], scratch[0, 1], out)
    return out


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _csr_forward(x, scale, meta, seg_code, seg_ptr, indices, data, bias, input_tiles, tile_columns,
                 scratch):  # pragma: no cover - compiled
    """Blocks of BLOCK samples, feature-major (row ``i`` of a block's activations is ``a[i * BLOCK:(i + 1) *
    BLOCK]``), all layers per block. The block's inputs are transposed 16 x 16 at a time in registers
    (simd.transpose_tile, scaled by ``scale`` as they are read, ``x`` uint8 or float32), only the 16-input
    groups layer 1 reads (the rows of the inputs it reads: ``tile_columns``). A layer runs segment by segment
    (:func:`_pack_csr`): output row ``j``'s 128 samples in 8 vector registers (simd.f32x16), from its bias (first
    segment) or its partial sum, plus ``w * a[col]`` over the segment's weights, then stored (ReLU'd after its last
    segment). Within a chunk of inputs every segment reads the same few activation rows, which stay near the core.

    ``scratch`` (simd.scratch: ``(n_chunks, 2, width * BLOCK)``): each of ``n_chunks`` threads takes an equal
    contiguous run of samples and its two scratch rows, in blocks of BLOCK; a last block of at most NARROW samples
    runs as a narrow one (:func:`_block`: ~0.6 of the time). So 257 samples on two threads cost each one block
    and a narrow one, not one thread two blocks; 65-128 samples, one narrow block each. Columns past a block's
    ``nb`` samples are zero at the input and never read out."""
    n, n_chunks = x.shape[0], scratch.shape[0]
    out = np.empty((n, meta[meta.shape[0] - 1, 1]), np.float32)
    per_chunk = (n + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        end = min(n, (chunk + 1) * per_chunk)
        for b0 in range(chunk * per_chunk, end, BLOCK):
            _block(x, scale, b0, min(BLOCK, end - b0), meta, seg_code, seg_ptr, indices, data, bias, input_tiles,
                   tile_columns, scratch[chunk, 0], scratch[chunk, 1], out)
    return out


def _check_columns(x: np.ndarray, fan_in: int) -> None:
    """ValueError unless ``x`` is ``(n, fan_in)``: the kernels index its rows unchecked."""
    if x.ndim != 2 or x.shape[1] != fan_in:
        raise ValueError(f"the sparse engine takes inputs of shape (n, {fan_in}), not {x.shape}")


def sparse_forward(name: str, kernels: list[np.ndarray], biases: list[np.ndarray | None], input_scale: float):
    """The forward pass of kernel ``name`` ("scatter-numba" or "csr-numba") on these (compacted) kernels, of
    ``x * input_scale``: a function ``x -> logits``. Widths must be <= 65536 (uint16 indices)."""
    width, scale = max(max(w.shape) for w in kernels), np.float32(input_scale)
    if width > 1 << 16:
        raise ValueError("sparse engines store unit indices as uint16: layer widths must be <= 65536")
    fan_in = kernels[0].shape[0]
    if name == "scatter-numba":
        packed = _pack_scatter(kernels, biases)
        return lambda x: _check_columns(x, fan_in) or _scatter_forward(x, scale, *packed, width)
    packed, pool = _pack_csr(kernels, biases), simd.ScratchPool(numba.get_num_threads(), width * BLOCK)

    def run(x: np.ndarray) -> np.ndarray:
        _check_columns(x, fan_in)
        with pool.borrow() as scratch:
            return (_csr_narrow if len(x) <= NARROW else _csr_forward)(x, scale, *packed, scratch)
    return run
