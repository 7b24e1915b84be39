"""Pruning with retraining from the CLI: a small multirun of every schedule on the session's tiny model,
checked through MLflow's client, the pruned model files and a second run that skips every job."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from src.pruning import masks as M
from src.training.keras_file import read_dense_weights
from tests.conftest import TINY, cases, finished_sweep, run_cli, seed_store

pytestmark = pytest.mark.slow
SWEEP = ["-m", "prune=weight,unit", "prune.schedule=oneshot,finetune,gradual", "prune.k=90,98",
         "prune.finetune.epochs=2", "prune.gradual.frequency=2", *TINY, "eval.timing=off"]
EXTRA = ["-m", "prune.k=90", "prune.finetune.epochs=2", "lr=3e-3", *TINY, "eval.timing=off"]
# One multirun of cases: iterative with rewind (weight, unit), and the random baselines fine-tuned (seeds 0 and 1)
ITERATIVE = {f"iterative_{m}": [f"prune={m}", "prune.schedule=iterative", "prune.iterative.rounds=2",
                                "prune.iterative.rewind=true"] for m in ("weight", "unit")}
RANDOM = {f"{m}_{seed}": [f"prune={m}", "prune.schedule=finetune", f"prune.seed={seed}"]
          for m in ("random", "random_unit") for seed in (0, 1)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_client_for, model_store):
    tmp = tmp_path_factory.mktemp("retrain")
    seed_store(model_store, tmp, "tiny")
    first, client, experiment_id = finished_sweep(SWEEP, tmp, mlflow_client_for)
    runs = client.search_runs([experiment_id], "tags.role = 'prune'", max_results=1000)
    return tmp, first, client, experiment_id, runs


def _pruned_kernels(client, run, tmp):
    path = client.download_artifacts(run.info.run_id, "model/pruned.keras", str(tmp / run.info.run_id))
    return path, read_dense_weights(path)[0]


def test_one_finished_prune_run_per_job_with_the_retraining_metrics(sweep):
    _, _, client, _, runs = sweep
    assert len(runs) == 12 and all(r.info.status == "FINISHED" for r in runs)
    combos = {(r.data.params["prune.method"], r.data.params["prune.schedule"], float(r.data.params["prune.k"]))
              for r in runs}
    assert len(combos) == 12
    for run in runs:
        m, schedule = run.data.metrics, run.data.params["prune.schedule"]
        assert {"test_accuracy", "val_accuracy", "sparsity", "pruned_model_bytes"} <= set(m)
        if schedule == "oneshot":
            assert "oneshot_test_accuracy" not in m and "finetune_loss" not in m
            continue
        assert {"oneshot_test_accuracy", "finetune_seconds", "finetune_loss", "finetune_accuracy"} <= set(m)
        for name in ("finetune_loss", "finetune_accuracy", "sparsity"):
            assert [h.step for h in client.get_metric_history(run.info.run_id, name) if h.step > 0][:2] == [1, 2]
        assert m["sparsity"] == pytest.approx(float(run.data.params["prune.k"]) / 100, abs=1e-3)


def test_pruned_model_loads_with_plain_keras_and_its_zeros_are_the_logged_sparsity(sweep):
    tmp, _, client, _, runs = sweep
    for run in runs:
        path, kernels = _pruned_kernels(client, run, tmp)
        hidden = kernels[:-1]
        assert M.sparsity(hidden) == run.data.metrics["sparsity"]  # exactly
        for i, w in enumerate(kernels, start=1):
            assert M.sparsity([w]) == run.data.metrics[f"weights/layer{i}/sparsity"]
        if run.data.params["prune.schedule"] == "finetune":
            model = keras.models.load_model(path)
            assert [np.array_equal(w, k) for w, k in zip(model.get_weights(), kernels, strict=True)] == [True] * 5
            assert getattr(model, "optimizer", None) is None  # no optimizer state in the artifact


def test_finetune_keeps_the_one_shot_mask_and_gradual_ends_at_k(sweep):
    tmp, _, client, _, runs = sweep
    oneshot = {(r.data.params["prune.method"], r.data.params["prune.k"]): r for r in runs
               if r.data.params["prune.schedule"] == "oneshot"}
    for run in runs:
        if run.data.params["prune.schedule"] != "finetune":
            continue
        base = oneshot[(run.data.params["prune.method"], run.data.params["prune.k"])]
        _, tuned = _pruned_kernels(client, run, tmp)
        _, masked = _pruned_kernels(client, base, tmp)
        assert all(np.array_equal(a == 0, b == 0) for a, b in zip(tuned[:-1], masked[:-1], strict=True))
        assert run.data.metrics["oneshot_test_accuracy"] == pytest.approx(base.data.metrics["test_accuracy"])


def test_rerun_skips_every_finished_retraining_job(sweep):
    tmp, _, client, experiment_id, _ = sweep
    again = run_cli(SWEEP, tmp)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("[skip] ") == 12 and "[prune]" not in again.stdout
    assert len(client.search_runs([experiment_id], "tags.role = 'prune'", max_results=1000)) == 12


def test_iterative_with_rewind_and_the_random_baseline(tmp_path, mlflow_client_for):
    """A model trained here (the rewind needs the initial weights its train run keeps) at lr 3e-3."""
    _, client, experiment_id = finished_sweep(cases(tmp_path / "conf", EXTRA, ITERATIVE | RANDOM), tmp_path,
                                              mlflow_client_for, timeout=1200)  # 2 sweeps' limits
    runs = client.search_runs([experiment_id], "tags.role = 'prune'", max_results=1000)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert run.data.metrics["sparsity"] == pytest.approx(0.9, abs=1e-3)
        by_step = {h.step: h.value for h in client.get_metric_history(run.info.run_id, "sparsity")}
        if run.data.params["prune.schedule"] == "iterative":  # round 1 prunes to 1 - sqrt(0.1) = 68.4%
            assert round(by_step[1], 2) == 0.68 and by_step[2] == pytest.approx(0.9, abs=1e-3)
    random_masks = {(r.data.params["prune.method"], r.data.params["prune.seed"]): r for r in runs
                    if r.data.params["prune.method"].startswith("random")}
    zeros = {key: [w == 0 for w in _pruned_kernels(client, run, tmp_path)[1][:-1]] for key, run in random_masks.items()}
    for method in ("random", "random_unit"):
        assert not all(np.array_equal(a, b) for a, b in zip(zeros[(method, "0")], zeros[(method, "1")], strict=True))
    train = client.search_runs([experiment_id], "tags.role = 'train'")
    assert [a.path for a in client.list_artifacts(train[0].info.run_id, "model")] == [
        "model/initial.keras", "model/model.keras"]
