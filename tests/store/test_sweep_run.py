"""src/store/sweep_run against a real SQLite MLflow store: one run per multirun however its jobs find it, exact job
counts from the events, counters that never go back."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from src.store import sweep_run as S
from src.store.tracking import HOST, setup_experiment


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = setup_experiment(uri, "prunesweep", tmp_path / "artifacts")
    yield MlflowClient(uri), experiment_id, tmp_path / "multirun"
    S._OPEN.clear()


def open_run(client, experiment_id, sweep_dir, started, total=4):
    return S.open_sweep_run(client, experiment_id, "abc123abc123", sweep_dir, started, total, {"host": "h", "pid": "1"},
                            {"overrides": "prune.k=0,50"}, stale_after_s=900)


def test_the_first_job_opens_the_run_and_later_jobs_find_it_by_cache_file_or_tags(store):
    client, experiment_id, sweep_dir = store
    started = time.time()
    sweep = open_run(client, experiment_id, sweep_dir, started)
    run = client.get_run(sweep.run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == "sweep-abc123abc123"
    assert run.data.params == {"overrides": "prune.k=0,50"} and run.data.metrics == {"jobs_total": 4}
    assert run.data.tags["role"] == "sweep" and run.data.tags["sweep_start"] == S.start_tag(started)
    S._OPEN.clear()  # another process of this host: the file in the sweep folder names the run
    assert open_run(client, experiment_id, sweep_dir, started).run_id == sweep.run_id
    S._OPEN.clear()
    (sweep_dir / S.RUN_FILE).unlink()  # another host, no shared folder: the tags name it
    assert open_run(client, experiment_id, sweep_dir, started).run_id == sweep.run_id
    found = S.find_sweep_run(client, experiment_id, "abc123abc123", sweep_dir)
    assert (found.run_id, found.total, found.started) == (sweep.run_id, 4, pytest.approx(started))
    later = open_run(client, experiment_id, sweep_dir, started + 60)  # the same folder swept again: a new run
    assert later.run_id != sweep.run_id
    assert len(client.search_runs([experiment_id], "tags.role = 'sweep'")) == 2


def test_counts_are_the_jobs_that_logged_an_event_and_counters_never_go_back(store):
    client, experiment_id, sweep_dir = store
    sweep = open_run(client, experiment_id, sweep_dir, time.time())
    assert [S.log_event(sweep, S.STARTED, num, 0.1 * num) for num in (0, 1, 2)] == [1, 2, 3]
    assert S.log_event(sweep, S.FINISHED, 1, 2.5) == 1 and S.log_event(sweep, S.FAILED, 0, 1.0) == 1
    S.log_counts(sweep, {"jobs_started": 2})  # a writer that counted before the third start was logged
    metrics = client.get_run(sweep.run_id).data.metrics
    assert (metrics["jobs_started"], metrics["jobs_finished"], metrics["jobs_failed"]) == (3, 1, 1)
    assert S.count(sweep, S.STARTED) == 3 and metrics["jobs/seconds"] == 2.5


def test_a_sweep_run_whose_multirun_died_is_failed_by_the_next_sweep(store):
    client, experiment_id, sweep_dir = store
    dead = S.open_sweep_run(client, experiment_id, "000000000000", sweep_dir / "old", time.time(), None,
                            {"host": HOST, "pid": "999999999", "heartbeat": "0"}, {}, 900)
    open_run(client, experiment_id, sweep_dir, time.time())
    assert client.get_run(dead.run_id).info.status == "FAILED"
