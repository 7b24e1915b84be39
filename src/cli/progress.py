"""A sweep's progress in the terminal: the ``(n/N, ETA ...)`` note that ends each job's line, and the sweep's
last line (wall time; jobs run, skipped, failed). Pure formatting: the counts come from the sweep run."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min`` (rounded to whole seconds / minutes)."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_seconds(done: int, total: int, elapsed_s: float) -> float:
    """Seconds left if the remaining ``total - done`` jobs take what the ``done`` ones took on average
    (``elapsed_s`` since the sweep started; with parallel workers this is their combined rate)."""
    return elapsed_s * max(total - done, 0) / done if done > 0 else float("nan")


def progress_note(done: int, total: int | None, elapsed_s: float, failed: int = 0) -> str:
    """``(3/8, ETA 1 min 20 s)``: jobs done (finished, skipped or failed) of the sweep's total, and the time left
    at the rate so far; ``(3/8, 1 failed, ETA ...)`` when jobs failed; ``(3/?)`` when the total is unknown."""
    failures = f", {failed} failed" if failed else ""
    if not total:
        return f"({done}/?{failures})"
    return f"({done}/{total}{failures}, ETA {duration(eta_seconds(done, total, elapsed_s))})"


def sweep_summary(sweep_id: str, wall_s: float, ran: int, skipped: int, failed: int, interrupted: bool = False
                  ) -> str:
    """The sweep's last line: ``[sweep] <id>: 8 jobs in 1 min 05 s: 6 ran, 2 skipped, 0 failed``; after an
    interrupt, ``1 failed or stopped`` (the jobs started but not finished include the ones the signal stopped)."""
    n = ran + skipped + failed
    unfinished = f"{failed} failed or stopped" if interrupted else f"{failed} failed"
    return (f"[sweep] {sweep_id}: {n} job{'s' if n != 1 else ''} in {duration(wall_s)}: {ran} ran, {skipped} skipped, "
            f"{unfinished}")
