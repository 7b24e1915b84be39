"""Hydra callback: the sweep run of every multirun, live while it runs, and the sweep's report at its end.

Registered in conf/config.yaml under ``hydra.callbacks``. Single (non ``-m``) runs are untouched. The multirun's
first job opens its sweep run (RUNNING) and every job adds itself to it (src/report/sweep_live), so bad settings
that stop a multirun before its first job leave the store untouched. At the end the sweep run gets the report,
the final counts and the mean ``vs_k`` points, and ends FINISHED, FAILED (jobs missing) or KILLED (interrupted);
the last line printed gives the sweep's wall time and how many jobs ran, were skipped and failed.
This module imports only light packages at the top, because Hydra instantiates callbacks for
every command (``--help``, single runs); MLflow, pandas and Keras are imported when a report is built.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.cli.sweep import RESULT_FILE

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from src.report.sweep_live import Multirun
    from src.store.sweep_run import SweepRun

REPORT_DIR = "report"  # inside the sweep folder
CLOCK_SLACK_S = 1.0  # file times may lag time.time() slightly


def job_results(sweep_dir: Path, since: float) -> tuple[list[dict[str, Any]], int]:
    """(result.json contents in job order, number of jobs started) for the jobs of this multirun.

    A job folder belongs to this multirun when Hydra wrote its ``.hydra/overrides.yaml`` at or after
    ``since`` (epoch seconds), so leftovers of an earlier multirun into the same folder are ignored.
    A started job without result.json failed (or is still running)."""
    started = [f.parent.parent for f in sweep_dir.glob("**/.hydra/overrides.yaml")
               if f.stat().st_mtime >= since - CLOCK_SLACK_S]
    started.sort(key=lambda d: (len(str(d)), str(d)))
    results = [json.loads((d / RESULT_FILE).read_text()) for d in started if (d / RESULT_FILE).is_file()]
    return results, len(started)


def sweep_params(config: DictConfig) -> dict[str, str]:
    """The sweep's definition as MLflow params: its task overrides (one string) and the sweeper's settings."""
    params = {"overrides": " ".join(config.hydra.overrides.task)}
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
    for key, value in sweeper.items():
        if key == "params" and isinstance(value, dict):
            params.update({f"sweeper.params.{k}".replace("*", "each_layer"): str(v) for k, v in value.items()})
        elif key != "_target_":
            params[f"sweeper.{key}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return params


def _findings_section(report_md: Path) -> str:
    """The "## Findings" section of a report.md ("" when there is none)."""
    text = report_md.read_text() if report_md.is_file() else ""
    return text[text.index("## Findings"):] if "## Findings" in text else ""


def log_sweep_run(client: MlflowClient, experiment_id: str, sweep_id: str, sweep_dir: Path, config: DictConfig,
                  report_dir: Path | None, counts: dict[str, int], failure: str | None, status: str | None = None,
                  curves: list[tuple[str, float, int]] = (), live: SweepRun | None = None) -> str:
    """End the ``role=sweep`` run: the multirun's ``live`` one (src/store/sweep_run), or a new one when no job opened
    it (params = :func:`sweep_params`). Logs the job ``counts`` (step = count), the ``curves`` (name, value, step
    = k; src/report/table.curve_metrics) that the jobs' own points do not already show, and ``report/*`` and
    multirun.yaml as artifacts (no report when ``report_dir`` is None). Status FINISHED, or FAILED with tag
    ``failure`` when jobs are missing (``status`` overrides it, e.g. KILLED for an interrupted sweep)."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

    from src.store import sweep_run as S
    from src.store.tracking import HOST, PROJECT_DIR, git_commit

    if live is None:
        commit, dirty = git_commit(PROJECT_DIR)
        tags = {"role": "sweep", "sweep_id": sweep_id, "sweep_dir": str(sweep_dir.resolve()), "host": HOST,
                "git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(dirty).lower()}
        run_id = client.create_run(experiment_id, tags=tags, run_name=f"sweep-{sweep_id}").info.run_id
        client.log_batch(run_id, params=[Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in sweep_params(config).items()])
        live = S.SweepRun(client, run_id, time.time(), None)
    run_id = live.run_id
    try:
        if failure:
            client.set_tag(run_id, "failure", failure[:MAX_TAG_VAL_LENGTH])
        S.log_counts(live, counts)
        now = int(time.time() * 1000)
        curve_points = [Metric(name, value, now, step) for name, value, step in _new_points(client, run_id, curves)]
        for i in range(0, len(curve_points), 1000):  # log_batch takes at most 1000 metrics
            client.log_batch(run_id, metrics=curve_points[i:i + 1000])
        if report_dir is not None:
            client.log_artifacts(run_id, str(report_dir), REPORT_DIR)
            findings_md = _findings_section(report_dir / "report.md")
            if findings_md:  # the run's description in the MLflow UI (Overview tab)
                client.set_tag(run_id, "mlflow.note.content", findings_md[:MAX_TAG_VAL_LENGTH])
        if (sweep_dir / "multirun.yaml").is_file():
            client.log_artifact(run_id, str(sweep_dir / "multirun.yaml"))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, status or ("FAILED" if failure else "FINISHED"))
    return run_id


def _new_points(client: MlflowClient, run_id: str, curves: list[tuple[str, float, int]]
                ) -> list[tuple[str, float, int]]:
    """The ``curves`` points whose value is not already the last one the run holds at that step (the jobs logged
    their own points as they finished; with several training seeds per point, the mean is new)."""
    last: dict[tuple[str, int], float] = {}
    for name in sorted({name for name, _, _ in curves}):
        for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.timestamp):
            last[(name, m.step)] = m.value
    return [(n, v, k) for n, v, k in curves if (n, k) not in last or abs(last[(n, k)] - v) > 1e-9 * max(abs(v), 1)]


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the multirun will launch: the basic sweeper's grid (src/cli/sweep_checks.job_overrides), an
    Optuna search's n_trials; None when it cannot tell."""
    from src.cli.sweep_checks import job_overrides

    try:
        jobs = job_overrides(config)
        if jobs is not None:
            return len(jobs)
        sweeper = config.hydra.sweeper
        return int(sweeper.n_trials) if "n_trials" in sweeper else None
    except Exception:  # noqa: BLE001 - only the "of N" in a message is lost
        return None


def report_sweep(config: DictConfig, since: float, sweep_finished: bool, interrupted: str | None = None
                 ) -> tuple[str | None, list[dict[str, Any]], int]:
    """Tag the multirun's prune runs with its sweep_id, write ``<sweep dir>/report/``, and end the sweep run (opened
    by the first job, multirun start time ``since``; KILLED with tag ``failure`` when ``interrupted`` names the
    signal that stopped it).

    The runs are those named by the jobs' result.json files, or, when no job left one, those tagged
    with the sweep id. Returns (the sweep run's id or None when there was none, the jobs' results, jobs started)."""
    from mlflow.tracking import MlflowClient

    from src.cli.sweep import sweep_id_for
    from src.report.build import build_report
    from src.report.runs import runs_by_ids, runs_by_sweep, sweep_member_tag
    from src.report.table import curve_metrics
    from src.store.sweep_run import find_sweep_run, forget
    from src.store.tracking import check_reachable, resolve_uri, setup_experiment

    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_id = sweep_id_for(str(sweep_dir))
    results, n_started = job_results(sweep_dir, since)
    uri = resolve_uri(config.tracking.uri, Path.cwd())
    check_reachable(uri)
    experiment_id = setup_experiment(uri, config.tracking.experiment, Path.cwd() / config.tracking.artifact_root)
    client = MlflowClient(tracking_uri=uri)
    live = find_sweep_run(client, experiment_id, sweep_id, sweep_dir, since)
    forget(sweep_id)
    run_ids = [r["run_id"] for r in results if r.get("run_id")]
    runs = (runs_by_ids(client, experiment_id, run_ids) if run_ids
            else runs_by_sweep(client, experiment_id, sweep_id))
    reported = len(results) if results else len(runs)
    missing = max(n_started - reported, 0)
    failure = None
    if missing or not sweep_finished or not runs:
        failure = (f"{missing} of {n_started} started jobs have no prune run"
                   + ("" if sweep_finished else f"; the multirun stopped before its end ({interrupted or 'error'})"))
    skipped = sum(bool(r.get("skipped")) for r in results)
    counts = {"jobs_started": n_started, "jobs_finished": len(results), "jobs_skipped": skipped,
              "jobs_failed": n_started - len(results), "jobs_reported": reported if runs else 0}
    status = "KILLED" if interrupted else None
    if not runs:
        print(f"[report] sweep {sweep_id}: no finished prune runs ({n_started} jobs started), no report")
        run_id = (log_sweep_run(client, experiment_id, sweep_id, sweep_dir, config, None, counts, failure, status,
                                live=live) if live else None)
        return run_id, results, n_started
    for run in runs:
        client.set_tag(run.info.run_id, "sweep_id", sweep_id)
        client.set_tag(run.info.run_id, sweep_member_tag(sweep_id), "1")
    report_dir = sweep_dir / REPORT_DIR
    try:
        build_report(client, runs, report_dir, f"sweep {sweep_id}")
    except BaseException:  # the live sweep run must not stay RUNNING
        if live is not None:
            client.set_tag(live.run_id, "failure", "the sweep report could not be built")
            client.set_terminated(live.run_id, "FAILED")
        raise
    run_id = log_sweep_run(client, experiment_id, sweep_id, sweep_dir, config, report_dir, counts, failure, status,
                           curve_metrics(runs), live)
    print(f"[report] sweep {sweep_id}: {len(runs)} prune run{'s' if len(runs) != 1 else ''} -> {report_dir}/ and "
          f"MLflow run {run_id}"
          + (f" (incomplete: {failure})" if failure else ""))
    return run_id, results, n_started


def _register_exit_hook(hook: Callable[[], None]) -> None:
    """Run ``hook`` when the interpreter exits, early enough that thread pools (which MLflow uses to
    download artifacts) still accept work: plain ``atexit`` hooks run after they have shut down."""
    import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours

    register = getattr(threading, "_register_atexit", atexit.register)  # private API of CPython >= 3.9
    register(hook)


class SweepReportCallback(Callback):
    """Keeps the multirun's ``role=sweep`` MLflow run live (each job, in its own process, adds itself:
    src/report/sweep_live), and at the end builds ``<sweep dir>/report/``, ends the sweep run and prints the sweep's
    last line.

    Hydra skips ``on_multirun_end`` when a job raises or exits; the report is then built when the
    process exits, from the jobs that finished, and its sweep run is marked FAILED. A failure of the
    report itself prints one line and never changes the sweep's exit status."""

    def __init__(self) -> None:
        self._pending: DictConfig | None = None  # config of a multirun whose report is not built yet
        self._started = 0.0
        self._planned: int | None = None  # jobs the multirun will launch, when known
        self._multirun: Multirun | None = None  # handed to the jobs (parallel launchers pickle this callback)
        self._job_started = 0.0  # when this process's current job started

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from src.cli import interrupt
        from src.cli.config import ConfigError
        from src.cli.errors import EXIT_BAD_INPUT
        from src.cli.sweep import sweep_id_for
        from src.cli.sweep_checks import check_every_job
        from src.report.sweep_live import Multirun

        try:  # a bad value anywhere in the grid stops the sweep before its first job (Hydra only warns of an error
            check_every_job(config)  # raised by a callback: exit here)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(EXIT_BAD_INPUT)
        self._pending, self._started = config, time.time()
        self._planned = planned_jobs(config)
        sweep_dir = str(config.hydra.sweep.dir)
        self._multirun = Multirun(sweep_id_for(sweep_dir), sweep_dir, self._started, self._planned,
                                  sweep_params(config), {"host": socket.gethostname(), "pid": str(os.getpid())})
        _register_exit_hook(self._at_exit)
        interrupt.on_stop(self._on_interrupt)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process: open the sweep run if this is the first job, count this job as started."""
        self._job_started = time.time()
        if self._multirun is not None and config.hydra.mode == RunMode.MULTIRUN:
            from src.report.sweep_live import job_started

            job_started(self._multirun, config, int(config.hydra.job.num))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In the job's process: count a failed job (a finished one counted itself: src/job.py)."""
        if self._multirun is not None and job_return.status == JobStatus.FAILED:
            from src.report.sweep_live import job_failed

            job_failed(self._multirun, config, int(config.hydra.job.num), time.time() - self._job_started)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._pending = None
        self._report(config, sweep_finished=True)

    def _at_exit(self) -> None:
        if self._pending is not None:
            config, self._pending = self._pending, None
            if job_results(Path(str(config.hydra.sweep.dir)), self._started)[1] == 0:
                return  # the multirun stopped before any job started (e.g. a bad sweeper setting)
            self._report(config, sweep_finished=False)

    def _on_interrupt(self) -> str:
        """Build the report of the jobs that finished (src/cli/interrupt calls this on SIGINT/SIGTERM); return
        "N of M jobs finished"."""
        from src.cli import interrupt

        if self._pending is None:
            return ""
        config, self._pending = self._pending, None
        done = self._report(config, sweep_finished=False, interrupted=interrupt.received_name())
        if done is None:
            done = len(job_results(Path(str(config.hydra.sweep.dir)), self._started)[0])
        return f"{done} of {self._planned if self._planned is not None else '?'} jobs finished"

    def _report(self, config: DictConfig, sweep_finished: bool, interrupted: str | None = None) -> int | None:
        """Build the report and print the sweep's last line; return the number of jobs finished (None when the
        report could not be built)."""
        from src.cli.progress import sweep_summary
        from src.cli.sweep import sweep_id_for

        try:
            _, results, n_started = report_sweep(config, self._started, sweep_finished, interrupted)
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the report must not fail the sweep
            print(f"[report] the sweep report could not be built ({type(e).__name__}: {e}); the jobs' runs "
                  "are unaffected; rebuild it with: python -m src.report", file=sys.stderr)
            return None
        skipped = sum(bool(r.get("skipped")) for r in results)
        print(sweep_summary(sweep_id_for(str(config.hydra.sweep.dir)), time.time() - self._started,
                            len(results) - skipped, skipped, n_started - len(results), interrupted is not None),
              flush=True)
        return len(results)
