"""The sweep run (``role=sweep``, one per multirun) while its multirun runs: opened RUNNING by the first job that
starts, found by every later job (this process's cache, the file ``sweep_run.json`` in the sweep folder, or its
tags ``sweep_id`` and ``sweep_start``), and written to by id from any process or machine.

Jobs record themselves as events, metrics whose step is the Hydra job number: ``jobs/started`` (seconds after
the sweep started), ``jobs/seconds`` (a finished job's wall seconds, run or skipped) and ``jobs/failed`` (a failed
job's). Each counter (``jobs_started``, ``jobs_finished``, ``jobs_failed``) is the number of its events, read back
after the event is written and logged with step = that count: MLflow's latest value of a metric is the one with
the largest step, so writers that count at the same moment cannot move a counter backwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from src.store.tracking import fail_orphans, find_runs

RUN_FILE = "sweep_run.json"  # in the sweep folder: which run this multirun writes to
LOCK_FILE = ".sweep_run.lock"  # held while one process of this host opens the run
STARTED, FINISHED, FAILED = "jobs/started", "jobs/seconds", "jobs/failed"  # events, step = job number
COUNTERS = {STARTED: "jobs_started", FINISHED: "jobs_finished", FAILED: "jobs_failed"}
TOTAL = "jobs_total"


@dataclass(frozen=True)
class SweepRun:
    """A multirun's sweep run: where it is, when the multirun started (epoch seconds), how many jobs it plans."""

    client: MlflowClient
    run_id: str
    started: float
    total: int | None


_OPEN: dict[str, SweepRun] = {}  # sweep id -> the run this process writes to


def start_tag(started: float) -> str:
    """The tag value naming one multirun of a sweep folder (a folder can be swept again)."""
    return f"{started:.6f}"


@contextlib.contextmanager
def _host_lock(sweep_dir: Path) -> Iterator[None]:
    """One process of this host at a time (jobs of a parallel launcher start together)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_file(sweep_dir: Path, sweep_id: str) -> dict | None:
    try:
        content = json.loads((Path(sweep_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return content if content.get("sweep_id") == sweep_id else None


def _runs_of(client: MlflowClient, experiment_id: str, sweep_id: str, started: float | None) -> list:
    """Active sweep runs of ``sweep_id`` (of the multirun that started at ``started``, if given), oldest first."""
    tags = {"role": "sweep", "sweep_id": sweep_id, **({"sweep_start": start_tag(started)} if started else {})}
    return find_runs(client, experiment_id, **tags)


def _handle(client: MlflowClient, run) -> SweepRun:
    total = run.data.metrics.get(TOTAL)
    return SweepRun(client, run.info.run_id, float(run.data.tags.get("sweep_start", run.info.start_time / 1000)),
                    None if total is None else int(total))


def open_sweep_run(client: MlflowClient, experiment_id: str, sweep_id: str, sweep_dir: Path, started: float,
                   total: int | None, tags: dict[str, str], params: dict[str, str], stale_after_s: float) -> SweepRun:
    """The RUNNING sweep run of the multirun (``sweep_id``, ``started``), created here if no process has yet:
    with ``tags`` (role, sweep_id and sweep_start added), ``params`` and ``jobs_total`` (when known). Processes of
    one host take turns through a lock file; processes of several hosts that create one each keep the oldest and
    delete their own. Sweep runs whose multirun died (tags host/pid/heartbeat) are marked FAILED on the way."""
    known = _OPEN.get(sweep_id)
    if known is not None and known.started == started:
        return known
    with _host_lock(Path(sweep_dir)):
        written = _read_file(sweep_dir, sweep_id)
        if written and written.get("sweep_start") == start_tag(started):
            sweep = SweepRun(client, written["run_id"], started, total)
        else:
            mine = _runs_of(client, experiment_id, sweep_id, started)
            sweep = _handle(client, mine[0]) if mine else _create(client, experiment_id, sweep_id, started, total,
                                                                   tags, params, stale_after_s)
            (Path(sweep_dir) / RUN_FILE).write_text(json.dumps(
                {"sweep_id": sweep_id, "sweep_start": start_tag(started), "run_id": sweep.run_id}))
    _OPEN[sweep_id] = sweep
    return sweep


def _create(client: MlflowClient, experiment_id: str, sweep_id: str, started: float, total: int | None,
            tags: dict[str, str], params: dict[str, str], stale_after_s: float) -> SweepRun:
    fail_orphans(client, [r for r in find_runs(client, experiment_id, role="sweep") if r.info.status == "RUNNING"],
                 stale_after_s)
    run = client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", start_time=int(started * 1000),
                            tags={**tags, "role": "sweep", "sweep_id": sweep_id, "sweep_start": start_tag(started)})
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()],
                     metrics=[Metric(TOTAL, float(total), int(time.time() * 1000), 0)] if total is not None else [])
    oldest = _runs_of(client, experiment_id, sweep_id, started)[0]  # another host may have created one too
    if oldest.info.run_id != run_id:
        client.delete_run(run_id)
        return _handle(client, oldest)
    return SweepRun(client, run_id, started, total)


def find_sweep_run(client: MlflowClient, experiment_id: str, sweep_id: str, sweep_dir: Path | str,
                   started: float | None = None) -> SweepRun | None:
    """The sweep run a job of ``sweep_id`` writes to: the one this process opened, the one the sweep folder's file
    names, or the newest RUNNING one with its tags (of the multirun that started at ``started``, if given)."""
    known = _OPEN.get(sweep_id)
    if known is not None and started in (None, known.started):
        return known
    written = _read_file(Path(sweep_dir), sweep_id)
    if written and (started is None or written.get("sweep_start") == start_tag(started)):
        sweep = _handle(client, client.get_run(written["run_id"]))
    else:
        running = [r for r in _runs_of(client, experiment_id, sweep_id, started) if r.info.status == "RUNNING"]
        if not running:
            return None
        sweep = _handle(client, running[-1])
    _OPEN[sweep_id] = sweep
    return sweep


def opened_here(sweep_id: str) -> SweepRun | None:
    """The sweep run of ``sweep_id`` this process has opened or found, if any."""
    return _OPEN.get(sweep_id)


def count(sweep: SweepRun, event: str) -> int:
    """How many jobs logged ``event`` (distinct job numbers)."""
    return len({m.step for m in sweep.client.get_metric_history(sweep.run_id, event)})


def log_event(sweep: SweepRun, event: str, job_num: int, value: float, extra: list[Metric] = ()) -> int:
    """Log job ``job_num``'s ``event`` (with ``extra`` metrics, e.g. its ``vs_k`` points) and a heartbeat, then its
    counter; return the counter's value (this job included)."""
    now = int(time.time() * 1000)
    sweep.client.log_batch(sweep.run_id, metrics=[Metric(event, float(value), now, job_num), *extra],
                           tags=[RunTag("heartbeat", f"{time.time():.0f}")])
    n = count(sweep, event)
    sweep.client.log_batch(sweep.run_id, metrics=[Metric(COUNTERS[event], float(n), now, n)])
    return n


def log_counts(sweep: SweepRun, counts: dict[str, int]) -> None:
    """Log final counters, each with step = its value (so a smaller one never replaces a larger live count)."""
    now = int(time.time() * 1000)
    sweep.client.log_batch(sweep.run_id, metrics=[Metric(k, float(v), now, int(v)) for k, v in counts.items()])


def forget(sweep_id: str) -> None:
    """Drop this process's handle of the sweep's run (once the multirun is over)."""
    _OPEN.pop(sweep_id, None)
