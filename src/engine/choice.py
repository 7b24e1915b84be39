"""Engine choice: which forward pass runs a pruned net fastest for calls of a given batch size.

Engines (``Engine.name``):
- ``dense``: ``forward_dense`` as given (numpy matmul: the OpenBLAS numpy ships, 2 threads here).
- ``compact-dense``: ``compact_units``, then ``forward_dense``: what unit pruning needs.
- ``scatter-numba`` (small batches) and ``csr-numba`` (larger batches): src/engine/kernels.py.
The sparse engines run on the compacted net.

``auto`` (the density thresholds t(batch) are measured per CPU and cached: src/engine/calibration.py):
1. ``compact_units`` (exact): density d = nonzeros / entries of the compacted kernels.
2. ``batch_size < SMALL_BATCH`` with a ``sample`` of real inputs, if d <= TIMED_MAX_DENSITY or compaction
   removed units: the faster of dense (or compact-dense) and scatter-numba, timed on the sample (~1 s, see
   ``_fastest``). Scatter also skips zero activations, so it can win on a compacted (dense) net.
3. ``batch_size >= SMALL_BATCH`` with a ``sample``: ``csr-numba`` if d <= t(batch_size); the faster of numpy and
   ``csr-numba``, timed on the sample, if t(batch_size) < d <= TIMED_MAX_DENSITY. A prune job passes its test set
   (src/engine/evaluation), so the engine it reports is never slower than dense numpy there.
4. Without a sample: the sparse kernel of the batch size if d <= t(batch_size), else numpy on the compacted net
   (``compact-dense`` if compaction removed units, else ``dense``).
``measure`` instead times each concrete engine (on ``sample``, or random input of ``batch_size`` rows) and
keeps the fastest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from src.engine import calibration
from src.engine.dense import Biases, Kernels, as_input, bias_list, compact_units, density, forward_dense
from src.engine.kernels import SMALL_BATCH, sparse_forward
from src.engine.timing import SETTLE_S, in_calls, time_alternating

TIMED_MAX_DENSITY = 0.75  # with a sample: time numpy against the sparse kernel up to this density
ENGINES = ("auto", "measure", "dense", "compact-dense", "scatter-numba", "csr-numba")


@dataclass(frozen=True)
class Engine:
    """A callable forward pass: ``engine(x) -> logits`` (float32) of ``x * input_scale`` (build_engine's
    ``input_scale``, default 1), with the name of the kernel used. ``x``: uint8 (raw pixels: the sparse kernels
    read them as they are, a quarter of the bytes of float32) or anything numpy converts to float32."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(as_input(x))


def _sparse_name(batch_size: int) -> str:
    return "scatter-numba" if batch_size < SMALL_BATCH else "csr-numba"


def _auto_name(kernels: Kernels, compact: Kernels, batch_size: int) -> str:
    """The rule with no sample to time on: the sparse kernel below this CPU's calibrated density, else numpy."""
    d = density(compact)
    if calibration.may_take_sparse(d) and d <= calibration.max_density(batch_size):
        return _sparse_name(batch_size)
    return _dense_name(kernels, compact)


def _dense_name(kernels: Kernels, compact: Kernels) -> str:
    return "compact-dense" if sum(w.size for w in compact) < sum(w.size for w in kernels) else "dense"


def _fastest(engines: list[Engine], x: np.ndarray, batch_size: int, repeats: int, per_round: int,
             settle_s: float) -> Engine:
    """The engine with the smallest median time to run ``x`` through it in calls of ``batch_size`` rows, each
    timed in its steady state (``time_alternating``: ``settle_s`` per engine and round)."""
    x = as_input(x)
    times = time_alternating({e.name: in_calls(e, x, batch_size) for e in engines}, repeats=repeats, warmup=1,
                             settle_s=settle_s, per_round=per_round)
    return min(engines, key=lambda e: times[e.name])


def _measure(kernels: Kernels, biases: Biases, batch_size: int, sample: np.ndarray | None,
             settle_s: float, input_scale: float) -> Engine:
    """Time every concrete engine on ``sample`` (default: random 0..1 input of ``batch_size`` rows)."""
    x = sample if sample is not None else np.random.default_rng(0).random((batch_size, kernels[0].shape[0]),
                                                                          dtype=np.float32)
    names = [n for n in ENGINES[2:] if n != "scatter-numba" or batch_size < 64]  # per-sample: hopeless on batches
    engines = [build_engine(kernels, biases, batch_size, name, input_scale=input_scale) for name in names]
    return _fastest(engines, x, batch_size, 3, 1 if len(x) >= 1000 else 5, settle_s)


def build_engine(kernels: Kernels, biases: Biases, batch_size: int, engine: str = "auto",
                 sample: np.ndarray | None = None, settle_s: float | None = None,
                 input_scale: float = 1.0) -> Engine:
    """Forward-pass engine for these (masked) kernels, tuned for calls of ``batch_size`` rows.

    ``engine``: one of ENGINES; "auto" follows the rule in the module docstring, "measure" times every
    engine. ``sample``: a few real inputs ``(n, fan_in)``; with it, "auto" at small batches times its
    candidates on them, because the per-sample kernels' speed depends on how many activations are zero.
    ``settle_s``: untimed seconds before each timed turn when "auto" or "measure" time engines (None: SETTLE_S).
    ``input_scale``: the engine computes the network of ``x * input_scale`` (1/255 takes raw pixels; the sparse
    kernels scale as they read, dense ones fold it into the first kernel); ``sample`` is raw input then too."""
    settle_s = SETTLE_S if settle_s is None else settle_s
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    kernels = [np.asarray(w, np.float32) for w in kernels]
    biases = [None if b is None else np.asarray(b, np.float32) for b in bias_list(kernels, biases)]
    if engine == "measure":
        return _measure(kernels, biases, batch_size, sample, settle_s, input_scale)
    if engine == "auto" and sample is None:
        ck, cb = compact_units(kernels, biases)
        return _named_engine(_auto_name(kernels, ck, batch_size), ck, cb, input_scale)
    candidates = engine_candidates(kernels, biases, batch_size, engine, input_scale)
    if len(candidates) == 1:
        return candidates[0]
    return _fastest(candidates, sample, batch_size, repeats=3, per_round=1 if batch_size >= 1000 else 5,
                    settle_s=settle_s)


def engine_candidates(kernels: Kernels, biases: Biases, batch_size: int, engine: str = "auto",
                      input_scale: float = 1.0) -> list[Engine]:
    """The engines ``engine`` chooses among for calls of ``batch_size`` rows: one engine, or, for "auto" where
    either may win, numpy (dense or compact-dense) first and the batch size's sparse kernel, to be timed on real
    inputs: at small batches on a pruned net (density <= TIMED_MAX_DENSITY, or units removed), since the per-sample
    kernel's speed depends on the inputs; at larger batches between this CPU's calibrated threshold and
    TIMED_MAX_DENSITY. ("measure" is not handled here: it times every engine itself, see build_engine.)"""
    if engine not in ENGINES or engine == "measure":
        raise ValueError(f"engine_candidates takes a concrete engine or auto, got {engine!r}")
    kernels = [np.asarray(w, np.float32) for w in kernels]
    biases = [None if b is None else np.asarray(b, np.float32) for b in bias_list(kernels, biases)]
    if engine == "dense":
        return [_named_engine("dense", kernels, biases, input_scale)]
    ck, cb = compact_units(kernels, biases)
    if engine != "auto":
        return [_named_engine(engine, ck, cb, input_scale)]
    dense_name, d = _dense_name(kernels, ck), density(ck)
    if batch_size < SMALL_BATCH:
        timed = d <= TIMED_MAX_DENSITY or dense_name == "compact-dense"
    else:
        timed = d <= TIMED_MAX_DENSITY and calibration.max_density(batch_size) < d
    if timed:
        return [_named_engine(n, ck, cb, input_scale) for n in (dense_name, _sparse_name(batch_size))]
    return [_named_engine(_auto_name(kernels, ck, batch_size), ck, cb, input_scale)]


def _named_engine(name: str, ck: list[np.ndarray], cb: list[np.ndarray | None], input_scale: float) -> Engine:
    """Engine ``name`` on the (compacted, for all but "dense") net ``ck``, ``cb``, of ``x * input_scale``."""
    if name in ("dense", "compact-dense"):
        if input_scale != 1:
            ck = [ck[0] * np.float32(input_scale), *ck[1:]]
        return Engine(name, lambda x: forward_dense(ck, cb, x))
    return Engine(name, sparse_forward(name, ck, cb, input_scale))
