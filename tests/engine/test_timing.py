"""The timing protocol (src/engine/timing.py) and what a prune job times (src/engine/evaluation.py), with fake
clocks' worth of work: no assertion on how fast anything is, only on what is called, how often, and what is reported."""

from __future__ import annotations

import inspect
import time

import numpy as np
import pytest

from src.engine import evaluation, timing
from src.engine.evaluation import accuracy_and_loss, time_evaluation
from src.engine.timing import protocol, time_alternating
from src.pruning import masks as M

TIMING_METRICS = {"dense_eval_ms", "sparse_eval_ms", "eval_speedup", "dense_latency_ms", "sparse_latency_ms",
                  "latency_speedup", "sparse_max_abs_err"}


def test_time_alternating_positive_medians() -> None:
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a") or sum(range(1000)), "b": lambda: calls.append("b") or sum(range(10))}
    out = time_alternating(fns, repeats=5, warmup=2)
    assert set(out) == {"a", "b"} and all(v > 0 for v in out.values())
    assert calls == ["a", "b"] * 7
    calls.clear()
    time_alternating(fns, repeats=3, warmup=0, settle_s=1e-9)  # at least one untimed call before each timed one
    assert calls == ["a", "a", "b", "b"] * 3
    calls.clear()
    time_alternating({"a": lambda: calls.append("a") or time.sleep(0.01)}, repeats=1, warmup=0, settle_s=0.05)
    assert 5 <= len(calls) <= 7  # ~0.05 s of 0.01 s untimed calls, then the timed one
    calls.clear()
    out = time_alternating(fns, repeats=2, warmup=0, per_round=3)  # 3 timed calls in a row per turn
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 and out["a"] > 0


def test_switch_settle_sleeps_at_every_handover_then_calls_once_untimed(monkeypatch) -> None:
    """Both sides leave threads spinning (OpenBLAS ~0.11 s, numba's OpenMP several ms: numpy timed right after a
    sparse call ran at half speed), so every turn that follows the other function's settles, in both directions."""
    sleeps: list[float] = []
    calls: list[str] = []
    monkeypatch.setattr(timing.time, "sleep", lambda s: (sleeps.append(s), calls.append("sleep")))
    fns = {"blas": lambda: calls.append("blas"), "numba": lambda: calls.append("numba")}
    time_alternating(fns, repeats=4, warmup=0, settle_s=0.2, settle="switch")
    # rounds blas numba | numba blas | blas numba | numba blas: a settle and an untimed call at each handover
    assert calls == ["sleep", "blas", "blas", "sleep", "numba", "numba", "numba", "sleep", "blas", "blas", "blas",
                     "sleep", "numba", "numba", "numba", "sleep", "blas", "blas"]
    assert sleeps == [0.2] * 5
    calls.clear()
    time_alternating({"numba": fns["numba"]}, repeats=2, warmup=0, settle_s=0.2, settle="switch")
    assert calls == ["sleep", "numba", "numba", "numba"]  # the first turn settles too; the same function's turn not


def _clock(durations: dict[str, list[float]]):
    """Functions that each 'take' the next of their given durations (ms), through a patched perf_counter."""
    now = [0.0]

    def make(name: str):
        def fn() -> None:
            now[0] += durations[name].pop(0) / 1e3
        return fn
    return {name: make(name) for name in durations}, (lambda: now[0])


def test_adaptive_rounds_stop_once_medians_are_stable(monkeypatch) -> None:
    durations = {"a": [10.0] * 10, "b": [5.0] * 10}
    fns, clock = _clock(durations)
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    out = time_alternating(fns, repeats=7, warmup=0, min_repeats=2, tolerance=0.05)
    assert out == {"a": pytest.approx(10.0), "b": pytest.approx(5.0)}
    assert len(durations["a"]) == 8  # 2 rounds, then stable


def test_adaptive_rounds_go_on_while_a_median_moves_and_stop_at_the_cap(monkeypatch) -> None:
    durations = {"a": [10.0, 20.0, 10.0, 20.0, 10.0, 20.0, 10.0], "b": [5.0] * 7}
    fns, clock = _clock(durations)
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    time_alternating(fns, repeats=4, warmup=0, min_repeats=2, tolerance=0.05)
    assert len(durations["a"]) == 3  # 4 rounds ran (the cap): a's median kept moving by > 5%
    fns, clock = _clock(steady := {"a": [10.0, 10.2, 10.0, 10.0], "b": [5.0] * 4})
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    time_alternating(fns, repeats=4, warmup=0, min_repeats=2, tolerance=0.05)
    assert len(steady["a"]) == 2  # stable after the minimum of 2 rounds


def test_levels() -> None:
    quick, full = protocol("quick", 7, 2, 0.15), protocol("full", 7, 2, 0.15)
    assert (quick.settle, quick.warmup, quick.repeats, quick.min_repeats) == ("switch", 0, timing.QUICK_MAX_ROUNDS, 2)
    assert (full.settle, full.warmup, full.repeats, full.min_repeats) == ("steady", 2, 7, None)
    assert protocol("quick", 1, 2, 0.15).repeats == 1  # eval.repeats below the cap wins
    with pytest.raises(ValueError, match="unknown timing level"):
        protocol("off", 7, 2, 0.15)


def _net(k: float, method: str = "weight"):
    rng = np.random.default_rng(0)
    shapes = [(784, 64), (64, 32), (32, 10)]
    ws = [(rng.standard_normal(s) * np.sqrt(2.0 / s[0])).astype(np.float32) for s in shapes]
    return M.apply_masks(ws, [None] * 3, M.layer_masks(ws, method, k), method)


def _record(monkeypatch) -> list[list[str]]:
    """Record the functions of each timing (in order) instead of timing them: each 'takes' 1 ms, scatter 0.5."""
    timings: list[list[str]] = []

    def fake(self, fns, per_round=1, spinning=()):
        timings.append(list(fns))
        return {name: 0.5 if name == "scatter-numba" else 1.0 for name in fns}
    monkeypatch.setattr(timing.Protocol, "time", fake)
    return timings


@pytest.mark.parametrize("level", ["quick", "full"])
def test_one_timing_chooses_and_measures_the_batch_1_engine(monkeypatch, level) -> None:
    timings = _record(monkeypatch)
    x = np.random.default_rng(1).random((40, 784), dtype=np.float32)
    timed = time_evaluation(*_net(90), x, level, "auto", 3, 1, 0.0)
    assert timings == [["dense", "csr-numba"], ["dense", "compact-dense", "scatter-numba"]]  # numpy first
    assert set(timed.metrics) == TIMING_METRICS and timed.latency_engine == "scatter-numba"
    assert timed.metrics["latency_speedup"] == pytest.approx(2.0)  # dense 1.0 ms vs the chosen 0.5 ms
    assert timed.metrics["dense_latency_ms"] == pytest.approx(1.0 / timing.LATENCY_EXAMPLES)
    assert timed.metrics["sparse_max_abs_err"] <= 1e-4


def test_dense_choice_is_not_timed_twice(monkeypatch) -> None:
    timings = _record(monkeypatch)
    x = np.random.default_rng(1).random((40, 784), dtype=np.float32)
    timed = time_evaluation(*_net(0), x, "quick", "auto", 3, 1, 0.0)
    assert timings == [["dense"], ["dense"]]
    assert timed.engine == timed.latency_engine == "dense"
    assert timed.metrics["eval_speedup"] == timed.metrics["latency_speedup"] == 1.0


def test_real_timing_reports_positive_times() -> None:
    x = np.random.default_rng(1).random((300, 784), dtype=np.float32)
    timed = time_evaluation(*_net(90, "unit"), x, "quick", "auto", 3, 1, 0.0)
    assert all(timed.metrics[m] > 0 for m in TIMING_METRICS - {"sparse_max_abs_err"})
    assert timed.engine == "compact-dense" and timed.metrics["sparse_max_abs_err"] <= 1e-4


def test_accuracy_and_loss_from_logits() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    accuracy, loss = accuracy_and_loss(logits, np.array([0, 0, 1]))
    expected = -np.mean([2 - np.log(np.exp(2) + 1), 0 - np.log(1 + np.exp(3)), 1 - np.log(2 * np.e)])
    assert accuracy == pytest.approx(1 / 3) and loss == pytest.approx(expected)
    assert evaluation.NUMPY_ENGINES == ("dense", "compact-dense")


def test_idle_work_runs_its_tasks_while_the_cores_settle() -> None:
    calls: list[str] = []
    work = timing.IdleWork([lambda: calls.append("task")])
    started = time.perf_counter()
    time_alternating({"numpy": lambda: calls.append("numpy"), "numba": lambda: calls.append("numba")}, repeats=2,
                     warmup=0, settle_s=0.05, settle="switch", idle=work)
    # the task once, in the first settle; the later settles sleep
    assert calls == ["task", "numpy", "numpy", "numba", "numba", "numba", "numpy", "numpy"]
    assert time.perf_counter() - started >= 0.05  # and the rest of the settle still slept
    assert not work.tasks
    work.finish()  # nothing left to run
    assert calls.count("task") == 1


def test_idle_work_spreads_long_tasks_over_settles_and_finish_runs_the_rest() -> None:
    calls: list[str] = []
    work = timing.IdleWork([lambda i=i: (calls.append(f"task{i}"), time.sleep(0.03)) for i in range(3)])
    time_alternating({"numpy": lambda: calls.append("numpy"), "numba": lambda: calls.append("numba")}, repeats=2,
                     warmup=0, settle_s=0.02, settle="switch", idle=work)
    # rounds: numpy numba | numba numpy: three settles, the first two each run one task longer than it
    assert calls == ["task0", "numpy", "numpy", "task1", "numba", "numba", "numba", "task2", "numpy", "numpy"]
    assert not work.tasks
    idle = timing.IdleWork([lambda: (calls.append("late"), time.sleep(0.06)), lambda: calls.append("later")])
    time_alternating({"numpy": lambda: None}, repeats=2, warmup=0, settle_s=0.05, settle="switch",
                     idle=idle)  # one function: one settle (the first turn), the second task waits for finish
    assert calls[-1] == "late"
    idle.finish()
    assert calls[-1] == "later"


def test_a_prune_jobs_idle_work_runs_before_batched_turns_never_before_batch_1_turns(monkeypatch) -> None:
    kernels, biases = _net(90)
    x = np.random.default_rng(0).random((64, kernels[0].shape[0]), dtype=np.float32)
    order: list[str] = []
    real = timing.time_alternating

    def spy(*args, **kwargs):
        bound = inspect.signature(real).bind(*args, **kwargs)
        order.append("batch-1" if bound.arguments.get("idle") is None else "batched")
        return real(*args, **kwargs)

    monkeypatch.setattr(timing, "time_alternating", spy)
    work = timing.IdleWork([lambda: None])
    time_evaluation(kernels, biases, x, "quick", "auto", 3, 0, 0.0, idle=work)
    assert order == ["batched", "batch-1"]
