"""Hydra callback: at the end of every multirun, build the sweep's report and log one sweep run.

Registered in conf/config.yaml under ``hydra.callbacks``. Single (non ``-m``) runs are untouched.
This module imports only light packages at the top, because Hydra instantiates callbacks for
every command (``--help``, single runs); MLflow, pandas and Keras are imported when a report is built.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.cli.sweep import RESULT_FILE

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

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
                  report_dir: Path, counts: dict[str, int], failure: str | None, status: str | None = None,
                  curves: list[tuple[str, float, int]] = ()) -> str:
    """Create the ``role=sweep`` run: params = :func:`sweep_params`, metrics = job counts and the ``curves``
    (name, value, step = k; src/report/table.curve_metrics), artifacts =
    ``report/*`` and multirun.yaml. Status FINISHED, or FAILED with tag ``failure`` when jobs are missing
    (``status`` overrides it, e.g. KILLED for an interrupted sweep)."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

    from src.store.tracking import HOST, PROJECT_DIR, git_commit

    commit, dirty = git_commit(PROJECT_DIR)
    tags = {"role": "sweep", "sweep_id": sweep_id, "sweep_dir": str(sweep_dir.resolve()), "host": HOST,
            "git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(dirty).lower(),
            **({"failure": failure} if failure else {})}
    run_id = client.create_run(experiment_id, tags=tags, run_name=f"sweep-{sweep_id}").info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(run_id, params=[Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in sweep_params(config).items()],
                         metrics=[Metric(k, float(v), now, 0) for k, v in counts.items()])
        curve_points = [Metric(name, value, now, step) for name, value, step in curves]
        for i in range(0, len(curve_points), 1000):  # log_batch takes at most 1000 metrics
            client.log_batch(run_id, metrics=curve_points[i:i + 1000])
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


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the multirun will launch: the basic sweeper's grid (its params, then the command line's
    sweeps, the later winning per key), an Optuna search's n_trials; None when it cannot tell."""
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    try:
        if target.endswith("BasicSweeper"):
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
            from hydra.core.override_parser.overrides_parser import OverridesParser

            params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
            parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
            return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))
        return int(sweeper.n_trials) if "n_trials" in sweeper else None
    except Exception:  # noqa: BLE001 - only the "of N" in a message is lost
        return None


def report_sweep(config: DictConfig, since: float, sweep_finished: bool, interrupted: str | None = None
                 ) -> tuple[str | None, int, int]:
    """Tag the multirun's prune runs with its sweep_id, write ``<sweep dir>/report/``, log the sweep run
    (KILLED with tag ``failure`` when ``interrupted`` names the signal that stopped it).

    The runs are those named by the jobs' result.json files, or, when no job left one, those tagged
    with the sweep id. Returns (the sweep run's id or None when there was nothing to report, jobs finished,
    jobs started)."""
    from mlflow.tracking import MlflowClient

    from src.cli.sweep import sweep_id_for
    from src.report.build import build_report
    from src.report.runs import runs_by_ids, runs_by_sweep, sweep_member_tag
    from src.report.table import curve_metrics
    from src.store.tracking import check_reachable, resolve_uri, setup_experiment

    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_id = sweep_id_for(str(sweep_dir))
    results, n_started = job_results(sweep_dir, since)
    uri = resolve_uri(config.tracking.uri, Path.cwd())
    check_reachable(uri)
    experiment_id = setup_experiment(uri, config.tracking.experiment, Path.cwd() / config.tracking.artifact_root)
    client = MlflowClient(tracking_uri=uri)
    run_ids = [r["run_id"] for r in results if r.get("run_id")]
    runs = (runs_by_ids(client, experiment_id, run_ids) if run_ids
            else runs_by_sweep(client, experiment_id, sweep_id))
    if not runs:
        print(f"[report] sweep {sweep_id}: no finished prune runs ({n_started} jobs started), no report")
        return None, len(results), n_started
    for run in runs:
        client.set_tag(run.info.run_id, "sweep_id", sweep_id)
        client.set_tag(run.info.run_id, sweep_member_tag(sweep_id), "1")
    report_dir = sweep_dir / REPORT_DIR
    build_report(client, runs, report_dir, f"sweep {sweep_id}")
    reported = len(results) if results else len(runs)
    missing = max(n_started - reported, 0)
    failure = None
    if missing or not sweep_finished:
        failure = (f"{missing} of {n_started} started jobs have no prune run"
                   + ("" if sweep_finished else f"; the multirun stopped before its end ({interrupted or 'error'})"))
    counts = {"jobs_started": n_started, "jobs_reported": reported}
    run_id = log_sweep_run(client, experiment_id, sweep_id, sweep_dir, config, report_dir, counts, failure,
                           "KILLED" if interrupted else None, curve_metrics(runs))
    print(f"[report] sweep {sweep_id}: {len(runs)} prune run{'s' if len(runs) != 1 else ''} -> {report_dir}/ and "
          f"MLflow run {run_id}"
          + (f" (incomplete: {failure})" if failure else ""))
    return run_id, reported, n_started


def _register_exit_hook(hook: Callable[[], None]) -> None:
    """Run ``hook`` when the interpreter exits, early enough that thread pools (which MLflow uses to
    download artifacts) still accept work: plain ``atexit`` hooks run after they have shut down."""
    import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours

    register = getattr(threading, "_register_atexit", atexit.register)  # private API of CPython >= 3.9
    register(hook)


class SweepReportCallback(Callback):
    """Builds ``<sweep dir>/report/`` and logs one ``role=sweep`` MLflow run when a multirun ends.

    Hydra skips ``on_multirun_end`` when a job raises or exits; the report is then built when the
    process exits, from the jobs that finished, and its sweep run is marked FAILED. A failure of the
    report itself prints one line and never changes the sweep's exit status."""

    def __init__(self) -> None:
        self._pending: DictConfig | None = None  # config of a multirun whose report is not built yet
        self._started = 0.0
        self._planned: int | None = None  # jobs the multirun will launch, when known

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from src.cli import interrupt

        self._pending, self._started = config, time.time()
        self._planned = planned_jobs(config)
        _register_exit_hook(self._at_exit)
        interrupt.on_stop(self._on_interrupt)

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
        """Build the report; return the number of jobs finished (None when it could not be built)."""
        try:
            return report_sweep(config, self._started, sweep_finished, interrupted)[1]
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the report must not fail the sweep
            print(f"[report] the sweep report could not be built ({type(e).__name__}: {e}); the jobs' runs "
                  "are unaffected; rebuild it with: python -m src.report", file=sys.stderr)
            return None
