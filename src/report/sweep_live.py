"""What each job of a multirun adds to its sweep run while the sweep runs (src/store/sweep_run), and the progress
note that ends the job's line.

- :func:`job_started` (the sweep callback, in the job's process, as Hydra starts the job): opens the sweep run when
  this is the multirun's first job, then logs the job's ``jobs/started`` event;
- :func:`job_finished` (src/job.py, as a job ends, run or skipped): its ``jobs/seconds`` event and its ``vs_k``
  points (src/report/table.curve_points, step = k); returns ``(n/N, ETA ...)`` for its ``[prune]`` / ``[skip]`` line;
- :func:`job_failed` (the sweep callback, when Hydra reports a job failed) and :func:`job_exited` (src/run.py, when a
  job ends with a one-line error and exit code 2, which Hydra does not report): its ``jobs/failed`` event.

Live updates are best effort: when the store cannot be written, a job gets no note and goes on. A job whose settings
are invalid opens nothing: it fails with its own one-line error.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from src.cli.config import validate
from src.cli.progress import progress_note
from src.cli.sweep import SweepJob
from src.report.table import curve_points
from src.store import sweep_run as S
from src.store.tracking import PROJECT_DIR, check_reachable, git_commit, resolve_uri, setup_experiment


@dataclass(frozen=True)
class Multirun:
    """What the sweep callback knows when the multirun starts; parallel launchers hand it to every job's process
    (pickled with the callback). ``started``: epoch seconds; ``total``: jobs planned (None: unknown)."""

    sweep_id: str
    sweep_dir: str
    started: float
    total: int | None
    params: dict[str, str] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # host and pid of the multirun's own process


@functools.cache
def _store(uri: str, experiment: str, artifact_root: str) -> tuple[MlflowClient, str]:
    """(client, experiment id) of a job's store, once per process."""
    check_reachable(uri)
    experiment_id = setup_experiment(uri, experiment, Path(artifact_root))  # first: it creates a new store's tables
    return MlflowClient(uri), experiment_id  # under a lock, one process at a time


def store_of(config: DictConfig) -> tuple[MlflowClient, str]:
    """The store a job of ``config`` logs to, resolved against the cwd as the job resolves it."""
    tracking = config.tracking
    return _store(resolve_uri(tracking.uri, Path.cwd()), tracking.experiment, str(Path.cwd() / tracking.artifact_root))


@functools.cache
def _provenance() -> dict[str, str]:
    """The code's git tags, read once per process (only the job that opens the sweep run uses them)."""
    commit, dirty = git_commit(PROJECT_DIR)
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(dirty).lower()}


def job_started(multirun: Multirun, config: DictConfig, job_num: int) -> None:
    """Open the sweep run if no job has yet (RUNNING, params, ``jobs_total``), then log ``jobs/started`` for job
    ``job_num`` (value: seconds after the multirun started). Nothing for a job with invalid settings."""
    try:
        validate(config)
        client, experiment_id = store_of(config)
        sweep = S.find_sweep_run(client, experiment_id, multirun.sweep_id, multirun.sweep_dir, multirun.started)
        if sweep is None:
            tags = {**multirun.owner, "heartbeat": f"{time.time():.0f}",
                    "sweep_dir": str(Path(multirun.sweep_dir).resolve()), **_provenance()}
            sweep = S.open_sweep_run(client, experiment_id, multirun.sweep_id, Path(multirun.sweep_dir),
                                     multirun.started, multirun.total, tags, multirun.params,
                                     float(config.tracking.stale_after_s))
        S.log_event(sweep, S.STARTED, job_num, time.time() - multirun.started)
    except Exception:  # noqa: BLE001 - best effort: the job itself reports what is wrong with its settings or store
        return


def job_finished(client: MlflowClient, experiment_id: str, job: SweepJob, params: dict[str, str],
                 metrics: dict[str, float], seconds: float) -> str:
    """Log job ``job``'s ``jobs/seconds`` event (``seconds``: its wall time) and its ``vs_k`` points (from the prune
    run's ``params`` and ``metrics``); return its line's progress note, or "" when there is no sweep run."""
    try:
        sweep = S.find_sweep_run(client, experiment_id, job.sweep_id, job.sweep_dir)
        if sweep is None:
            return ""
        now = int(time.time() * 1000)
        points = [Metric(name, value, now, step) for name, value, step in curve_points(params, metrics)]
        finished = S.log_event(sweep, S.FINISHED, job.num, seconds, points)
        failed = S.count(sweep, S.FAILED)
        return progress_note(finished + failed, sweep.total, time.time() - sweep.started, failed)
    except Exception:  # noqa: BLE001 - best effort: the job's own run is logged already
        return ""


def job_failed(multirun: Multirun, config: DictConfig, job_num: int, seconds: float) -> None:
    """Log job ``job_num``'s ``jobs/failed`` event (``seconds``: how long it ran)."""
    try:
        client, experiment_id = store_of(config)
        sweep = S.find_sweep_run(client, experiment_id, multirun.sweep_id, multirun.sweep_dir, multirun.started)
        if sweep is not None:
            S.log_event(sweep, S.FAILED, job_num, seconds)
    except Exception:  # noqa: BLE001 - best effort
        return


def job_exited(job: SweepJob, seconds: float) -> None:
    """Log the ``jobs/failed`` event of ``job``, which ends the process with a one-line error (src/run.py): Hydra calls
    no ``on_job_end`` for a job that exits, so :func:`job_failed` never sees it. Written to the sweep run this process
    has open, the one its jobs opened or found (none when the multirun's first job fails before opening it)."""
    try:
        sweep = S.opened_here(job.sweep_id)
        if sweep is not None:
            S.log_event(sweep, S.FAILED, job.num, seconds)
    except Exception:  # noqa: BLE001 - best effort: the job's own error line is what matters
        return
