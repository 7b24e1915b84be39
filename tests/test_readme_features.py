"""README features run as a user runs them: the real CLI (``python -m src.run``, ``python -m src.report``) in
subprocesses on one throwaway store, checked by what they leave in it.

The store (the module's fixture) holds the session's tiny model and three CLI runs:
- GRID, a multirun: weight and unit pruning, one-shot and fine-tuned, ``tracking.save_pruned=retrained``,
  ``++run_tags.campaign=outcomes``;
- USER, one job: ``data.source=keras`` (Keras's loader, its download replaced by a file placed in its cache folder),
  ``optimizer=sgd`` at lr 0.05 (a model trained here), fine-tuned, ``tracking.save_pruned=none``;
- ENGINES, a multirun, timed: ``eval.engine=dense,scatter-numba``, ``tracking.save_pruned=all``; the latest sweep.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import colors
from matplotlib import image as mpimg
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from src.cli.sweep import sweep_id_for
from src.training.data import SHIPPED_MNIST
from tests.conftest import PROJECT, TINY, run_cli, seed_store

pytestmark = pytest.mark.slow
UNTIMED = [*TINY, "eval.timing=off"]
GRID = ["-m", "prune=weight,unit", "prune.schedule=oneshot,finetune", "prune.k=90", "prune.finetune.epochs=1",
        "tracking.save_pruned=retrained", "++run_tags.campaign=outcomes", *UNTIMED]
USER = ["data.source=keras", "optimizer=sgd", "lr=0.05", "prune=weight", "prune.k=50", "prune.schedule=finetune",
        "prune.finetune.epochs=1", "tracking.save_pruned=none", *UNTIMED]
ENGINES = ["-m", "prune=unit", "prune.k=90", "eval.engine=dense,scatter-numba", "tracking.save_pruned=all", *TINY]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"  # keras/datasets/mnist.py
# Imported by the USER job's interpreter (PYTHONPATH): Keras checks its cached mnist.npz against the SHA-256 of the
# file it downloads; the file placed in its cache is the shipped copy of the same arrays, other bytes (data/README.md).
# This lets Keras's own check accept that file's own SHA-256 instead; everything else is Keras's loader as it is.
SITECUSTOMIZE = '''
import importlib.machinery, os, sys


class AcceptPlacedMnist:
    def find_spec(self, name, path=None, target=None):
        if name != "keras.src.utils.file_utils":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            validate = module.validate_file

            def validate_file(fpath, file_hash, algorithm="auto", chunk_size=65535):
                if file_hash == os.environ["KERAS_MNIST_SHA256"]:
                    file_hash, algorithm = os.environ["PLACED_MNIST_SHA256"], "sha256"
                return validate(fpath, file_hash, algorithm, chunk_size)

            module.validate_file = validate_file

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, AcceptPlacedMnist())
'''


@dataclass(frozen=True)
class Store:
    folder: Path  # the user's working folder; the store is its mlruns/, where the CLIs' default store points
    client: MlflowClient
    experiment_id: str
    grid: list[Run]  # prune runs of GRID
    user: Run  # the prune run of USER
    engines: list[Run]  # prune runs of ENGINES
    user_out: subprocess.CompletedProcess
    keras_cache: Path  # the mnist.npz placed in Keras's cache folder

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.folder}/mlruns/mlflow.db"

    def prune_runs(self) -> list[Run]:
        return self.client.search_runs([self.experiment_id], "tags.role = 'prune'", max_results=1000)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def keras_offline(tmp: Path) -> tuple[dict[str, str], Path]:
    """(environment, cached file) for a job whose Keras finds MNIST in the cache folder ``$KERAS_HOME/datasets`` and
    cannot reach the network (any download fails at once: the proxy is a closed local port)."""
    keras_home, hook = tmp / "keras-home", tmp / "keras-hook"
    (keras_home / "datasets").mkdir(parents=True)
    hook.mkdir()
    cached = shutil.copy(SHIPPED_MNIST, keras_home / "datasets" / "mnist.npz")
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    closed = "http://127.0.0.1:9"
    env = {"KERAS_HOME": str(keras_home), "PYTHONPATH": os.pathsep.join([str(hook), str(PROJECT)]),
           "KERAS_MNIST_SHA256": KERAS_MNIST_SHA256, "PLACED_MNIST_SHA256": file_sha256(Path(cached)),
           "http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
           "no_proxy": "", "NO_PROXY": ""}
    return env, Path(cached)


def _sweep_prune_runs(client: MlflowClient, experiment_id: str, sweep_dir: Path) -> list[Run]:
    query = f"tags.role = 'prune' and tags.sweep_id = '{sweep_id_for(str(sweep_dir))}'"
    return client.search_runs([experiment_id], query, max_results=1000)


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_client_for, model_store) -> Store:
    folder = tmp_path_factory.mktemp("features")
    mlruns = folder / "mlruns"
    mlruns.mkdir()
    seed_store(model_store, mlruns, "tiny")
    env, cached = keras_offline(folder)
    grid = run_cli(GRID, mlruns, sweep_dir=folder / "grid")
    assert grid.returncode == 0, grid.stderr[-3000:]
    user = run_cli(USER, mlruns, env=env)
    assert user.returncode == 0, user.stderr[-3000:]
    engines = run_cli(ENGINES, mlruns, sweep_dir=folder / "engines")
    assert engines.returncode == 0, engines.stderr[-3000:]
    client = mlflow_client_for(mlruns)
    experiment_id = client.get_experiment_by_name("prunesweep").experiment_id
    grid_runs, engine_runs = (_sweep_prune_runs(client, experiment_id, folder / d) for d in ("grid", "engines"))
    [user_run] = client.search_runs([experiment_id], "tags.role = 'prune' and params.lr = '0.05'")
    assert (len(grid_runs), len(engine_runs)) == (4, 2)
    return Store(folder, client, experiment_id, grid_runs, user_run, engine_runs, user, cached)


def model_files(client: MlflowClient, run: Run) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run.info.run_id, "model"))


def parent(store: Store, run: Run) -> Run:
    return store.client.get_run(run.data.tags["mlflow.parentRunId"])


# tracking.force


def test_force_reruns_a_finished_job_that_is_skipped_without_it(store: Store) -> None:
    """GRID's one-shot weight job, run again alone: skipped (its run is found by job_hash); with
    ``tracking.force=true`` it runs again: a second FINISHED run with the same job_hash."""
    [first] = [r for r in store.grid if r.data.params["prune.method"] == "weight"
               and r.data.params["prune.schedule"] == "oneshot"]
    job = ["prune=weight", "prune.k=90", "++run_tags.campaign=outcomes", *UNTIMED]
    mlruns = store.folder / "mlruns"

    def same_job() -> list[Run]:
        return [r for r in store.prune_runs() if r.data.tags["job_hash"] == first.data.tags["job_hash"]]

    skipped = run_cli(job, mlruns)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "[skip] " in skipped.stdout and first.info.run_id in skipped.stdout and "[prune]" not in skipped.stdout
    assert [r.info.run_id for r in same_job()] == [first.info.run_id]
    forced = run_cli([*job, "tracking.force=true"], mlruns)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "[prune] weight k=90" in forced.stdout and "[skip]" not in forced.stdout
    runs = same_job()
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    new_id = next(r.info.run_id for r in runs if r.info.run_id != first.info.run_id)
    assert f"; run {new_id}; in " in forced.stdout  # the id to export, on the job's own line
    assert first.info.run_id in {r.info.run_id for r in runs}


# tracking.save_pruned


def test_save_pruned_retrained_keeps_model_files_of_retrained_runs_only(store: Store) -> None:
    """GRID (save_pruned=retrained): fine-tuned runs hold model/pruned.keras (and compact.keras, unit) with their
    sizes logged; one-shot runs hold no model file and log no model size."""
    for run in store.grid:
        method, schedule = run.data.params["prune.method"], run.data.params["prune.schedule"]
        files, m = model_files(store.client, run), run.data.metrics
        if schedule == "oneshot":
            assert files == [] and "pruned_model_bytes" not in m, (method, schedule)
            continue
        expected = ["model/compact.keras", "model/pruned.keras"] if method == "unit" else ["model/pruned.keras"]
        assert files == expected, (method, schedule)
        sizes = {a.path: a.file_size for a in store.client.list_artifacts(run.info.run_id, "model")}
        assert m["pruned_model_bytes"] == sizes["model/pruned.keras"]


def test_save_pruned_all_keeps_model_files_of_one_shot_runs(store: Store) -> None:
    """ENGINES (save_pruned=all, the default): one-shot unit runs hold model/pruned.keras and model/compact.keras."""
    for run in store.engines:
        assert run.data.params["prune.schedule"] == "oneshot"
        assert model_files(store.client, run) == ["model/compact.keras", "model/pruned.keras"]
        assert run.data.metrics["compact_model_bytes"] < run.data.metrics["pruned_model_bytes"]


def test_save_pruned_none_keeps_no_model_file_even_of_a_retrained_run(store: Store) -> None:
    """USER (save_pruned=none) was fine-tuned (its retraining metrics are there) and holds no model file."""
    run = store.user
    assert run.data.params["prune.schedule"] == "finetune" and "finetune_seconds" in run.data.metrics
    assert model_files(store.client, run) == [] and "pruned_model_bytes" not in run.data.metrics
    assert "plots" in {a.path for a in store.client.list_artifacts(run.info.run_id)}  # its other files are there


# run_tags


def test_run_tags_tag_the_prune_runs_of_the_jobs_that_set_them(store: Store) -> None:
    """``++run_tags.campaign=outcomes`` is a tag of each of GRID's prune runs, and of no other run."""
    assert {r.data.tags.get("campaign") for r in store.grid} == {"outcomes"}
    assert all("campaign" not in r.data.tags for r in [*store.engines, store.user])
    assert all("campaign" not in parent(store, r).data.tags for r in store.grid)  # not the train run's


# eval.engine


def test_eval_engine_names_the_engine_each_job_times(store: Store) -> None:
    """ENGINES' jobs ask for dense and for scatter-numba (``auto`` picks neither for a unit-pruned net, it compacts
    it): each timed run says it used the engine asked for, for the test set and for single examples."""
    used = {}
    for run in store.engines:
        p, m = run.data.params, run.data.metrics
        assert p["eval.engine_used"] == p["eval.engine"] == p["eval.latency_engine_used"]
        assert m["sparse_eval_ms"] > 0 and m["sparse_latency_ms"] > 0 and m["sparse_max_abs_err"] < 1e-3
        used[p["eval.engine"]] = p["eval.engine_used"]
    assert used == {"dense": "dense", "scatter-numba": "scatter-numba"}


# data.source=keras and optimizer=sgd (USER)


def test_data_source_keras_loads_mnist_through_keras_from_its_cache_folder(store: Store) -> None:
    """USER's model was trained on the data Keras's loader returned (data fingerprint "keras", not the shipped file's
    SHA-256), read from the file in Keras's cache folder: nothing was downloaded (none could be), the file is intact."""
    train = parent(store, store.user)
    assert train.data.params["data.fingerprint"] == "keras"
    assert train.data.params["data.fingerprint"] != file_sha256(SHIPPED_MNIST)
    assert "Downloading data" not in store.user_out.stdout + store.user_out.stderr
    assert file_sha256(store.keras_cache) == file_sha256(SHIPPED_MNIST)
    assert sorted(p.name for p in store.keras_cache.parent.iterdir()) == ["mnist.npz"]
    assert store.user.data.params["data.source"] == "keras"  # and its prune job loaded the same source


def test_optimizer_sgd_trains_with_sgd_and_learns(store: Store, tmp_path: Path) -> None:
    """USER's train run says sgd, its saved model was compiled with Keras's SGD at lr 0.05 and momentum 0.9 (the
    optimizer config in model.keras), and one epoch took test accuracy well above chance (10%)."""
    train = parent(store, store.user)
    assert train.info.run_name == "train-lr0.05-sgd-e1-s0"
    assert (train.data.params["optimizer.name"], float(train.data.params["optimizer.momentum"])) == ("sgd", 0.9)
    path = store.client.download_artifacts(train.info.run_id, "model/model.keras", str(tmp_path))
    optimizer = json.loads(zipfile.ZipFile(path).read("config.json"))["compile_config"]["optimizer"]
    assert optimizer["class_name"] == "SGD"
    assert optimizer["config"]["momentum"] == pytest.approx(0.9)
    assert optimizer["config"]["learning_rate"] == pytest.approx(0.05)
    assert train.data.metrics["test_accuracy"] > 0.3


# python -m src.report


def report_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m src.report *args`` run from ``cwd`` (this checkout's code, whatever folder it runs in)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "src.report", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def reported_ids(folder: Path) -> set[str]:
    return set(pd.read_csv(folder / "report.csv")["run_id"])


def test_report_run_ids_reports_exactly_the_runs_named(store: Store) -> None:
    """``--run-ids a,b`` reports those two runs, one from each sweep: not a whole sweep, not the latest one."""
    chosen = [store.grid[0].info.run_id, store.engines[0].info.run_id]
    out = store.folder / "by-ids"
    done = report_cli(["--run-ids", ",".join(chosen), "--tracking-uri", store.uri, "--out", str(out)], store.folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert reported_ids(out) == set(chosen)
    assert "2 selected runs: 2 prune runs" in done.stdout


def test_report_filter_reports_the_finished_prune_runs_it_matches(store: Store) -> None:
    """``--filter "params.lr = '0.001'"`` (the README's example) reports every prune run at lr 0.001, of any sweep or
    none, and not USER's run at lr 0.05."""
    prune = store.prune_runs()
    at_lr = {r.info.run_id for r in prune if r.data.params["lr"] == "0.001" and r.info.status == "FINISHED"}
    assert store.user.info.run_id not in at_lr and {r.info.run_id for r in [*store.grid, *store.engines]} <= at_lr
    out = store.folder / "by-filter"
    done = report_cli(["--filter", "params.lr = '0.001'", "--tracking-uri", store.uri, "--out", str(out)],
                      store.folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert reported_ids(out) == at_lr
    assert set(pd.read_csv(out / "report.csv")["lr"]) == {0.001}


def test_report_without_a_selection_reports_the_latest_sweep_into_reports(store: Store) -> None:
    """Plain ``python -m src.report`` in the folder that holds ``mlruns/`` (the default store) writes the latest
    sweep's report (ENGINES'), and only it, to ``reports/sweep-<id>/`` there."""
    done = report_cli([], store.folder)
    assert done.returncode == 0, done.stderr[-3000:]
    latest = sweep_id_for(str(store.folder / "engines"))
    assert [p.name for p in (store.folder / "reports").iterdir()] == [f"sweep-{latest}"]
    assert reported_ids(store.folder / "reports" / f"sweep-{latest}") == {r.info.run_id for r in store.engines}


def _pixels_of(image: np.ndarray, colour: str) -> int:
    """Pixels of ``image`` (RGB(A) floats in 0..1) within 0.1 of ``colour`` in every channel."""
    return int(np.all(np.abs(image[..., :3] - colors.to_rgb(colour)) < 0.1, axis=-1).sum())


def test_frontier_png_is_a_figure_of_both_schedules(store: Store) -> None:
    """GRID (one-shot and fine-tuned) ends with ``report/frontier.png``, also the sweep run's artifact: a PNG that
    decodes to a drawn figure, with something in each of its palette's first two colours (one per schedule)."""
    path = store.folder / "grid" / "report" / "frontier.png"
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 500
    assert (np.abs(image[..., :3] - 1).max(axis=-1) > 0.1).mean() > 0.02  # not a blank canvas
    for colour in ("tab:blue", "tab:orange"):  # plt.cm.tab10's first two colours: schedule=finetune, =oneshot
        assert _pixels_of(image, colour) > 20, colour
    [sweep] = store.client.search_runs(
        [store.experiment_id], f"tags.role = 'sweep' and tags.sweep_id = '{sweep_id_for(str(store.folder / 'grid'))}'")
    logged = {a.path: a.file_size for a in store.client.list_artifacts(sweep.info.run_id, "report")}
    assert logged["report/frontier.png"] == path.stat().st_size
