"""The progress note of a sweep job's line and the sweep's last line."""

from __future__ import annotations

import pytest

from src.cli.progress import duration, eta_seconds, progress_note, sweep_summary


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (42, "42 s"), (65, "1 min 05 s"), (3599.6, "1 h 00 min"),
                                           (7620, "2 h 07 min")])
def test_duration_reads_at_a_glance(seconds, text):
    assert duration(seconds) == text


def test_eta_extrapolates_the_rate_so_far():
    assert eta_seconds(done=2, total=8, elapsed_s=10) == 30  # 5 s a job, 6 left
    assert eta_seconds(done=8, total=8, elapsed_s=40) == 0


def test_note_counts_done_jobs_and_failures_and_says_when_the_total_is_unknown():
    assert progress_note(3, 8, 30) == "(3/8, ETA 50 s)"
    assert progress_note(4, 8, 40, failed=1) == "(4/8, 1 failed, ETA 40 s)"
    assert progress_note(8, 8, 600) == "(8/8, ETA 0 s)"
    assert progress_note(3, None, 30) == "(3/?)"


def test_the_sweeps_last_line():
    assert sweep_summary("3f9c0a1b2c4d", 65, ran=6, skipped=2, failed=0) == (
        "[sweep] 3f9c0a1b2c4d: 8 jobs in 1 min 05 s: 6 ran, 2 skipped, 0 failed")
    assert sweep_summary("3f9c0a1b2c4d", 3, 1, 0, 0).startswith("[sweep] 3f9c0a1b2c4d: 1 job in 3 s")
    assert sweep_summary("3f9c0a1b2c4d", 28, 4, 0, 1, interrupted=True).endswith(  # the job the signal stopped
        ": 5 jobs in 28 s: 4 ran, 0 skipped, 1 failed or stopped")
