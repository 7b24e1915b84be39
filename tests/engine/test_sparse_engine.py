"""src.engine (dense, kernels, choice): exactness of compaction and of every engine against the dense forward pass.

Small random nets keep this fast; no timing assertions (the timing protocol is tests/engine/test_timing.py's).
"""

from __future__ import annotations

import numpy as np
import pytest

from src.engine import choice
from src.engine.choice import ENGINES, build_engine, engine_candidates
from src.engine.dense import compact_units, forward_dense
from src.engine.kernels import _pack_scatter
from src.pruning import masks as M

SHAPES = [(30, 40), (40, 33), (33, 20), (20, 10)]
TOL = 1e-3


@pytest.fixture(autouse=True)
def no_settle_time(monkeypatch) -> None:
    """"auto" and "measure" time engines; these tests check their choices' logits, not their timings."""
    monkeypatch.setattr(choice, "SETTLE_S", 0.0)


def net(seed: int, biases: bool) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    rng = np.random.default_rng(seed)
    ws = [(rng.standard_normal(s) * np.sqrt(2.0 / s[0])).astype(np.float32) for s in SHAPES]
    bs = [(rng.standard_normal(s[1]) * 0.1).astype(np.float32) if biases else None for s in SHAPES]
    return ws, bs


def pruned(method: str, k: float, biases: bool, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    ws, bs = net(seed, biases)
    return M.apply_masks(ws, bs, M.layer_masks(ws, method, k), method)


def inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, SHAPES[0][0]), dtype=np.float32)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("k", [0, 50, 90])
def test_compact_units_keeps_logits(k: float, biases: bool) -> None:
    ws, bs = pruned("unit", k, biases)
    cw, cb = compact_units(ws, bs)
    x = inputs(37)
    assert max_diff(forward_dense(cw, cb, x), forward_dense(ws, bs, x)) <= TOL
    kept = [w.shape[1] for w in cw[:-1]]
    assert kept == [w.shape[1] - M.n_to_prune(k, w.shape[1]) for w in ws[:-1]]
    assert cw[-1].shape[1] == ws[-1].shape[1]  # logits never removed
    for w_in, w_out in zip(cw, cw[1:], strict=False):
        assert w_in.shape[1] == w_out.shape[0]


def test_compact_units_keeps_live_bias_unit() -> None:
    ws, bs = net(0, biases=True)
    ws[0][:, 3] = 0  # no inputs, but a nonzero bias: relu(b) is a constant the next layer uses
    bs[0][3] = 1.0
    ws[1][:, 5] = 0
    bs[1][5] = 0.0  # dead
    cw, cb = compact_units(ws, bs)
    assert [w.shape[1] for w in cw] == [40, 32, 20, 10]
    x = inputs(5)
    assert max_diff(forward_dense(cw, cb, x), forward_dense(ws, bs, x)) <= TOL


def test_compact_units_drops_units_nothing_reads_until_none_is_left() -> None:
    ws, bs = net(0, biases=True)
    ws[2][7, :] = 0  # unit 7 of hidden layer 2 has a bias and inputs but no outgoing weight: dropped
    ws[1][4, :] = 0
    ws[1][4, 7] = 1.0  # unit 4 of hidden layer 1 feeds only that unit: dropped in the next round
    cw, cb = compact_units(ws, bs)
    assert [w.shape for w in cw] == [(30, 39), (39, 32), (32, 20), (20, 10)]
    x = inputs(7)
    assert max_diff(forward_dense(cw, cb, x), forward_dense(ws, bs, x)) <= TOL
    assert max_diff(build_engine(ws, bs, 1, "scatter-numba")(x), forward_dense(ws, bs, x)) <= TOL


def test_compact_units_without_biases_accepts_none() -> None:
    ws, _ = pruned("unit", 50, biases=False)
    cw, cb = compact_units(ws, None)
    assert cb == [None] * len(ws)
    assert max_diff(forward_dense(cw, None, inputs(3)), forward_dense(ws, None, inputs(3))) <= TOL


def one_live_unit(biases: bool) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    ws, bs = net(2, biases)
    ws[1][:, 1:] = 0  # layer 2 keeps only unit 0
    if biases:
        bs[1][1:] = 0
    return ws, bs


@pytest.mark.parametrize("biases", [False, True])
def test_layer_with_one_live_unit(biases: bool) -> None:
    ws, bs = one_live_unit(biases)
    cw, cb = compact_units(ws, bs)
    assert cw[1].shape[1] == 1 and cw[2].shape[0] == 1
    for n in (1, 37):
        x = inputs(n)
        ref = forward_dense(ws, bs, x)
        assert max_diff(forward_dense(cw, cb, x), ref) <= TOL
        for name in ENGINES[1:]:
            assert max_diff(build_engine(ws, bs, n, name)(x), ref) <= TOL, name


def test_all_units_dead_keeps_one_zero_unit() -> None:
    ws, bs = net(3, biases=False)
    ws[1][:] = 0
    cw, _ = compact_units(ws, bs)
    assert cw[1].shape[1] == 1 and not cw[1].any()
    x = inputs(4)
    assert max_diff(forward_dense(cw, None, x), forward_dense(ws, None, x)) <= TOL
    assert max_diff(build_engine(ws, None, 4, "csr-numba")(x), forward_dense(ws, None, x)) <= TOL


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("k", [0, 50, 90, 99])
@pytest.mark.parametrize("batch", [1, 37])
def test_engine_matches_dense(engine: str, biases: bool, method: str, k: float, batch: int) -> None:
    ws, bs = pruned(method, k, biases, seed=int(k))
    x = inputs(batch)
    e = build_engine(ws, bs, batch, engine)
    y = e(x)
    assert y.dtype == np.float32 and y.shape == (batch, SHAPES[-1][1])
    assert max_diff(y, forward_dense(ws, bs, x)) <= TOL, e.name
    if engine not in ("auto", "measure"):
        assert e.name == engine


def test_engine_accepts_other_batch_sizes_and_dtypes() -> None:
    ws, bs = pruned("weight", 90, biases=True)
    e = build_engine(ws, bs, batch_size=1, engine="scatter-numba")
    x = inputs(300).astype(np.float64)
    assert max_diff(e(x), forward_dense(ws, bs, x.astype(np.float32))) <= TOL


def sparse_net(fan: int = 200, per_column: int = 3) -> list[np.ndarray]:
    """Two layers, ``per_column`` nonzeros in every column: no dead units, density per_column / fan."""
    rng = np.random.default_rng(0)
    ws = [np.zeros((fan, fan), np.float32), np.zeros((fan, 10), np.float32)]
    for w in ws:
        for j in range(w.shape[1]):
            w[rng.choice(fan, per_column, replace=False), j] = rng.standard_normal(per_column)
    return ws


@pytest.mark.parametrize("engine", ["scatter-numba", "csr-numba"])
def test_sparse_engines_on_inputs_with_zeros(engine: str) -> None:
    """Mostly-zero inputs (like MNIST pixels) and biases: the activation-skipping path must still be exact."""
    ws, bs = pruned("weight", 90, biases=True)
    x = inputs(37)
    x[x < 0.8] = 0  # ~80% zeros
    x[5] = 0  # an all-zero example: only biases reach the logits
    e = build_engine(ws, bs, 37, engine)
    assert max_diff(e(x), forward_dense(ws, bs, x)) <= TOL


def test_scatter_packing_pads_rows_to_four_with_zero_weights() -> None:
    """Rows of 0..9 nonzeros, stored by length in slots of 4: padding adds exactly 0, index pairs decode to the
    columns, ``input_order`` maps each stored row back to its input (an input without weights is dropped)."""
    w = np.zeros((10, 13), np.float32)
    for r in range(10):
        w[r, np.arange(r) + 3] = np.arange(1, r + 1, dtype=np.float32)
    w = w[::-1].copy()  # longest rows first: the packer must reorder them
    layers, indptr, pairs, data, _, input_order, _ = _pack_scatter([w], [None])
    steps = (np.count_nonzero(w, axis=1) + 3) // 4
    assert sorted(input_order) == [r for r in range(10) if w[r].any()]  # the empty row is left out
    assert np.all(np.diff(steps[input_order]) >= 0)
    cols = np.stack([pairs & 0xFFFF, pairs >> 16], axis=1).ravel()
    for r, source in enumerate(input_order):
        lo, hi = indptr[r], indptr[r + 1]
        assert (hi - lo) % 4 == 0 and hi - lo - np.count_nonzero(w[source]) in range(4)
        dense_row = np.zeros(13, np.float32)
        np.add.at(dense_row, cols[lo:hi], data[lo:hi])
        assert np.array_equal(dense_row, w[source])
    x = np.random.default_rng(2).random((5, 10), dtype=np.float32)
    x[:, ::3] = 0
    assert max_diff(build_engine([w], None, 1, "scatter-numba")(x), x @ w) <= 1e-5


def test_auto_with_a_sample_times_the_small_batch_candidates(monkeypatch) -> None:
    ws, bs = pruned("weight", 90, biases=False)
    x = inputs(8)
    e = build_engine(ws, bs, 1, "auto", sample=x)
    assert e.name in ("dense", "scatter-numba")
    assert max_diff(e(x), forward_dense(ws, bs, x)) <= TOL
    dense_ws, _ = net(0, biases=False)  # nothing pruned: not worth timing, dense as without a sample
    assert build_engine(dense_ws, None, 1, "auto", sample=x).name == "dense"
    unit_ws, unit_bs = pruned("unit", 90, biases=True)  # compacted: dense kernels, but timed all the same
    timed = []
    monkeypatch.setattr(choice, "time_alternating", lambda fns, **kw: timed.append(set(fns)) or
                        {name: float(name == "compact-dense") for name in fns})
    e = build_engine(unit_ws, unit_bs, 1, "auto", sample=x)
    assert timed == [{"compact-dense", "scatter-numba"}] and e.name == "scatter-numba"
    assert max_diff(e(x), forward_dense(unit_ws, unit_bs, x)) <= TOL


def test_auto_rule() -> None:
    ws = sparse_net()
    assert build_engine(ws, None, 1).name == "scatter-numba"
    assert build_engine(ws, None, 10000).name == "csr-numba"
    dense_ws, _ = net(0, biases=False)
    assert build_engine(dense_ws, None, 1).name == "dense"
    assert build_engine(dense_ws, None, 10000).name == "dense"
    unit_ws, unit_bs = pruned("unit", 90, biases=True)
    assert build_engine(unit_ws, unit_bs, 10000).name == "compact-dense"


def test_unknown_engine_rejected() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        build_engine(*net(0, False), 1, "cusparse")


@pytest.mark.parametrize("engine", ["scatter-numba", "csr-numba"])
def test_sparse_engines_refuse_layers_wider_than_uint16(engine: str) -> None:
    ws = [np.ones((2, 70000), np.float32), np.ones((70000, 3), np.float32)]
    with pytest.raises(ValueError, match="65536"):
        build_engine(ws, None, 1, engine)


def test_candidates_are_what_auto_chooses_among() -> None:
    ws, bs = pruned("weight", 90, biases=False)
    assert [e.name for e in engine_candidates(ws, bs, 1)] == ["compact-dense", "scatter-numba"]  # units lost inputs
    assert [e.name for e in engine_candidates(ws, bs, 10000)] == ["csr-numba"]
    assert [e.name for e in engine_candidates(*net(0, False), 1)] == ["dense"]  # nothing pruned: nothing to time
    assert [e.name for e in engine_candidates(ws, bs, 1, "csr-numba")] == ["csr-numba"]
    with pytest.raises(ValueError, match="concrete engine or auto"):
        engine_candidates(ws, bs, 1, "measure")


@pytest.mark.parametrize("engine", ["auto", "dense", "compact-dense", "scatter-numba", "csr-numba"])
@pytest.mark.parametrize("batch", [1, 16, 37, 128, 300])
def test_engines_read_raw_uint8_input_scaled(engine: str, batch: int) -> None:
    """``input_scale``: the engine computes the net of ``x * input_scale`` from uint8 pixels as they are, at
    batch sizes around the 16-row transposition tiles and the 128-sample blocks; the first layer has 50 inputs
    (a partial last group of 16) and inputs 16..31 have no weights (a group the batched kernel skips)."""
    rng = np.random.default_rng(3)
    ws, bs = pruned("weight", 90, biases=True)
    ws = [np.concatenate([ws[0], ws[0][:20]]), *ws[1:]]  # 50 inputs
    ws[0][16:32] = 0
    pixels = rng.integers(0, 256, (batch, 50), dtype=np.uint8)
    pixels[pixels < 200] = 0
    scale = 1 / 255
    e = build_engine(ws, bs, batch, engine, input_scale=scale)
    expected = forward_dense(ws, bs, pixels.astype(np.float32) * np.float32(scale))
    assert max_diff(e(pixels), expected) <= TOL, e.name
    assert max_diff(e(pixels.astype(np.float64)), expected) <= TOL, e.name  # other dtypes: converted first


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_transpose_tile_is_an_exact_scaled_transpose(dtype) -> None:
    from numba import njit

    from src.engine import simd

    @njit
    def tile(src, src_offset, src_stride, dst, dst_offset, dst_stride, scale, columns):
        simd.transpose_tile(src, src_offset, src_stride, dst, dst_offset, dst_stride, scale, columns)

    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (20, 37)).astype(dtype)
    for columns in (simd.ALL_COLUMNS, 0b1000_0000_0010_0101):
        dst = np.full((19, 24), -1.0, np.float32)
        tile(src.reshape(-1), 2 * 37 + 5, 37, dst.reshape(-1), 3 * 24 + 4, 24, np.float32(0.5), columns)
        expected = np.full_like(dst, -1.0)
        written = [c for c in range(16) if columns >> c & 1]
        expected[[3 + c for c in written], 4:20] = src[2:18, [5 + c for c in written]].T.astype(np.float32) * 0.5
        np.testing.assert_array_equal(dst, expected)  # exactly those columns' 16 entries written, nothing else


def test_csr_transposes_only_the_inputs_layer_1_reads() -> None:
    """Layer 1 reads inputs 0, 5 and 17 of 40: two 16-input groups are transposed, and of them only those rows are
    stored (the bits of ``tile_columns``); the logits still match the dense pass, on uint8 and float32 input."""
    from src.engine.kernels import _pack_csr

    rng = np.random.default_rng(3)
    w1 = np.zeros((40, 24), np.float32)
    w1[[0, 5, 17]] = rng.standard_normal((3, 24))
    ws = [w1, rng.standard_normal((24, 10)).astype(np.float32)]
    packed = _pack_csr(ws, [None, None])
    assert packed[-2].tolist() == [0, 16] and packed[-1].tolist() == [1 | 1 << 5, 1 << 1]
    x = rng.integers(0, 256, (300, 40)).astype(np.uint8)
    for scale, xs in ((1 / 255, x), (1.0, x.astype(np.float32) / 255)):
        got = build_engine(ws, None, 300, "csr-numba", input_scale=scale)(xs)
        assert max_diff(got, forward_dense(ws, None, x.astype(np.float32) / 255)) <= 1e-4


@pytest.mark.parametrize("n", [1, 16, 31, 32, 33, 47, 64, 65, 100, 128, 129, 200, 257, 300, 385])
def test_csr_matches_dense_on_either_side_of_the_narrow_kernels(n: int, monkeypatch) -> None:
    """Calls of at most NARROW (64) samples take the one-thread kernel with 4 registers a row; larger calls the
    threads' equal runs of samples, in 8-register blocks and a narrow last one (65-128 rows: one narrow block a
    thread; 257: a block and a narrow one each). Every size, with biases and uint8 input, takes its kernel and
    matches the dense pass; a call with the wrong number of columns is refused."""
    from src.engine import kernels

    assert kernels.NARROW == 64
    ran = []
    for name in ("_csr_narrow", "_csr_forward"):
        kernel = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *args, kernel=kernel, name=name: ran.append(name) or kernel(*args))
    ws, bs = pruned("weight", 90, biases=True)
    ws[1][:, :5] = 0.0  # some rows with no weight at all
    pixels = np.random.default_rng(n).integers(0, 256, (n, SHAPES[0][0])).astype(np.uint8)
    engine = build_engine(ws, bs, n, "csr-numba", input_scale=1 / 255)
    assert max_diff(engine(pixels), forward_dense(ws, bs, pixels.astype(np.float32) / 255)) <= TOL
    assert ran == ["_csr_narrow" if n <= 64 else "_csr_forward"]
    with pytest.raises(ValueError, match=r"shape \(n, 30\)"):
        engine(pixels[:, :-1])


def test_csr_segments_cut_rows_by_input_chunks_shortest_first_and_match_dense() -> None:
    """A layer of 300 inputs at 30% density is cut in chunks of 64 inputs (~12 weights of a row each): every row's
    segments, in chunk order, hold exactly its weights, its first and last flagged once; within a chunk the
    segments go shortest first; a row with no weights gets one empty segment. At k=99 density a layer stays whole
    (one segment a row). The blocked, the narrow and the two-thread narrow kernels match the dense pass."""
    from src.engine.kernels import _chunk_size, _segments

    rng = np.random.default_rng(5)
    w = np.where(rng.random((300, 200)) < 0.3, rng.standard_normal((300, 200)), 0).astype(np.float32)
    w[:, 7] = 0.0  # output 7: no weights
    assert _chunk_size(300, 0.3) == 64 and _chunk_size(784, 0.1) == 128 and _chunk_size(784, 0.01) == 784
    code, lengths, cols, vals = _segments(w)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rows, chunks = code >> 2, [cols[a:b] // 64 for a, b in zip(starts[:-1], starts[1:], strict=True)]
    for j in range(200):
        mine = np.flatnonzero(rows == j)
        got_cols = np.concatenate([cols[starts[s]:starts[s + 1]] for s in mine])
        assert got_cols.tolist() == np.flatnonzero(w[:, j]).tolist()  # all its weights, chunk by chunk, in order
        got_vals = np.concatenate([vals[starts[s]:starts[s + 1]] for s in mine])
        np.testing.assert_array_equal(got_vals, w[np.flatnonzero(w[:, j]), j])
        assert (code[mine] & 1).tolist() == [1] + [0] * (len(mine) - 1)
        assert (code[mine] & 2).tolist() == [0] * (len(mine) - 1) + [2]
    assert len(np.flatnonzero(rows == 7)) == 1 and lengths[rows == 7].tolist() == [0]
    chunk_of = np.array([c[0] if len(c) else 0 for c in chunks])
    assert (np.diff(chunk_of) >= 0).all() and len(set(chunk_of)) == 5  # 300 inputs: 5 chunks of 64, in order
    for t in range(5):
        assert (np.diff(lengths[chunk_of == t]) >= 0).all()  # shortest first within a chunk
    sparse_w = np.where(rng.random((300, 200)) < 0.01, w, 0).astype(np.float32)
    assert len(_segments(sparse_w)[0]) == 200  # one segment a row
    ws = [w, np.where(rng.random((200, 150)) < 0.3, rng.standard_normal((200, 150)), 0).astype(np.float32),
          rng.standard_normal((150, 10)).astype(np.float32)]
    bs = [rng.standard_normal(200).astype(np.float32) * 0.1, None, rng.standard_normal(10).astype(np.float32)]
    for n in (40, 100, 300):
        x = rng.random((n, 300), dtype=np.float32)
        got = build_engine(ws, bs, n, "csr-numba")(x)
        assert max_diff(got, forward_dense(ws, bs, x)) <= TOL


def test_the_per_sample_kernel_refuses_inputs_with_another_number_of_columns() -> None:
    ws, bs = pruned("weight", 90, biases=True)
    engine = build_engine(ws, bs, 1, "scatter-numba")
    assert engine(inputs(2)).shape == (2, 10)
    for bad in (inputs(2)[:, :-1], np.zeros((2, 31), np.float32), inputs(1)[0]):
        with pytest.raises(ValueError, match=r"shape \(n, 30\)"):
            engine(bad)
