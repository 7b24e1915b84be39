"""Inference engines for pruned ReLU MLPs: dense reference, unit compaction, numba sparse kernels.

Contracts and units:
- ``kernels[i]``: float32 array ``(fan_in, fan_out)`` (Keras layout); ``biases[i]``: float32 ``(fan_out,)`` or
  None (``biases`` itself may be None: no biases). Pruned weights are exact zeros.
- ``x``: float32 ``(N, fan_in of layer 0)``, pixels already scaled to 0..1.
- Forward: hidden layer ``h = relu(h @ w + b)``; the last layer gives logits (no ReLU), float32 ``(N, n_out)``.
- Every engine returns the logits of ``forward_dense`` on the same kernels to within float32 summation-order
  error (tests hold it to max abs diff 1e-3). Times are milliseconds.

Engines (``Engine.name``):
- ``dense``: ``forward_dense`` as given (numpy matmul: the OpenBLAS numpy ships, 2 threads here).
- ``compact-dense``: ``compact_units``, then ``forward_dense``: what unit pruning needs.
- ``scatter-numba``: small batches. CSR of each ``w`` by INPUT row; per sample, the nonzero activations are
  listed and each ``a_i`` adds ``a_i * w[i, :]`` (its stored nonzeros) into the layer's output. It skips pruned
  weights and zero activations alike (MNIST pixels are ~80% zero; a trained ReLU layer's outputs are mostly
  zero), so its speed depends on the model and the data, not only on k. Its loop is bound by loads and
  stores (~1.4 cycles per multiply-add here), so it takes 4 entries per step with one vector load of weights
  and one of 2 index pairs. Serial: a 2-thread version (work units claimed with atomics, one barrier per
  layer) gained 0-15% here, where the two vCPUs often share one physical core, and its spinning threads
  fought OpenBLAS's; a SELL-16 gather kernel lost to it at every k but 99 (benchmarks/RESULTS.md).
- ``csr-numba``: larger batches. CSR of each ``w.T``; the batch is cut into blocks of 128 samples held
  feature-major (``(width, 128)`` float32, 0.5 MB: L2-resident), all layers run per block, blocks in parallel
  on numba threads (as many as usable cores). Inner loop: ``h_out[j, :] += w * h_in[col, :]``, 4 nonzeros at once.
The sparse engines run on the compacted net and keep indices as uint16 (widths < 65536). Library kernels
(scipy.sparse, MKL through sparse_dot_mkl, pydata sparse, TensorFlow) were measured and were all slower than
these: ``python benchmarks/sparse_bench.py --candidates``, numbers in benchmarks/RESULTS.md.

``auto`` (thresholds from benchmarks/sparse_bench.py on this project's 2-core AMD EPYC machine):
1. ``compact_units`` (exact): density d = nonzeros / entries of the compacted kernels.
2. ``batch_size < SMALL_BATCH`` with a ``sample`` of real inputs, if d <= SMALL_BATCH_TIMED_MAX_DENSITY or
   compaction removed units: the faster of dense (or compact-dense) and scatter-numba, timed on the sample
   (~1 s, see ``_fastest``). Scatter also skips zero activations, so it can win on a compacted (dense) net.
   Without a sample: ``scatter-numba`` if d <= SMALL_BATCH_MAX_DENSITY.
3. ``batch_size >= SMALL_BATCH``: ``csr-numba`` if d <= LARGE_BATCH_MAX_DENSITY.
4. else numpy on the compacted net: ``compact-dense`` if compaction removed units, else ``dense``.
``measure`` instead times each concrete engine (on ``sample``, or random input of ``batch_size`` rows) and
keeps the fastest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llvmlite.ir as llir
import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from src.timing import SETTLE_S, in_calls, time_alternating

SMALL_BATCH = 8  # batch < 8: the per-sample kernel (it won at batch 1-4, the blocked kernel from 8 on)
SMALL_BATCH_MAX_DENSITY = 0.30  # batch 1, no sample: scatter beat dense from k = 70 on both trained models
SMALL_BATCH_TIMED_MAX_DENSITY = 0.75  # batch 1 with a sample: time the candidates below this density
LARGE_BATCH_MAX_DENSITY = 0.32  # batch 10000: blocked CSR broke even with dense at ~35% nonzeros (k ~ 65)
BLOCK = 128  # samples per block in the batched kernel
ENGINES = ("auto", "measure", "dense", "compact-dense", "scatter-numba", "csr-numba")

numba.set_num_threads(min(numba.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0))))

Kernels = Sequence[np.ndarray]
Biases = Sequence[np.ndarray | None] | None


@dataclass(frozen=True)
class Engine:
    """A callable forward pass: ``engine(x) -> logits`` (float32), with the name of the kernel used."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(np.ascontiguousarray(x, dtype=np.float32))


def _bias_list(kernels: Kernels, biases: Biases) -> list[np.ndarray | None]:
    return [None] * len(kernels) if biases is None else list(biases)


def forward_dense(kernels: Kernels, biases: Biases, x: np.ndarray) -> np.ndarray:
    """Dense reference forward pass (numpy/BLAS, float32): logits ``(N, n_out)``."""
    h = np.asarray(x, dtype=np.float32)
    last = len(kernels) - 1
    for i, (w, b) in enumerate(zip(kernels, _bias_list(kernels, biases), strict=True)):
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
    ws, bs = list(kernels), _bias_list(kernels, biases)
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


# ---------------------------------------------------------------- packing (build time, numpy only)

def _csr_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of ``w.T`` (a row per output unit): indptr int64, column indices uint16, values float32."""
    wt = np.asarray(w, dtype=np.float32).T
    nz = wt != 0
    indptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int64)
    return indptr, np.nonzero(nz)[1].astype(np.uint16), wt[nz]


def _flat_biases(kernels: Kernels, biases: list[np.ndarray | None]) -> np.ndarray:
    parts = [np.zeros(w.shape[1], np.float32) if b is None else np.asarray(b, np.float32)
             for w, b in zip(kernels, biases, strict=True)]
    return np.concatenate(parts)


def _pack_csr(kernels: Kernels, biases: list[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    """All layers' CSR of ``w.T`` (a row per output unit) in flat arrays. meta row per layer:
    (fan_in, fan_out, first row), which is also the layer's first entry in the flat biases. The first layer
    keeps only the inputs it reads (rows of ``w`` with a nonzero): ``input_cols`` (int64, last) lists them,
    so the kernel transposes only those columns of ``x`` (at k=99 a quarter of MNIST's pixels go unread)."""
    first = np.asarray(kernels[0], np.float32)
    input_cols = np.flatnonzero(first.any(axis=1))
    input_cols = input_cols if len(input_cols) else np.zeros(1, np.int64)
    kernels = [first[input_cols], *kernels[1:]]
    meta, indptrs, indices, data, nnz, row = [], [], [], [], 0, 0
    for w in kernels:
        indptr, idx, val = _csr_rows(w)
        meta.append((w.shape[0], w.shape[1], row))
        indptrs.append(indptr[:-1] + nnz)
        indices.append(idx)
        data.append(val)
        nnz, row = nnz + len(val), row + w.shape[1]
    indptrs.append(np.array([nnz], np.int64))
    return (np.array(meta, np.int64), np.concatenate(indptrs), np.concatenate(indices),
            np.concatenate(data), _flat_biases(kernels, biases), input_cols.astype(np.int64))


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
    return (np.array(layers, np.int64), np.concatenate(indptrs), np.concatenate(indices).view(np.uint32),
            np.concatenate(data), _flat_biases(kernels, biases), input_order)


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
def _scatter_forward(x, layers, indptr, pairs, data, bias, input_order, width):  # pragma: no cover - compiled
    """Per sample, per layer: list the nonzero inputs (no branch), then for each one a_i add a_i * w[i, :]
    (its stored entries, 4 at a time) into the output; ReLU between layers. Slices and unsigned counters keep
    numba's negative-index code out of the loops."""
    n, n_layers = x.shape[0], layers.shape[0]
    n_out, fan_in = layers[n_layers - 1, 1], layers[0, 0]
    out = np.empty((n, n_out), np.float32)
    a = np.empty(width, np.float32)
    c = np.empty(width, np.float32)
    listed = np.empty(width, np.uint16)
    for s in range(n):
        xs = x[s]
        n_nonzero = np.uint64(0)
        for i in range(fan_in):
            a[i] = xs[input_order[i]]
            listed[n_nonzero] = i
            n_nonzero += np.uint64(a[i] != 0)
        for layer in range(n_layers):
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
            if layer < n_layers - 1:
                h = c[:fan_out]
                for j in range(h.size):
                    h[j] = max(h[j], np.float32(0.0))
                n_nonzero = np.uint64(0)
                for j in range(h.size):
                    listed[n_nonzero] = j
                    n_nonzero += np.uint64(h[j] > 0)
            a, c = c, a
        out[s] = a[:n_out]
    return out


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _csr_forward(x, meta, indptr, indices, data, bias, input_cols, width, n_chunks):  # pragma: no cover - compiled
    """Blocks of BLOCK samples, feature-major, all layers per block: row_j += v * h[col] (4 nonzeros at once).

    ``n_chunks`` threads each take a contiguous run of blocks and allocate their two (width, BLOCK) scratch
    buffers once; the buffers are used whole (C-contiguous rows vectorise; a sliced view did not)."""
    n, n_layers = x.shape[0], meta.shape[0]
    n_out, fan_in = meta[n_layers - 1, 1], meta[0, 0]
    out = np.empty((n, n_out), np.float32)
    n_blocks = (n + BLOCK - 1) // BLOCK
    per_chunk = (n_blocks + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        buf_a = np.empty((width, BLOCK), np.float32)
        buf_c = np.empty((width, BLOCK), np.float32)
        for blk in range(chunk * per_chunk, min(n_blocks, (chunk + 1) * per_chunk)):
            b0 = blk * BLOCK
            nb = min(BLOCK, n - b0)
            a, c = buf_a, buf_c  # whole C-contiguous buffers (rows stay contiguous for the vectorizer); nb used
            for i in range(fan_in):  # transpose the inputs layer 1 reads; the block's rows of x stay in L1
                col = input_cols[i]
                for b in range(nb):
                    a[i, b] = x[b0 + b, col]
            for layer in range(n_layers):
                r0 = meta[layer, 2]
                for j in range(meta[layer, 1]):
                    cr = c[j]
                    cr[:nb] = bias[r0 + j]
                    d = data[indptr[r0 + j]:indptr[r0 + j + 1]]
                    ix = indices[indptr[r0 + j]:indptr[r0 + j + 1]]
                    q = 0
                    while q + 4 <= d.size:
                        v0, v1, v2, v3 = d[q], d[q + 1], d[q + 2], d[q + 3]
                        a0, a1, a2, a3 = a[ix[q]], a[ix[q + 1]], a[ix[q + 2]], a[ix[q + 3]]
                        for b in range(nb):
                            cr[b] += (v0 * a0[b] + v1 * a1[b]) + (v2 * a2[b] + v3 * a3[b])
                        q += 4
                    for r in range(q, d.size):
                        v, ar = d[r], a[ix[r]]
                        for b in range(nb):
                            cr[b] += v * ar[b]
                    if layer < n_layers - 1:
                        for b in range(nb):
                            cr[b] = max(cr[b], np.float32(0.0))
                a, c = c, a
            for b in range(nb):
                for j in range(n_out):
                    out[b0 + b, j] = a[j, b]
    return out


# ---------------------------------------------------------------- engines

def _width(kernels: Kernels) -> int:
    return max(max(w.shape) for w in kernels)


def _sparse_engine(name: str, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> Engine:
    width = _width(kernels)
    if width > 1 << 16:
        raise ValueError("sparse engines store unit indices as uint16: layer widths must be <= 65536")
    if name == "scatter-numba":
        packed = _pack_scatter(kernels, biases)
        return Engine(name, lambda x: _scatter_forward(x, *packed, width))
    packed = _pack_csr(kernels, biases)
    return Engine(name, lambda x: _csr_forward(x, *packed, width, numba.get_num_threads()))


def _auto_name(kernels: Kernels, compact: Kernels, batch_size: int) -> str:
    """The static rule (no sample to time on): density thresholds measured with benchmarks/sparse_bench.py."""
    d = density(compact)
    if batch_size < SMALL_BATCH and d <= SMALL_BATCH_MAX_DENSITY:
        return "scatter-numba"
    if batch_size >= SMALL_BATCH and d <= LARGE_BATCH_MAX_DENSITY:
        return "csr-numba"
    return _dense_name(kernels, compact)


def _dense_name(kernels: Kernels, compact: Kernels) -> str:
    return "compact-dense" if sum(w.size for w in compact) < sum(w.size for w in kernels) else "dense"


def _fastest(engines: list[Engine], x: np.ndarray, batch_size: int, repeats: int, per_round: int,
             settle_s: float) -> Engine:
    """The engine with the smallest median time to run ``x`` through it in calls of ``batch_size`` rows, each
    timed in its steady state (``time_alternating``: ``settle_s`` per engine and round)."""
    times = time_alternating({e.name: in_calls(e, x, batch_size) for e in engines}, repeats=repeats, warmup=1,
                             settle_s=settle_s, per_round=per_round)
    return min(engines, key=lambda e: times[e.name])


def _measure(kernels: Kernels, biases: Biases, batch_size: int, sample: np.ndarray | None,
             settle_s: float) -> Engine:
    """Time every concrete engine on ``sample`` (default: random 0..1 input of ``batch_size`` rows)."""
    x = sample if sample is not None else np.random.default_rng(0).random((batch_size, kernels[0].shape[0]),
                                                                          dtype=np.float32)
    names = [n for n in ENGINES[2:] if n != "scatter-numba" or batch_size < 64]  # per-sample: hopeless on batches
    engines = [build_engine(kernels, biases, batch_size, name) for name in names]
    return _fastest(engines, np.ascontiguousarray(x, np.float32), batch_size, 3, 1 if len(x) >= 1000 else 5,
                    settle_s)


def build_engine(kernels: Kernels, biases: Biases, batch_size: int, engine: str = "auto",
                 sample: np.ndarray | None = None, settle_s: float | None = None) -> Engine:
    """Forward-pass engine for these (masked) kernels, tuned for calls of ``batch_size`` rows.

    ``engine``: one of ENGINES; "auto" follows the rule in the module docstring, "measure" times every
    engine. ``sample``: a few real inputs ``(n, fan_in)``; with it, "auto" at small batches times its
    candidates on them, because the per-sample kernels' speed depends on how many activations are zero.
    ``settle_s``: untimed seconds before each timed turn when "auto" or "measure" time engines (None: SETTLE_S)."""
    settle_s = SETTLE_S if settle_s is None else settle_s
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    kernels = [np.asarray(w, np.float32) for w in kernels]
    biases = [None if b is None else np.asarray(b, np.float32) for b in _bias_list(kernels, biases)]
    if engine == "measure":
        return _measure(kernels, biases, batch_size, sample, settle_s)
    if engine == "auto" and sample is None:
        ck, cb = compact_units(kernels, biases)
        return _named_engine(_auto_name(kernels, ck, batch_size), ck, cb)
    candidates = engine_candidates(kernels, biases, batch_size, engine)
    if len(candidates) == 1:
        return candidates[0]
    return _fastest(candidates, np.ascontiguousarray(sample, np.float32), batch_size, repeats=3, per_round=5,
                    settle_s=settle_s)


def engine_candidates(kernels: Kernels, biases: Biases, batch_size: int, engine: str = "auto") -> list[Engine]:
    """The engines ``engine`` chooses among for calls of ``batch_size`` rows: one engine, or, for "auto" at
    small batches on a pruned net (density <= SMALL_BATCH_TIMED_MAX_DENSITY, or units removed), dense (or
    compact-dense) and scatter-numba, whose speeds depend on the inputs and are to be timed on real ones.
    ("measure" is not handled here: it times every engine itself, see build_engine.)"""
    if engine not in ENGINES or engine == "measure":
        raise ValueError(f"engine_candidates takes a concrete engine or auto, got {engine!r}")
    kernels = [np.asarray(w, np.float32) for w in kernels]
    biases = [None if b is None else np.asarray(b, np.float32) for b in _bias_list(kernels, biases)]
    if engine == "dense":
        return [Engine("dense", lambda x: forward_dense(kernels, biases, x))]
    ck, cb = compact_units(kernels, biases)
    dense_name = _dense_name(kernels, ck)
    pruned = density(ck) <= SMALL_BATCH_TIMED_MAX_DENSITY or dense_name == "compact-dense"
    if engine == "auto" and batch_size < SMALL_BATCH and pruned:
        return [_named_engine(n, ck, cb) for n in (dense_name, "scatter-numba")]
    return [_named_engine(_auto_name(kernels, ck, batch_size) if engine == "auto" else engine, ck, cb)]


def _named_engine(name: str, ck: list[np.ndarray], cb: list[np.ndarray | None]) -> Engine:
    """Engine ``name`` on the compacted net ``ck``, ``cb``."""
    if name in ("dense", "compact-dense"):
        return Engine(name, lambda x: forward_dense(ck, cb, x))
    return _sparse_engine(name, ck, cb)
