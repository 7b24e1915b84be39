"""Ctrl-C and SIGTERM mid-sweep: one line, exit 130 / 143, the partial report, nothing left RUNNING; the prune
run of the job at work and the sweep run are RUNNING while it works (seen from this process) and end KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import PROJECT, seed_store, store_overrides
from tests.test_live_sweep import read_only, sweep_runs
from tests.test_reliability import SWEEP8, all_runs, prune_runs_by_status, role

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


@pytest.mark.parametrize("signum, code, cold", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_signal_mid_sweep_stops_with_one_line_and_a_partial_report(tmp_path, mlflow_client_for, model_store,
                                                                   signum, code, cold):
    """``cold``: numba compiles the kernels in the sweep (an empty cache), so the signal may land in one of its
    compiler's ctypes callbacks, where Python cannot raise it (it used to print "Exception ignored ...")."""
    seed_store(model_store, tmp_path, "small")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0",
           **({"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")} if cold else {})}
    proc = subprocess.Popen([sys.executable, "-m", "src.run", *SWEEP8, *store_overrides(tmp_path)], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    db, running = tmp_path / "mlflow.db", None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and running is None:
            status = prune_runs_by_status(db)
            if "FINISHED" in status.values():  # a later job's run, open while its job works
                running = next((run_id for run_id, s in status.items() if s == "RUNNING"), None)
            time.sleep(0.02)
        assert running is not None, "no prune run was seen RUNNING after the first job finished"
        [live] = sweep_runs(read_only(db))  # the sweep run, open while the sweep runs
        assert live.info.status == "RUNNING" and live.data.metrics["jobs_finished"] >= 1
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    name = signal.Signals(signum).name
    assert lines[-1].startswith(f"interrupted ({name}): ") and lines[-1].endswith(
        " of 8 jobs finished; run the same command to resume"), lines[-1]
    n_done = int(lines[-1].split(": ")[1].split(" of ")[0])
    runs = all_runs(mlflow_client_for(tmp_path))
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    assert next(r for r in runs if r.info.run_id == running).info.status == "KILLED"
    finished = [r for r in role(runs, "prune") if r.info.status == "FINISHED"]
    assert 1 <= n_done == len(finished) < 8
    [sweep] = role(runs, "sweep")
    assert sweep.info.status == "KILLED" and name in sweep.data.tags["failure"]
    assert sweep.info.run_id == live.info.run_id and sweep.data.metrics["jobs_finished"] == n_done
    assert len(pd.read_csv(tmp_path / "multirun" / "report" / "report.csv")) == n_done
    assert f"{n_done} prune run{'s' if n_done != 1 else ''} -> " in out


def test_interrupt_inside_a_ctypes_callback_is_raised_again_in_ordinary_code():
    """A signal handled while a ctypes callback runs (as numba's compiler does) cannot propagate from there;
    it is sent again instead of being printed as "Exception ignored ...", and the program still stops."""
    script = """
import ctypes, os, signal, sys, time
from src.cli import interrupt
interrupt.install()
def callback():
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10_000_000):  # the handler runs in here and raises, where ctypes can only drop it
        pass
    return 0
cb = ctypes.CFUNCTYPE(ctypes.c_int)(callback)
try:
    cb()
    for _ in range(200):
        time.sleep(0.01)
    print("not interrupted")
except KeyboardInterrupt as ex:
    sys.exit(interrupt.stop(ex))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert done.returncode == 130, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "interrupted (SIGINT): run the same command to resume"
