"""Wall-clock seconds per phase of a job, for the prune run's ``job_seconds/<phase>`` metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseClock:
    """Accumulates wall seconds per named phase; ``total`` counts from construction."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def metrics(self, prefix: str = "job_seconds/") -> dict[str, float]:
        """Each phase's seconds and ``total`` (including time outside any phase), as metric names."""
        return {**{f"{prefix}{k}": v for k, v in self.seconds.items()},
                f"{prefix}total": time.perf_counter() - self.started}
