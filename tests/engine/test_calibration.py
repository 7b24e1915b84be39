"""src.engine.calibration: auto's density thresholds measured on the machine at hand, cached per CPU, and the
choices src.engine.choice makes with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from src.engine import calibration, choice
from src.engine.choice import build_engine, engine_candidates
from src.engine.dense import forward_dense
from tests.conftest import PROJECT


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty calibration cache of the test's own, and no thresholds remembered in this process."""
    monkeypatch.setenv("PRUNESWEEP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "_loaded", {})
    return tmp_path / "engine_calibration.json"


TABLE = {1: 0.2, 7: 0.15, 8: 0.4, 16: 0.42, 32: 0.43, 64: 0.45, 65: 0.46, 128: 0.47, 129: 0.44, 256: 0.48, 257: 0.45,
         1000: 0.5}


@pytest.fixture
def counted_measure(monkeypatch):
    calls = []
    monkeypatch.setattr(calibration, "measure", lambda: calls.append(1) or dict(TABLE))
    return calls


def test_measure_finds_that_the_sparse_kernels_beat_numpy_at_2_percent_on_this_machine() -> None:
    """Timed for real: at 2% density the per-sample and the batched kernel beat dense numpy by far (a fiftieth of the
    multiply-adds). Where the walk stops above that depends on the machine and its load (another process on the
    cores slows OpenBLAS's threads more than numba's), so only the 2% point is asserted here."""
    found = calibration.measure(densities=(0.02, 0.9), batches=(1, 1000), repeats=2)
    assert set(found) == {1, 1000} and found[1] >= 0.02 and found[1000] >= 0.02


def test_measure_walks_up_the_grid_and_stops_at_the_first_loss(monkeypatch) -> None:
    """With a clock on which the sparse kernel is 1.5x faster than numpy up to 30% density and 1.05x at 40% (under
    MARGIN), the threshold is 0.3 at every batch, and no density above the first loss is timed."""
    timed = []

    def clock(fns, **kwargs):
        d = timed[-1]
        return {"dense": 1.0, "sparse": 1 / 1.5 if d <= 0.3 else 1 / 1.05}
    real_pruned = calibration._pruned
    monkeypatch.setattr(calibration, "_pruned", lambda net, d: timed.append(d) or real_pruned(net, d))
    monkeypatch.setattr(calibration, "time_alternating", clock)
    assert calibration.measure(batches=(1, 64)) == {1: 0.3, 64: 0.3}
    assert timed == [0.05, 0.1, 0.15, 0.2, 0.3, 0.4] * 2


def test_measure_starts_each_batch_from_the_last_threshold_of_the_same_kernel(monkeypatch) -> None:
    """csr-numba wins up to 0.3 at batch 8, up to 0.5 at 64 and up to 0.2 at 1000: batch 64 starts at 0.3 and walks
    up, batch 1000 starts at 0.5 and walks down; the per-sample kernel at batch 1 starts from the bottom. Each net
    is pruned and packed once per kernel, whatever the batches it is timed at."""
    timed, pruned, limit = [], [], {1: 0.1, 8: 0.3, 64: 0.5, 1000: 0.2}

    def clock(fns, **kwargs):
        (_, d), batch = fns["sparse"]
        timed.append((batch, d))
        return {"dense": 1.0, "sparse": 1 / 1.5 if d <= limit[batch] else 1 / 1.05}
    monkeypatch.setattr(calibration, "_pruned", lambda net, d: pruned.append(d) or [d])
    monkeypatch.setattr(calibration, "sparse_forward", lambda name, ws, biases, scale: (name, ws[0]))
    monkeypatch.setattr(calibration, "in_calls", lambda fn, x, batch: (fn, batch))
    monkeypatch.setattr(calibration, "time_alternating", clock)
    assert calibration.measure(batches=(1, 8, 64, 1000)) == limit
    assert timed == [(1, 0.05), (1, 0.1), (1, 0.15), (8, 0.05), (8, 0.1), (8, 0.15), (8, 0.2), (8, 0.3), (8, 0.4),
                     (64, 0.3), (64, 0.4), (64, 0.5), (64, 0.6), (1000, 0.5), (1000, 0.4), (1000, 0.3), (1000, 0.2)]
    assert pruned == [0.05, 0.1, 0.15] + [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6]


def test_thresholds_are_measured_once_per_cpu_and_cached(cache, counted_measure, capsys) -> None:
    assert calibration.thresholds() == TABLE
    assert "timing the sparse kernels" in capsys.readouterr().err and len(counted_measure) == 1
    saved = json.loads(cache.read_text())
    assert saved["cpus"][calibration.cpu_key()]["max_density"]["1000"] == 0.5
    calibration._loaded.clear()  # a new process: reads the file, measures nothing
    assert calibration.thresholds()[64] == 0.45 and len(counted_measure) == 1
    saved["cpus"]["another CPU | avx2 | 2 cores | numpy 0"] = saved["cpus"].pop(calibration.cpu_key())
    cache.write_text(json.dumps(saved))  # the cache holds only another CPU's entry: this one is measured
    calibration._loaded.clear()
    calibration.thresholds()
    assert len(counted_measure) == 2 and len(json.loads(cache.read_text())["cpus"]) == 2


@pytest.mark.parametrize("content", ["{not json", '{"format": FORMAT, "cpus": {"KEY": {"max_density": {"1": 7}}}}',
                                     '{"format": 99}', '{"format": 3, "cpus": {"KEY": {"max_density": TABLE}}}', "[]",
                                     '{"format": FORMAT, "cpus": []}', "VALID_PLUS_A_BAD_KEY"])
def test_an_unusable_cache_is_measured_again_and_rewritten(cache, counted_measure, content, capsys) -> None:
    unreadable = "7" not in content and content != "VALID_PLUS_A_BAD_KEY"  # those: this CPU's entry broken
    if content == "VALID_PLUS_A_BAD_KEY":
        table = {**{str(b): d for b, d in TABLE.items()}, "x": 0.1}
        content = json.dumps({"format": calibration.FORMAT, "cpus": {"KEY": {"max_density": table}}})
    table = json.dumps({str(b): d for b, d in TABLE.items()})  # format 3: measured with the older kernels
    content = content.replace("FORMAT", str(calibration.FORMAT)).replace("TABLE", table)
    cache.write_text(content.replace("KEY", calibration.cpu_key()))
    assert calibration.thresholds()[1000] == 0.5 and len(counted_measure) == 1
    assert json.loads(cache.read_text())["format"] == calibration.FORMAT
    assert ("unreadable or from another version" in capsys.readouterr().err) == unreadable


def test_a_cache_dir_that_is_a_file_is_named_in_the_message(tmp_path, monkeypatch, counted_measure, capsys) -> None:
    monkeypatch.setattr(calibration, "_loaded", {})
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("PRUNESWEEP_CACHE_DIR", str(tmp_path / "afile"))
    assert calibration.thresholds() == TABLE  # measured and used, not kept
    assert f"({tmp_path / 'afile'} is not a folder)" in capsys.readouterr().err


def test_max_density_takes_the_lower_of_the_calibrated_batches_around_it(cache, counted_measure) -> None:
    """A calibrated batch takes its own threshold; one between two calibrated batches of the same kernel the lower
    of theirs (batch 4: the per-sample kernel's 1 and 7; batch 300: the blocks' 257 and 1000); past the largest,
    the largest's."""
    batches = (1, 4, 7, 8, 12, 16, 31, 32, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300, 999, 1000, 10000)
    assert [calibration.max_density(b) for b in batches] == \
        [0.2, 0.15, 0.15, 0.4, 0.4, 0.42, 0.42, 0.43, 0.43, 0.45, 0.46, 0.46, 0.47, 0.44, 0.44, 0.48, 0.45, 0.45, 0.45,
         0.5, 0.5]


def _net_at(density: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal(s).astype(np.float32) for s in ((40, 50), (50, 30), (30, 10))]
    return [np.where(rng.random(w.shape) < density, w, np.float32(0)) for w in ws]


def test_auto_follows_this_cpus_threshold_and_times_the_band_above_it(cache, monkeypatch) -> None:
    """Threshold 0.3 at batch 1000: below it csr-numba alone; above it, with nothing to time on, numpy; with a
    sample, numpy and csr-numba timed on it and the faster kept, so "auto" never picks a kernel slower than
    dense numpy where it could time them; above TIMED_MAX_DENSITY numpy alone."""
    monkeypatch.setattr(calibration, "measure", lambda: {b: 0.1 if b == 1 else 0.3 for b in calibration.BATCHES})
    sparse, middle, full = _net_at(0.15), _net_at(0.5), _net_at(1.0)
    x = np.random.default_rng(1).random((1000, 40), dtype=np.float32)
    assert build_engine(sparse, None, 1000).name == "csr-numba"
    assert build_engine(middle, None, 1000).name == "dense"
    assert [e.name for e in engine_candidates(middle, None, 1000)] == ["dense", "csr-numba"]
    assert [e.name for e in engine_candidates(full, None, 1000)] == ["dense"]
    for slow in ("dense", "csr-numba"):
        monkeypatch.setattr(choice, "time_alternating",
                            lambda fns, slow=slow, **kw: {n: 2.0 if n == slow else 1.0 for n in fns})
        engine = build_engine(middle, None, 1000, "auto", sample=x)
        assert engine.name != slow
        assert np.max(np.abs(engine(x) - forward_dense(middle, None, x))) <= 1e-3


def test_processes_starting_together_measure_once(tmp_path) -> None:
    """Two processes (a parallel sweep's jobs) ask for the thresholds at once: one measures while the other waits on
    the lock file, then reads what was written, so neither times the kernels while the other loads the machine."""
    body = (f"import time; from src.engine import calibration as c\n"
            f"def slow():\n    open({str(tmp_path / 'measured')!r}, 'a').write('x\\n'); time.sleep(1.0)\n"
            f"    return {TABLE!r}\n"
            f"c.measure = slow\nprint(c.thresholds()[1000])")
    env = {**os.environ, "PRUNESWEEP_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(PROJECT)}
    procs = [subprocess.Popen([sys.executable, "-c", body], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["0.5", "0.5"] and (tmp_path / "measured").read_text() == "x\n"


def test_a_dense_net_looks_nothing_up(cache, counted_measure) -> None:
    """An unpruned net (or one above the grid's top density) takes numpy whatever the thresholds: choosing its
    engine measures nothing (a first `predict` on a new machine is not 15 s slower for it)."""
    full = _net_at(1.0)
    assert build_engine(full, None, 1000).name == "dense" and [e.name for e in engine_candidates(full, None, 1000)] == \
        ["dense"]
    assert build_engine(full, None, 1).name == "dense" and counted_measure == []


def test_a_loaded_model_chooses_per_calibrated_call_size(cache, monkeypatch) -> None:
    """``SparseModel.predict`` picks an MLP's engine by the calibrated class of each call's size: with csr-numba
    allowed to 30% only at batches 16-64, a 20%-dense net runs 16- and 40-row calls through it and 8-, 100- (between
    65 and 128) and 1000-row calls through numpy, each class built once, all matching the dense pass."""
    from src.engine.sparse_model import SparseModel, mlp_network

    table = {b: 0.3 if 16 <= b <= 64 else 0.05 for b in calibration.BATCHES}
    monkeypatch.setattr(calibration, "measure", lambda: table)
    ws = _net_at(0.2)
    model = SparseModel(mlp_network(ws, [None] * len(ws), 1.0))
    assert [model.engine(n).name == "csr-numba" for n in (8, 16, 40, 100, 1000)] == [False, True, True, False, False]
    assert model.engine(50) is model.engine(40)  # the span 33-63: one class
    assert sorted(model._engines) == [8, 16, 33, 66, 1000]
    x = np.random.default_rng(2).random((40, 40), dtype=np.float32)
    assert np.max(np.abs(model.predict(x) - forward_dense(ws, None, x))) <= 1e-4
