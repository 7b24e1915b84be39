"""Two Keras models timed against each other where a user runs them: the TF backend's compiled
``predict_on_batch``, alternated ABBA in one process (both sides see the same machine state)."""

from __future__ import annotations

import statistics
import time

import keras
import numpy as np


def time_pair(a: keras.Model, b: keras.Model, x: np.ndarray, rounds: int, calls: int = 3) -> tuple[float, float]:
    """Median ms per ``predict_on_batch(x)`` of ``a`` and of ``b`` over ``rounds`` rounds of ABBA (BAAB every other
    round), each turn ``calls`` calls; one untimed call each first (tracing)."""
    for model in (a, b):
        model.predict_on_batch(x)
    times: dict[int, list[float]] = {id(a): [], id(b): []}
    for r in range(rounds):
        for model in ((a, b, b, a) if r % 2 == 0 else (b, a, a, b)):
            start = time.perf_counter()
            for _ in range(calls):
                model.predict_on_batch(x)
            times[id(model)].append(1000 * (time.perf_counter() - start) / calls)
    return statistics.median(times[id(a)]), statistics.median(times[id(b)])
