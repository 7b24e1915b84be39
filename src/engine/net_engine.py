"""Engine choice for any Network (src/engine/network): which forward pass runs a pruned net fastest for calls of a
given batch size.

An MLP (``network.as_mlp``: flatten / rescale, then dense layers, ReLU on all but the last) is handed to
src/engine/choice.build_engine exactly as the classic study runs it (same engines, same rule, its flattened input
scaled by the kernels as they read it), so its numbers and speed do not move. Any other net:

- ``dense``: ``network.forward`` as given (im2col + one BLAS matmul per conv layer, numpy pooling);
- ``compact-dense``: ``compaction.compact_network`` (dead units and filters removed), then ``network.forward``;
- ``conv-csr-numba`` (batches) and ``conv-direct-numba`` (one example at a time): src/engine/net_kernels.py,
  on the compacted net.

``auto``, with d = multiply-adds of the compacted net's nonzero weights / of all its weights, per example, and
the sparse kernel of the batch size (``conv-csr-numba`` from SMALL_BATCH examples on, ``conv-direct-numba`` below):
1. d <= the batch size's MAX_DENSITY: the sparse kernel;
2. d <= its TIMED_MAX_DENSITY (or compaction removed channels): numpy (``compact-dense`` if compaction removed
   channels, else ``dense``) and the sparse kernel are both candidates (``network_candidates``), timed on real
   inputs when there are some (``sample``; src/engine/evaluation.time_network_evaluation times them beside the
   dense baseline and keeps the fastest); without a sample, numpy;
3. else numpy.
A net the sparse kernels do not cover (a rescale between layers, a softmax before the output:
net_kernels.NotCovered) runs on numpy under ``auto``; asking for a sparse engine by name raises NotCovered.
Thresholds from ``python benchmarks/lenet_bench.py --crossover`` on this project's 2-core AMD EPYC machine
(benchmarks/RESULTS.md): on LeNet-5 the blocked kernel beat numpy at every density (1.7x unpruned, one thread),
but a larger convolution runs BLAS nearer its peak, so numpy is timed rather than ruled out above d = 0.5; the
per-example kernel broke even with numpy at d ~ 0.35.
"""

from __future__ import annotations

import numpy as np

from src.engine.choice import ENGINES as MLP_ENGINES
from src.engine.choice import SMALL_BATCH, Engine, _fastest, build_engine, engine_candidates
from src.engine.compaction import compact_network, mac_density
from src.engine.net_kernels import NotCovered, network_forward, pack
from src.engine.network import KINDS, Network, as_mlp, forward, output_shapes
from src.engine.timing import SETTLE_S

NET_ENGINES = ("auto", "measure", "dense", "compact-dense", "conv-csr-numba", "conv-direct-numba")
LARGE_BATCH_MAX_DENSITY, LARGE_BATCH_TIMED_MAX_DENSITY = 0.50, 1.0
SMALL_BATCH_MAX_DENSITY, SMALL_BATCH_TIMED_MAX_DENSITY = 0.30, 0.75


def _check(net: Network) -> None:
    unknown = [f"{layer.name or i} ({layer.kind})" for i, layer in enumerate(net) if layer.kind not in KINDS]
    if unknown:
        raise ValueError(f"the engine has no layer kind for {', '.join(unknown)} (known: {', '.join(KINDS)})")
    if not net:
        raise ValueError("an empty network")


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def _mlp_engine(engine: Engine) -> Engine:
    """An MLP engine that takes the net's own input shape (flattened: a view, no copy)."""
    return Engine(engine.name, lambda x: engine.fn(_flat(x)))


def _numpy_engine(name: str, net: Network) -> Engine:
    return Engine(name, lambda x: forward(net, x))


def _named(name: str, net: Network, compact: Network, input_shape: tuple[int, ...]) -> Engine:
    if name == "dense":
        return _numpy_engine(name, net)
    if name == "compact-dense":
        return _numpy_engine(name, compact)
    layout = "nhwc" if name == "conv-csr-numba" else "nchw"
    return Engine(name, network_forward(pack(compact, input_shape, layout)))


def _shrunk(net: Network, compact: Network) -> bool:
    return sum(layer.kernel.size for layer in compact if layer.kernel is not None) < \
        sum(layer.kernel.size for layer in net if layer.kernel is not None)


def not_covered(net: Network, input_shape: tuple[int, ...]) -> str | None:
    """Why the sparse kernels cannot run ``net`` (one line, e.g. "layer scale (rescale) after the first weighted or
    pooling layer"), or None when they can: what a job logs as ``eval.engine_used=dense (unsupported: ...)``."""
    _check(net)
    try:
        pack(net, input_shape, "nchw")
    except NotCovered as e:
        return str(e)
    return None


def _covered(compact: Network, input_shape: tuple[int, ...]) -> bool:
    return not_covered(compact, input_shape) is None


def _net_name(net: Network, engine: str) -> str:
    """``engine`` as this net's engines are named: an MLP kernel's name asked of a conv net (``eval.engine`` takes
    the MLP names) stands for its conv counterpart."""
    conv = {"csr-numba": "conv-csr-numba", "scatter-numba": "conv-direct-numba"}
    return conv.get(engine, engine) if as_mlp(net) is None else engine


def network_candidates(net: Network, input_shape: tuple[int, ...], batch_size: int, engine: str = "auto"
                       ) -> list[Engine]:
    """The engines ``engine`` chooses among for calls of ``batch_size`` examples: one engine, or, for "auto" in
    the density band where either may win, numpy first and the sparse kernel, to be timed on real inputs (module
    docstring). An MLP gets src/engine/choice.engine_candidates' engines (taking the net's input shape)."""
    _check(net)
    engine = _net_name(net, engine)
    if engine not in NET_ENGINES or engine == "measure":
        raise ValueError(f"network_candidates takes a concrete engine or auto, got {engine!r}")
    mlp = as_mlp(net)
    if mlp is not None:
        name = engine if engine in MLP_ENGINES else _mlp_name(engine)
        return [_mlp_engine(e) for e in engine_candidates(mlp[0], mlp[1], batch_size, name, mlp[2])]
    compact = compact_network(net) if engine != "dense" else net
    if engine != "auto":
        return [_named(engine, net, compact, input_shape)]
    numpy_name = "compact-dense" if _shrunk(net, compact) else "dense"
    if not _covered(compact, input_shape):
        return [_named(numpy_name, net, compact, input_shape)]
    d = mac_density(compact, output_shapes(compact, input_shape))
    sparse, static, timed = (("conv-csr-numba", LARGE_BATCH_MAX_DENSITY, LARGE_BATCH_TIMED_MAX_DENSITY)
                             if batch_size >= SMALL_BATCH else
                             ("conv-direct-numba", SMALL_BATCH_MAX_DENSITY, SMALL_BATCH_TIMED_MAX_DENSITY))
    if d <= static:
        return [_named(sparse, net, compact, input_shape)]
    if d <= timed or numpy_name == "compact-dense":
        return [_named(n, net, compact, input_shape) for n in (numpy_name, sparse)]
    return [_named(numpy_name, net, compact, input_shape)]


def _mlp_name(engine: str) -> str:
    """The MLP engine standing for a network engine name asked of an MLP."""
    return {"conv-csr-numba": "csr-numba", "conv-direct-numba": "scatter-numba"}[engine]


def build_network_engine(net: Network, input_shape: tuple[int, ...], batch_size: int, engine: str = "auto",
                         sample: np.ndarray | None = None, settle_s: float | None = None) -> Engine:
    """Forward-pass engine for ``net`` (masked: pruned weights are exact zeros) on inputs of ``input_shape`` (one
    example, no batch axis: what the Keras model takes, e.g. ``(28, 28)``), tuned for calls of ``batch_size``.

    ``engine``: one of NET_ENGINES (or, for an MLP, of src/engine/choice.ENGINES); "auto" follows the module
    docstring's rule, "measure" times every engine on ``sample`` (default: random 0..255 inputs of
    ``batch_size`` examples). ``sample``: real inputs ``(n, *input_shape)``; with it, "auto" times its
    candidates on them (in calls of ``batch_size``). ``settle_s``: untimed seconds before each timed turn (None:
    SETTLE_S). The engine returns what ``network.forward`` does (logits, or probabilities after a softmax) to
    float32 summation-order error. Raises ValueError for a layer kind the engine does not have, NotCovered when
    a sparse engine is named for a net it cannot run."""
    _check(net)
    settle_s, engine = SETTLE_S if settle_s is None else settle_s, _net_name(net, engine)
    if engine not in NET_ENGINES and not (engine in MLP_ENGINES and as_mlp(net) is not None):
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(NET_ENGINES)}")
    mlp = as_mlp(net)
    if mlp is not None:
        name = engine if engine in MLP_ENGINES else _mlp_name(engine)
        flat = None if sample is None else _flat(np.asarray(sample))
        return _mlp_engine(build_engine(mlp[0], mlp[1], batch_size, name, flat, settle_s, mlp[2]))
    if engine == "measure":
        return _measure(net, input_shape, batch_size, sample, settle_s)
    candidates = network_candidates(net, input_shape, batch_size, engine)
    if len(candidates) == 1:
        return candidates[0]
    if sample is None:  # "auto" with nothing to time on, in the band where either may win: numpy
        return candidates[0]
    return _fastest(candidates, sample, batch_size, repeats=3, per_round=1 if batch_size >= 1000 else 5,
                    settle_s=settle_s)


def _measure(net: Network, input_shape: tuple[int, ...], batch_size: int, sample: np.ndarray | None,
             settle_s: float) -> Engine:
    x = sample if sample is not None else \
        np.random.default_rng(0).integers(0, 256, (batch_size, *input_shape)).astype(np.float32)
    names = ["dense", "compact-dense", "conv-csr-numba"] + (["conv-direct-numba"] if batch_size < 64 else [])
    compact = compact_network(net)
    if not _covered(compact, input_shape):
        names = names[:2]
    engines = [_named(n, net, compact, input_shape) for n in names]
    return _fastest(engines, x, batch_size, 3, 1 if len(x) >= 1000 else 5, settle_s)
