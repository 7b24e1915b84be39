"""Timing protocol: dense vs sparse forward passes, alternated in one process, medians in milliseconds.

Levels (``eval.timing``), what each costs and how noisy it is: benchmarks/RESULTS.md "Timing levels", measured with
``benchmarks/harness_bench.py --noise``:

- ``off``: nothing is timed (no engine is built); a job logs no timing metric.
- ``quick`` (default): rounds until every median is stable (the last round moved it by at most
  ``QUICK_TOLERANCE`` of itself), at least ``QUICK_MIN_ROUNDS`` and at most ``QUICK_MAX_ROUNDS`` (or
  ``eval.repeats`` if smaller), in A B B A order; a turn that follows another function's starts from idle cores
  (``settle_s`` of sleep, or of the caller's single-threaded work: :class:`IdleWork`), and then calls its function
  once untimed (the idle time let its threads sleep and its data leave the caches: a 1 ms sparse pass timed cold
  read 1.4-4.8 ms, and a k=99 job's speedup 6.5-31x against the benchmark's 27-32x); no warm-up rounds (the
  accuracy and exactness passes just ran every function once).
- ``full``: ``eval.warmup`` untimed rounds then exactly ``eval.repeats`` rounds, each turn in its own steady
  state (``settle_s`` of untimed calls of the function itself first).

Both settle rules exist for one measured reason: thread pools keep spinning after a call and take the cores from
whatever runs next. OpenBLAS's workers spin ~0.11 s (a numba kernel timed right after numpy ran at half speed);
numba's OpenMP threads (libgomp) spin for several ms (dense numpy timed right after a 1.4 ms sparse call ran at half
speed, 2026-12-06, Intel Xeon: it made a 0.65x kernel look 1.31x faster than numpy). Sleeping at each handover
lets them go idle (cheap); calling each function first keeps every side warm (the reference protocol, several
times dearer).

What is timed against what (engines, baselines) is src/engine/evaluation.py's business; this module knows only
functions and clocks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

LEVELS = ("off", "quick", "full")
SETTLE_S = 0.15  # > the ~0.11 s OpenBLAS's workers spin after a call
LATENCY_EXAMPLES = 16  # latency = ms per one-example call, averaged over this many test images
QUICK_MIN_ROUNDS = 2
QUICK_MAX_ROUNDS = 3
QUICK_TOLERANCE = 0.10
LATENCY_PASSES = 3  # timed passes over the LATENCY_EXAMPLES images per turn


Idle = Callable[[float], None]  # idle(seconds): let the cores settle at least this long (the quick protocol's rule)


class IdleWork:
    """An ``idle`` that does the caller's single-threaded work while the cores settle: each call runs queued tasks,
    in order, while its ``seconds`` last (at least one), then sleeps whatever is left of them. A task must not
    start BLAS or numba threads (drawing a figure, writing a file, compressing bytes); its time replaces sleep."""

    def __init__(self, tasks: Iterable[Callable[[], object]] = ()) -> None:
        self.tasks = list(tasks)

    def finish(self) -> None:
        """Run the tasks no settle has run (timing off, or fewer settles than tasks)."""
        while self.tasks:
            self.tasks.pop(0)()

    def __call__(self, seconds: float) -> None:
        started = time.perf_counter()
        while self.tasks and time.perf_counter() - started < seconds:
            self.tasks.pop(0)()
        time.sleep(max(0.0, seconds - (time.perf_counter() - started)))


def in_calls(fn: Callable[[np.ndarray], object], x: np.ndarray, batch_size: int) -> Callable[[], None]:
    """A no-argument callable that runs all of ``x`` through ``fn`` in calls of ``batch_size`` rows."""
    return lambda: [fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def _stable(samples: list[float], per_round: int, tolerance: float) -> bool:
    """Whether the last round moved the median of ``samples`` by at most ``tolerance`` of it."""
    now, before = float(np.median(samples)), float(np.median(samples[:-per_round]))
    return abs(now - before) <= tolerance * now


def time_samples(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                 settle_s: float = 0.0, per_round: int = 1, settle: str = "steady",
                 min_repeats: int | None = None, tolerance: float = 0.0,
                 idle: Idle | None = None) -> dict[str, list[float]]:
    """Wall time (ms) of each function's timed calls, in the order timed; functions take turns for up to
    ``repeats`` rounds after ``warmup`` untimed rounds, with ``per_round`` timed calls in a row per turn.

    ``settle="steady"``: turns go A, B, A, B, ...; each turn first calls its function untimed until
    ``settle_s`` seconds have passed (at least once when > 0), so each side is timed in its own steady state.
    ``settle="switch"``: turns go A, B, B, A, A, B, ... (each round reverses the last), and a turn that follows
    another function's turn (or comes first) first lets the cores settle ``settle_s`` seconds (``idle(settle_s)``:
    None sleeps, an :class:`IdleWork` works meanwhile), then calls its function once untimed.
    ``min_repeats``: stop after this many rounds (at least 2) once one more round moved no median by more
    than ``tolerance`` (a fraction) of itself; None runs all ``repeats`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names, previous = list(fns), None
    for done in range(1, repeats + 1):
        order = names if settle != "switch" or done % 2 else names[::-1]
        for name in order:
            fn = fns[name]
            if settle == "switch":
                if name != previous:
                    (idle or time.sleep)(settle_s)
                    fn()  # untimed: wakes its threads and refills the caches the idle time emptied
                previous = name
            else:
                switched = time.perf_counter()
                while settle_s > 0:
                    fn()
                    if time.perf_counter() - switched >= settle_s:
                        break
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        if (min_repeats is not None and done >= max(min_repeats, 2)
                and all(_stable(v, per_round, tolerance) for v in samples.values())):
            break
    return samples


def time_alternating(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, settle_s: float = 0.0,
                     per_round: int = 1, settle: str = "steady", min_repeats: int | None = None,
                     tolerance: float = 0.0, idle: Idle | None = None) -> dict[str, float]:
    """Median wall time (ms) of each function's timed calls: :func:`time_samples`, same arguments."""
    samples = time_samples(fns, repeats, warmup, settle_s, per_round, settle, min_repeats, tolerance, idle)
    return {name: float(np.median(v)) for name, v in samples.items()}


@dataclass(frozen=True)
class Protocol:
    """How one level times: ``time_alternating``'s arguments."""

    repeats: int
    warmup: int
    settle_s: float
    settle: str
    min_repeats: int | None
    tolerance: float
    idle: Idle | None = None

    def sleeping(self) -> Protocol:
        """This protocol with plain sleep to settle (no :class:`IdleWork`)."""
        return dataclasses.replace(self, idle=None)

    def time(self, fns: dict[str, Callable[[], object]], per_round: int = 1) -> dict[str, float]:
        return time_alternating(fns, self.repeats, self.warmup, self.settle_s, per_round, self.settle,
                                self.min_repeats, self.tolerance, self.idle)


def protocol(level: str, repeats: int, warmup: int, settle_s: float, idle: Idle | None = None) -> Protocol:
    """The protocol of ``level`` ("quick" or "full") with the configured ``eval.*`` numbers; ``idle``: how the
    quick protocol waits for the cores to settle (``full`` settles by calling the timed function itself)."""
    if level == "quick":
        return Protocol(min(repeats, QUICK_MAX_ROUNDS), 0, settle_s, "switch", QUICK_MIN_ROUNDS, QUICK_TOLERANCE,
                        idle)
    if level == "full":
        return Protocol(repeats, warmup, settle_s, "steady", None, 0.0)
    raise ValueError(f"unknown timing level {level!r}; choose one of {', '.join(LEVELS)}")
