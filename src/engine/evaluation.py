"""Evaluating a masked net without Keras: accuracy and loss from numpy logits, dense vs sparse timing.

The forward pass is src/engine/dense.forward_dense on the model's own preprocessing (src/training/data.as_inputs),
or, for any net, src/engine/network.forward on the raw inputs (``time_network_evaluation``), so a prune job needs
neither TensorFlow nor the Keras model. The timing protocol (levels, settle rules,
rounds) is src/engine/timing.py; here is what is timed against what:

- throughput: the whole test set in one call, dense numpy vs the engine ``eval.engine`` picks for that batch
  (``auto`` in the density band where numpy or the sparse kernel may win: both, timed in one alternation);
- latency: one example per call over the first LATENCY_EXAMPLES test images, dense numpy vs the engines
  ``auto`` chooses among at batch 1, timed in one alternation, so one timing both chooses the engine and
  measures it (the fastest is reported);
- an engine that is the dense baseline itself (``auto`` chose dense numpy) is not timed twice: its time is
  the baseline's and its speedup exactly 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from src.engine.choice import build_engine, engine_candidates
from src.engine.dense import forward_dense
from src.engine.net_engine import build_network_engine, network_candidates
from src.engine.network import Network, as_mlp, forward
from src.engine.timing import LATENCY_EXAMPLES, LATENCY_PASSES, Idle, Protocol, in_calls, protocol


def accuracy_and_loss(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy 0..1, mean softmax cross-entropy in nats) of ``logits`` (N, classes) against integer labels."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    labels = np.asarray(labels, dtype=np.int64)
    return float(np.mean(logits.argmax(axis=1) == labels)), float(-log_probs[np.arange(len(labels)), labels].mean())


@dataclass(frozen=True)
class Timed:
    """Result of :func:`time_evaluation`: metrics (ms, speedups, max abs logit error) and the engines used."""

    metrics: dict[str, float]
    engine: str
    latency_engine: str


NUMPY_ENGINES = ("dense", "compact-dense")  # timed first: the job's dense passes just ran


def _against_baseline(proto: Protocol, baseline: Callable[[], object], candidates: dict[str, Callable[[], object]],
                      per_round: int) -> tuple[float, str, float]:
    """(baseline ms, fastest candidate's name, its ms). A candidate named "dense" is the baseline itself and is
    not timed again. The numpy functions come first in the first round (the job's dense passes just ran), the
    numba ones after them (see src/engine/timing.py)."""
    order = sorted((n for n in candidates if n != "dense"), key=lambda n: n not in NUMPY_ENGINES)
    times = proto.time({"dense": baseline, **{n: candidates[n] for n in order}}, per_round)
    name = min(candidates, key=lambda n: times[n])
    return times["dense"], name, times[name]


def time_evaluation(kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None], x: np.ndarray,
                    level: str, engine: str, repeats: int, warmup: int, settle_s: float,
                    reference: np.ndarray | None = None, idle: Idle | None = None) -> Timed:
    """Time the masked net's dense forward pass against the sparse engine ``engine`` chooses, at ``level``.

    ``x``: float32 ``(N, fan_in)`` inputs scaled to 0..1 (the test set). Throughput: all of ``x`` in one call
    (``dense_eval_ms``, ``sparse_eval_ms``, ``eval_speedup``; where ``auto`` has two candidates, numpy and the
    sparse kernel, both are timed in the same alternation and the fastest is reported). Latency: one example per
    call over the first LATENCY_EXAMPLES rows, ms per example (``dense_latency_ms``, ``sparse_latency_ms``,
    ``latency_speedup``); at batch 1 ``auto``'s candidates are timed in the same alternation, likewise.
    ``sparse_max_abs_err``: the largest logit difference of any engine used from the dense pass (``reference``:
    the dense logits of ``x`` if the caller has them already). ``idle``: how the quick protocol waits for the
    cores to settle before a batched turn (src/engine/timing.IdleWork does the caller's single-threaded work
    meanwhile); before a batch-1 turn it sleeps: work there lowered the measured latency speedups by ~8%
    (benchmarks/RESULTS.md, 2026-12-01), the batched ones did not move."""
    proto = protocol(level, repeats, warmup, settle_s, idle)
    x_lat = np.ascontiguousarray(x[:LATENCY_EXAMPLES])
    if engine == "measure":
        batched = [build_engine(kernels, biases, len(x), "measure", settle_s=settle_s)]
        singles = [build_engine(kernels, biases, 1, "measure", sample=x_lat, settle_s=settle_s)]
    else:
        batched = engine_candidates(kernels, biases, batch_size=len(x), engine=engine)
        singles = engine_candidates(kernels, biases, batch_size=1, engine=engine)
    reference = forward_dense(kernels, biases, x) if reference is None else reference
    errors = [float(np.max(np.abs(e(x) - reference))) for e in batched]
    errors += [float(np.max(np.abs(e(x_lat) - reference[:len(x_lat)]))) for e in singles]
    dense_ms, batched_engine, sparse_ms = _against_baseline(
        proto, lambda: forward_dense(kernels, biases, x), {e.name: (lambda e=e: e(x)) for e in batched}, 1)
    dense_lat, latency_engine, sparse_lat = _against_baseline(
        proto.sleeping(), in_calls(lambda xi: forward_dense(kernels, biases, xi), x_lat, 1),
        {e.name: in_calls(e, x_lat, 1) for e in singles}, LATENCY_PASSES)
    n = len(x_lat)
    metrics = {"dense_eval_ms": dense_ms, "sparse_eval_ms": sparse_ms, "eval_speedup": dense_ms / sparse_ms,
               "dense_latency_ms": dense_lat / n, "sparse_latency_ms": sparse_lat / n,
               "latency_speedup": dense_lat / sparse_lat, "sparse_max_abs_err": max(errors)}
    return Timed(metrics, batched_engine, latency_engine)


def time_network_evaluation(net: Network, x: np.ndarray, level: str, engine: str, repeats: int, warmup: int,
                            settle_s: float, reference: np.ndarray | None = None, idle: Idle | None = None) -> Timed:
    """:func:`time_evaluation` for any Network (src/engine/network): the same metrics, the same protocol.

    ``x``: the test inputs as the Keras model takes them, ``(N, *input_shape)`` (raw pixels: the net's own
    rescale layer scales them), uint8 or float32. The dense baseline is ``network.forward`` on the masked net
    (im2col + BLAS for conv layers); the engines are src/engine/net_engine's (``engine``: one of its
    NET_ENGINES). Where "auto" has two candidates (numpy and a sparse kernel, in the density band where either
    may win), both are timed in the same alternation, at batch 1 as at the whole test set, and the fastest is
    reported. An MLP (``network.as_mlp``) is timed by :func:`time_evaluation` itself on its flattened, scaled
    inputs, exactly as the classic study is. ``reference``: the dense outputs of ``x`` if the caller has
    them; ``idle`` as in :func:`time_evaluation`. Raises ValueError for a layer kind the engine does not have."""
    mlp = as_mlp(net)
    if mlp is not None:
        flat = np.asarray(x).reshape(len(x), -1).astype(np.float32) * np.float32(mlp[2])
        return time_evaluation(mlp[0], mlp[1], flat, level, engine, repeats, warmup, settle_s, reference, idle)
    proto = protocol(level, repeats, warmup, settle_s, idle)
    shape = tuple(np.shape(x)[1:])
    x_lat = np.ascontiguousarray(x[:LATENCY_EXAMPLES])
    if engine == "measure":
        batched = [build_network_engine(net, shape, len(x), "measure", sample=x, settle_s=settle_s)]
        singles = [build_network_engine(net, shape, 1, "measure", sample=x_lat, settle_s=settle_s)]
    else:
        batched = network_candidates(net, shape, batch_size=len(x), engine=engine)
        singles = network_candidates(net, shape, batch_size=1, engine=engine)
    reference = forward(net, x) if reference is None else reference
    errors = [float(np.max(np.abs(e(x) - reference))) for e in batched]
    errors += [float(np.max(np.abs(e(x_lat) - reference[:len(x_lat)]))) for e in singles]
    dense_ms, batched_engine, sparse_ms = _against_baseline(
        proto, lambda: forward(net, x), {e.name: (lambda e=e: e(x)) for e in batched}, 1)
    dense_lat, latency_engine, sparse_lat = _against_baseline(
        proto.sleeping(), in_calls(lambda xi: forward(net, xi), x_lat, 1),
        {e.name: in_calls(e, x_lat, 1) for e in singles}, LATENCY_PASSES)
    n = len(x_lat)
    metrics = {"dense_eval_ms": dense_ms, "sparse_eval_ms": sparse_ms, "eval_speedup": dense_ms / sparse_ms,
               "dense_latency_ms": dense_lat / n, "sparse_latency_ms": sparse_lat / n,
               "latency_speedup": dense_lat / sparse_lat, "sparse_max_abs_err": max(errors)}
    return Timed(metrics, batched_engine, latency_engine)
