"""MLflow I/O: store location, experiment, run lookup by tag, liveness of RUNNING runs.

Run roles (tag ``role``): ``train`` (one per trained model, keyed by tag ``train_hash``) and
``prune`` (one per Hydra job, keyed by tag ``job_hash``, child of its train run).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from src.store.uri import TrackingError, check_reachable, resolve_uri  # noqa: F401 - re-exported

HOST = socket.gethostname()
PROJECT_DIR = Path(__file__).resolve().parents[2]  # the checkout whose git commit each run records
# MLflow logs "Creating initial MLflow database tables..." at INFO when a SQLite store is first used:
# noise on stderr, where a failing job's one error line must stand alone
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


@contextlib.contextmanager
def _store_init_lock(uri: str):
    """For a SQLite store, hold an exclusive lock on ``<db>.init.lock`` (other processes wait).

    MLflow creates and migrates a SQLite store's tables the first time a process opens it; two processes
    doing that at once (parallel launchers on a fresh store) break the migration ("Online migration
    expected to match one row"). Once the tables exist MLflow's own busy timeout covers concurrent writes."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        yield
        return
    lock_path = Path(uri[len(prefix) - 1:] + ".init.lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # MLflow 3's UI: "Model training" view


def setup_experiment(uri: str, name: str, artifact_root: Path | None) -> str:
    """Point MLflow at ``uri`` and return the id of experiment ``name``, creating it if needed.

    Local stores put artifacts under ``artifact_root``; a server chooses its own location. The experiment is
    tagged as model training (EXPERIMENT_KIND), so MLflow 3's UI opens it on runs and charts, not GenAI traces."""
    mlflow.set_tracking_uri(uri)
    with _store_init_lock(uri):  # first use of a SQLite store creates its tables: one process at a time
        client = MlflowClient()
        for _ in range(5):
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.tags.get(EXPERIMENT_KIND[0]) is None:
                    client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
                return experiment.experiment_id
            try:
                location = artifact_root.resolve().as_uri() if artifact_root and uri.startswith("sqlite") else None
                return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
            except mlflow.exceptions.MlflowException:
                time.sleep(0.5)  # another process created it first: read it back
    raise TrackingError(f"tracking.experiment={name} could not be created in {uri}")


def git_commit(repo_dir: Path) -> tuple[str, bool]:
    """(commit sha or 'unknown', whether the work tree has uncommitted changes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD") or "unknown"
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return sha, dirty


def find_runs(client: MlflowClient, experiment_id: str, **tags: str) -> list[Run]:
    """Active runs whose tags equal ``tags``, oldest first (ties by run id)."""
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1000)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def owner_tags() -> dict[str, str]:
    """Tags that let other processes tell whether this run's process is still alive."""
    return {"host": HOST, "pid": str(os.getpid()), "heartbeat": f"{time.time():.0f}"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_orphaned(run: Run, stale_after_s: float) -> bool:
    """A RUNNING run whose process is gone: same host and dead pid, or no heartbeat for too long."""
    tags = run.data.tags
    if tags.get("host") == HOST and tags.get("pid", "").isdigit():
        if int(tags["pid"]) != os.getpid() and not _pid_alive(int(tags["pid"])):
            return True
    heartbeat = float(tags.get("heartbeat", run.info.start_time / 1000))
    return time.time() - heartbeat > stale_after_s


def fail_orphans(client: MlflowClient, runs: list[Run], stale_after_s: float) -> list[Run]:
    """Mark orphaned RUNNING runs FAILED; return the runs that are still genuinely RUNNING."""
    alive = []
    for run in runs:
        if run.info.status != "RUNNING":
            continue
        if is_orphaned(run, stale_after_s):
            client.set_tag(run.info.run_id, "failure", "process died (killed or crashed); marked by a later job")
            client.set_terminated(run.info.run_id, "FAILED")
        else:
            alive.append(run)
    return alive
