"""src/engine compaction, net_kernels and net_engine: any Network's engines against network.forward, compaction of
dead units and filters, the MLP handed to the classic engines unchanged, and the timing entry for networks.

Small random nets keep this fast; no timing assertions."""

from __future__ import annotations

import numpy as np
import pytest

from src.engine import choice, net_engine
from src.engine.choice import build_engine
from src.engine.compaction import compact_network, mac_density, macs
from src.engine.evaluation import time_network_evaluation
from src.engine.net_engine import NET_ENGINES, build_network_engine, network_candidates, not_covered
from src.engine.net_kernels import NotCovered, network_forward, pack
from src.engine.network import Layer, forward, kernels_of, output_shapes, weighted

TOL = 1e-4


@pytest.fixture(autouse=True)
def no_settle_time(monkeypatch) -> None:
    monkeypatch.setattr(choice, "SETTLE_S", 0.0)
    monkeypatch.setattr(net_engine, "SETTLE_S", 0.0)


def weights(rng: np.random.Generator, shape: tuple[int, ...], keep: float = 1.0) -> np.ndarray:
    w = (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype(np.float32)
    w[rng.random(shape) > keep] = 0
    return w


def bias(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.standard_normal(n) * 0.1).astype(np.float32)


def lenet5(keep: tuple[float, ...] = (0.66, 0.12, 0.08, 0.19), conv_activation: str = "relu", seed: int = 0):
    """Han et al.'s LeNet-5 on 28 x 28 raw pixels, magnitude-free random pruning at ``keep`` per layer."""
    rng = np.random.default_rng(seed)
    return [Layer("rescale", scale=1 / 255),
            Layer("conv2d", "conv1", weights(rng, (5, 5, 1, 20), keep[0]), bias(rng, 20), conv_activation),
            Layer("maxpool2d", pool_size=(2, 2), strides=(2, 2)),
            Layer("conv2d", "conv2", weights(rng, (5, 5, 20, 50), keep[1]), bias(rng, 50), conv_activation),
            Layer("maxpool2d", pool_size=(2, 2), strides=(2, 2)), Layer("flatten"),
            Layer("dense", "fc1", weights(rng, (800, 500), keep[2]), bias(rng, 500), "relu"),
            Layer("dense", "fc2", weights(rng, (500, 10), keep[3]), bias(rng, 10))]


def user_net(seed: int = 1):
    """What a user's model brings: RGB input, a rescale with an offset, same padding, strides, an overlapping
    same-padded pooling (not fused), a conv without bias, a softmax output."""
    rng = np.random.default_rng(seed)
    return [Layer("rescale", scale=0.5, offset=-1.0),
            Layer("conv2d", "a", weights(rng, (3, 3, 3, 6), 0.5), bias(rng, 6), "relu", (1, 1), "same"),
            Layer("maxpool2d", pool_size=(3, 3), strides=(2, 2), padding="same"),
            Layer("conv2d", "b", weights(rng, (3, 3, 6, 8), 0.5), None, "relu", (2, 2), "same"),
            Layer("maxpool2d", pool_size=(2, 2), strides=(2, 2)), Layer("flatten"),
            Layer("dense", "c", weights(rng, (32, 16), 0.5), bias(rng, 16), "relu"),
            Layer("dense", "d", weights(rng, (16, 4)), bias(rng, 4), "softmax")]


def conv_tail_net(seed: int = 2):
    """No flatten: a dense layer on every position (Keras's Dense on the last axis), a conv output."""
    rng = np.random.default_rng(seed)
    return [Layer("conv2d", "a", weights(rng, (3, 3, 2, 5), 0.6), bias(rng, 5), "relu"),
            Layer("dense", "per_position", weights(rng, (5, 4), 0.7), bias(rng, 4), "relu"),
            Layer("maxpool2d", pool_size=(2, 2), strides=(1, 1)),
            Layer("conv2d", "b", weights(rng, (2, 2, 4, 3)), bias(rng, 3))]


NETS = {"lenet5": (lenet5, (28, 28)), "lenet5-caffe": (lambda: lenet5(conv_activation="linear"), (28, 28)),
        "user": (user_net, (15, 17, 3)), "conv-tail": (conv_tail_net, (9, 8, 2))}


def inputs(shape: tuple[int, ...], n: int, seed: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.uint8)
    x[:, :3] = 0  # zero borders, like MNIST's
    return x


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("n", [1, 37, 300])  # 300: two full blocks of 128 and a partial one
def test_kernels_compute_what_forward_does(name: str, layout: str, n: int) -> None:
    make, shape = NETS[name]
    net = make()
    x = inputs(shape, n)
    expected = forward(net, x)
    out = network_forward(pack(net, shape, layout))(x)
    assert out.shape == expected.shape and out.dtype == np.float32
    assert np.abs(out - expected).max() <= TOL * max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(network_forward(pack(net, shape, layout))(x.astype(np.float64)), out, atol=1e-5)


def test_a_fused_pooling_is_one_op_and_a_same_pooling_its_own() -> None:
    program = pack(lenet5(), (28, 28), "nhwc")
    assert len(program.ops) == 4  # conv1+pool, conv2+pool, fc1, fc2
    assert program.n_weights == sum(int(np.count_nonzero(w)) for w in kernels_of(lenet5())[0])
    user = pack(user_net(), (15, 17, 3), "nhwc")
    assert [int(op[0]) for op in user.ops] == [2, 0, 1, 2, 0, 0, 0]  # pad, conv, pool, pad, conv+pool, dense, dense


def dead_filter_net():
    """LeNet-5 with filter 3 of conv1 dead (no weights, no bias), filter 7 of conv2 unread by fc1 (all its rows at
    every position zero), unit 11 of fc1 with no weights but a bias (alive: relu(b) is a constant)."""
    net = lenet5(keep=(1.0, 0.5, 0.2, 1.0))
    w1, w2, w3 = (net[i].kernel.copy() for i in (1, 3, 6))
    b1, b3 = net[1].bias.copy(), net[6].bias.copy()
    w1[..., 3], b1[3] = 0, 0
    w3[np.arange(800) % 50 == 7] = 0
    w3[:, 11], b3[11] = 0, 1.0
    kernels, biases = kernels_of(net)
    return net, [w1, w2, w3, kernels[3]], [b1, biases[1], b3, biases[3]]


def test_compaction_removes_dead_filters_with_the_inputs_they_fed() -> None:
    from src.engine.network import with_weights

    net, ks, bs = dead_filter_net()
    net = with_weights(net, ks, bs)
    compact = compact_network(net)
    shapes = [layer.kernel.shape for layer in compact if layer.kernel is not None]
    assert shapes == [(5, 5, 1, 19), (5, 5, 19, 49), (784, 500), (500, 10)]
    x = inputs((28, 28), 20)
    assert np.abs(forward(compact, x) - forward(net, x)).max() <= TOL
    kept = [i for i in range(50) if i != 7]
    np.testing.assert_array_equal(compact[6].kernel, ks[2].reshape(16, 50, 500)[:, kept].reshape(784, 500))
    assert [layer.kernel.shape for layer in net if layer.kernel is not None][0] == (5, 5, 1, 20)  # input unchanged


def test_compaction_keeps_outputs_one_channel_and_channels_an_offset_makes_nonzero() -> None:
    rng = np.random.default_rng(4)
    w1, w2 = weights(rng, (6, 4)), weights(rng, (4, 3))
    w1[:, :] = 0
    w2[:, 2] = 0  # an output unit with no weights: outputs are never removed
    net = [Layer("dense", "a", w1, None, "relu"), Layer("dense", "b", w2, None)]
    compact = compact_network(net)
    assert [layer.kernel.shape for layer in compact] == [(6, 1), (1, 3)]
    offset = [Layer("dense", "a", weights(rng, (6, 4)), None, "linear"), Layer("rescale", scale=2.0, offset=1.0),
              Layer("dense", "b", weights(rng, (4, 3)), None)]
    offset[0] = Layer("dense", "a", offset[0].kernel * np.array([1, 0, 1, 1], np.float32), None)
    assert compact_network(offset)[2].kernel.shape == (4, 3)  # unit 1 outputs 0 * 2 + 1: still read


def test_macs_count_every_position() -> None:
    net = lenet5(keep=(1, 1, 1, 1))
    counts = macs(net, output_shapes(net, (28, 28)))
    assert counts == [(576 * 500,) * 2, (64 * 25_000,) * 2, (400_000,) * 2, (5_000,) * 2]
    assert mac_density(lenet5(keep=(1, 1, 0, 1)), output_shapes(net, (28, 28))) == pytest.approx(
        1 - 400_000 / sum(c for c, _ in counts))


@pytest.mark.parametrize("engine", [e for e in NET_ENGINES if e != "measure"])
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("batch", [1, 37])
def test_every_engine_matches_forward(engine: str, name: str, batch: int) -> None:
    make, shape = NETS[name]
    net = make()
    x = inputs(shape, batch)
    e = build_network_engine(net, shape, batch, engine)
    assert np.abs(e(x) - forward(net, x)).max() <= TOL * max(1.0, np.abs(forward(net, x)).max())
    if engine != "auto":
        assert e.name == engine


def test_measure_and_auto_with_a_sample_choose_among_real_engines() -> None:
    net = lenet5()
    x = inputs((28, 28), 8)
    for engine, sample in (("measure", None), ("measure", x), ("auto", x)):
        e = build_network_engine(net, (28, 28), 1, engine, sample=sample, settle_s=0.0)
        assert e.name in NET_ENGINES and np.abs(e(x) - forward(net, x)).max() <= TOL
    # Han's budget (d = 0.18) is below batch 1's static threshold: auto takes the sparse kernel, sample or not
    assert build_network_engine(net, (28, 28), 1, "auto", sample=x, settle_s=0.0).name == "conv-direct-numba"


def fake_clock(monkeypatch, ms: dict[str, float], module=choice) -> None:
    """Make ``module.time_alternating`` report ``ms[name]`` for each function it is given (3.0 for any other)."""
    monkeypatch.setattr(module, "time_alternating", lambda fns, *args, **kwargs: {n: ms.get(n, 3.0) for n in fns})


@pytest.mark.parametrize("fastest", ["dense", "compact-dense", "conv-csr-numba", "conv-direct-numba"])
def test_measure_keeps_the_engine_its_timing_found_fastest(monkeypatch, fastest: str) -> None:
    """Whichever engine the clock says is fastest is the one "measure" returns, and it computes the net."""
    fake_clock(monkeypatch, {fastest: 1.0})
    net, x = lenet5(), inputs((28, 28), 8)
    e = build_network_engine(net, (28, 28), 1, "measure", sample=x, settle_s=0.0)
    assert e.name == fastest and np.abs(e(x) - forward(net, x)).max() <= TOL


def test_auto_picks_the_sparse_kernels_on_a_pruned_net_and_numpy_on_a_dense_one() -> None:
    assert build_network_engine(lenet5(), (28, 28), 1000).name == "conv-csr-numba"  # Han's budget: d = 0.18
    assert build_network_engine(lenet5(), (28, 28), 1).name == "conv-direct-numba"
    unpruned = lenet5(keep=(1, 1, 1, 1))
    assert build_network_engine(unpruned, (28, 28), 1).name == "dense"
    assert [e.name for e in network_candidates(unpruned, (28, 28), 1000)] == ["dense", "conv-csr-numba"]
    half = lenet5(keep=(0.6,) * 4)  # d = 0.6: where either may win, both are candidates, numpy without a sample
    assert [e.name for e in network_candidates(half, (28, 28), 1)] == ["dense", "conv-direct-numba"]
    assert [e.name for e in network_candidates(half, (28, 28), 1000)] == ["dense", "conv-csr-numba"]
    assert build_network_engine(half, (28, 28), 1000).name == "dense"


def test_a_net_the_kernels_do_not_cover_runs_on_numpy_under_auto_and_is_refused_by_name() -> None:
    net = lenet5()
    net.insert(3, Layer("rescale", scale=2.0))  # between the convolutions
    x = inputs((28, 28), 9)
    e = build_network_engine(net, (28, 28), 9)
    assert e.name == "compact-dense" and np.abs(e(x) - forward(net, x)).max() <= TOL
    with pytest.raises(NotCovered, match="rescale"):
        build_network_engine(net, (28, 28), 9, "conv-csr-numba")
    assert "(rescale) after the first weighted" in not_covered(net, (28, 28))
    assert not_covered(lenet5(), (28, 28)) is None


def test_unknown_kinds_and_engines_are_one_clear_error() -> None:
    net = [*lenet5()[:-1], Layer("batchnorm", "bn")]
    with pytest.raises(ValueError, match=r"no layer kind for bn \(batchnorm\)"):
        build_network_engine(net, (28, 28), 9)
    with pytest.raises(ValueError, match="unknown engine 'bogus'"):
        build_network_engine(lenet5(), (28, 28), 9, "bogus")


def mlp_net(seed: int = 5):
    rng = np.random.default_rng(seed)
    return [Layer("flatten"), Layer("rescale", scale=1 / 255),
            Layer("dense", "d1", weights(rng, (784, 30), 0.1), bias(rng, 30), "relu"),
            Layer("dense", "d2", weights(rng, (30, 10), 0.3), bias(rng, 10))]


@pytest.mark.parametrize("batch", [1, 37])
def test_an_mlp_runs_on_the_classic_engines_unchanged(batch: int) -> None:
    net = mlp_net()
    x = inputs((28, 28), batch)
    kernels, biases = kernels_of(net)
    e = build_network_engine(net, (28, 28), batch)
    classic = build_engine(kernels, biases, batch, input_scale=1 / 255)
    assert e.name == classic.name and e.name in ("csr-numba", "scatter-numba")
    np.testing.assert_array_equal(e(x), classic(x.reshape(batch, -1)))
    assert build_network_engine(net, (28, 28), batch, "conv-csr-numba").name == "csr-numba"


def test_time_network_evaluation_reports_the_metrics_and_engines() -> None:
    net = lenet5()
    x = inputs((28, 28), 40)
    timed = time_network_evaluation(net, x, "quick", "auto", repeats=2, warmup=0, settle_s=0.0)
    assert set(timed.metrics) == {"dense_eval_ms", "sparse_eval_ms", "eval_speedup", "dense_latency_ms",
                                  "sparse_latency_ms", "latency_speedup", "sparse_max_abs_err"}
    assert timed.engine == "conv-csr-numba" and timed.latency_engine in ("dense", "conv-direct-numba")
    assert timed.metrics["sparse_max_abs_err"] <= TOL and timed.metrics["eval_speedup"] > 0
    dense = time_network_evaluation(net, x, "quick", "dense", repeats=2, warmup=0, settle_s=0.0)
    assert dense.engine == "dense" and dense.metrics["eval_speedup"] == 1.0
    both = time_network_evaluation(lenet5(keep=(1, 1, 1, 1)), x, "quick", "auto", repeats=2, warmup=0, settle_s=0.0)
    assert both.metrics["sparse_max_abs_err"] <= TOL  # which side won: the next test, on a clock it controls


@pytest.mark.parametrize("sparse_ms, engine, speedup", [(2.0, "conv-csr-numba", 2.0), (5.0, "dense", 1.0)])
def test_time_network_evaluation_reports_the_side_its_timing_found_faster(monkeypatch, sparse_ms: float, engine: str,
                                                                         speedup: float) -> None:
    """On an unpruned net "auto" times numpy and the sparse kernel beside the dense baseline (4 ms here): the faster
    is reported, with the speedup of its own time; numpy winning is the baseline itself, speedup exactly 1."""
    from src.engine import timing

    fake_clock(monkeypatch, {"dense": 4.0, "conv-csr-numba": sparse_ms}, timing)
    timed = time_network_evaluation(lenet5(keep=(1, 1, 1, 1)), inputs((28, 28), 40), "quick", "auto", repeats=2,
                                    warmup=0, settle_s=0.0)
    assert timed.engine == engine and timed.metrics["eval_speedup"] == speedup
    assert timed.metrics["sparse_eval_ms"] == min(sparse_ms, 4.0) and timed.metrics["dense_eval_ms"] == 4.0


def test_time_network_evaluation_of_an_mlp_is_the_classic_timing(monkeypatch) -> None:
    from src.engine import evaluation

    seen = {}
    monkeypatch.setattr(evaluation, "time_evaluation", lambda *args: seen.setdefault("args", args))
    x = inputs((28, 28), 5)
    time_network_evaluation(mlp_net(), x, "quick", "auto", 2, 0, 0.0)
    kernels, flat = seen["args"][0], seen["args"][2]
    assert [w.shape for w in kernels] == [(784, 30), (30, 10)]
    np.testing.assert_array_equal(flat, x.reshape(5, -1).astype(np.float32) * np.float32(1 / 255))


def test_weighted_layers_keep_their_order_through_compaction() -> None:
    net = lenet5()
    assert weighted(compact_network(net)) == weighted(net) == [1, 3, 6, 7]


def test_threads_calling_one_engine_at_once_get_their_own_results() -> None:
    """numba's parallel kernels release the GIL, so threads (a server's) can be inside one engine at once: each call
    must get its own scratch. 6 threads x 8 calls of different sizes on one MLP engine (csr-numba: the 128-sample
    blocks and the narrow one-block kernel share the engine's scratch) and one LeNet-5 engine (conv-csr-numba)."""
    from concurrent.futures import ThreadPoolExecutor

    from src.engine.dense import forward_dense

    rng = np.random.default_rng(5)
    mlp = [weights(rng, (784, 300), 0.05), weights(rng, (300, 10), 0.2)]
    mlp_engine = build_engine(mlp, None, 1000, "csr-numba")
    conv = lenet5()
    conv_engine = build_network_engine(conv, (28, 28), 1000, "conv-csr-numba")
    sizes = [1000, 16, 300, 64, 700, 129]
    pixels = {n: inputs((28, 28), n, seed=n) for n in sizes}
    flat = {n: pixels[n].reshape(n, -1).astype(np.float32) for n in sizes}
    expected = {n: (forward_dense(mlp, None, flat[n]), forward(conv, pixels[n])) for n in sizes}

    def worst(i: int) -> float:
        errors = []
        for call in range(8):
            n = sizes[(i + call) % len(sizes)]
            errors.append(np.abs(mlp_engine(flat[n]) - expected[n][0]).max() / np.abs(expected[n][0]).max())
            errors.append(np.abs(conv_engine(pixels[n]) - expected[n][1]).max() / np.abs(expected[n][1]).max())
        return max(errors)
    with ThreadPoolExecutor(6) as pool:
        assert max(pool.map(worst, range(6))) <= 1e-5


@pytest.mark.parametrize("name", ["conv-csr-numba", "conv-direct-numba"])
def test_a_sparse_engine_refuses_inputs_of_another_size(name: str) -> None:
    """The kernels index the input rows unchecked: 28 x 27 images would read past each row (or the buffer's end)."""
    e = build_network_engine(lenet5(), (28, 28), 16, name)
    assert e(inputs((28, 28), 4)).shape == (4, 10)
    with pytest.raises(ValueError, match=r"shape \(n, 28, 28, 1\)"):
        e(np.zeros((4, 28, 27), np.uint8))


def test_the_mlp_kernel_names_eval_engine_takes_run_a_conv_nets_own_kernels() -> None:
    """``eval.engine=csr-numba`` / ``scatter-numba`` on LeNet-5 (a conv chain) stand for conv-csr-numba and
    conv-direct-numba (a job crashed with a traceback: network_candidates took only the conv names)."""
    from src.engine.net_engine import network_candidates

    net, x = lenet5(), inputs((28, 28), 8)
    for asked, runs in (("csr-numba", "conv-csr-numba"), ("scatter-numba", "conv-direct-numba")):
        [candidate] = network_candidates(net, (28, 28), 8, asked)
        engine = build_network_engine(net, (28, 28), 8, asked)
        assert candidate.name == engine.name == runs
        np.testing.assert_allclose(engine(x), build_network_engine(net, (28, 28), 8, "dense")(x), atol=1e-4)
