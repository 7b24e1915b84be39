"""A tiny real multirun, checked through MLflow's own client against the README's contract."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from src.pruning import masks as M
from src.training.data import load_mnist
from src.training.model import get_weights, set_weights
from tests.conftest import TINY, finished_sweep, run_cli

pytestmark = pytest.mark.slow
SWEEP = ["-m", "lr=1e-3,3e-3", "prune=weight,unit", "prune.k=0,50,90", *TINY]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_client_for):
    tmp = tmp_path_factory.mktemp("sweep")
    first, client, experiment_id = finished_sweep(SWEEP, tmp, mlflow_client_for)
    return tmp, first, client, client.search_runs([experiment_id], max_results=1000)


def _role(runs, role):
    return [r for r in runs if r.data.tags.get("role") == role]


def test_one_train_run_per_training_config_and_one_prune_run_per_job(sweep):
    _, _, _, runs = sweep
    train, prune = _role(runs, "train"), _role(runs, "prune")
    assert len(train) == 2 and len(prune) == 12
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(float(r.data.params["lr"]) for r in train) == [1e-3, 3e-3]
    assert sorted(r.info.run_name for r in train) == ["train-lr0.001-adam-e1-s0", "train-lr0.003-adam-e1-s0"]


def test_prune_runs_are_children_of_the_train_run_with_their_lr(sweep):
    _, _, _, runs = sweep
    train = {r.info.run_id: r for r in _role(runs, "train")}
    for run in _role(runs, "prune"):
        parent = train[run.data.tags["mlflow.parentRunId"]]
        assert parent.data.params["lr"] == run.data.params["lr"]
        assert run.data.tags["train_hash"] == parent.data.tags["train_hash"]


def test_prune_run_metrics_params_and_provenance(sweep):
    _, _, client, runs = sweep
    for run in _role(runs, "prune"):
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        k = float(p["prune.k"])
        assert p["prune.method"] in ("weight", "unit") and "model.hidden" in p and "train.seed" in p
        assert m["sparsity"] == pytest.approx(k / 100, abs=1e-6)
        for layer in range(1, 5):
            assert m[f"weights/layer{layer}/sparsity"] == pytest.approx(k / 100, abs=1e-3)
            assert {f"weights/layer{layer}/{s}" for s in ("std", "excess_kurtosis", "frac_near_zero")} <= set(m)
        assert m["weights/layer5/sparsity"] < 0.01  # logits layer untouched
        assert m["k_percent"] == k and m["sparsity_percent"] == pytest.approx(100 * m["sparsity"])
        for key in ("test_accuracy", "test_loss", "dense_eval_ms", "sparse_eval_ms", "dense_latency_ms",
                    "sparse_latency_ms", "eval_speedup", "sparse_max_abs_err"):
            assert np.isfinite(m[key]), key
        assert m["sparse_max_abs_err"] <= 1e-3
        assert len(t["git_commit"]) == 40 and "prune.k=" in t["hydra_overrides"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.yaml" in artifacts and "plots" in artifacts
        pngs = client.list_artifacts(run.info.run_id, "plots")
        assert pngs and all(a.file_size > 1000 for a in pngs)


def test_train_run_logs_history_test_accuracy_and_model(sweep):
    _, _, client, runs = sweep
    for run in _role(runs, "train"):
        assert [h.step for h in client.get_metric_history(run.info.run_id, "train_loss")] == [1]
        expected = {"train_accuracy", "val_accuracy", "test_accuracy", "weights/layer1/excess_kurtosis"}
        assert expected <= set(run.data.metrics)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == [
            "model/initial.keras", "model/model.keras"]


def test_reported_accuracy_is_the_saved_model_with_masks_applied(sweep):
    tmp, _, client, runs = sweep
    (x_train, y_train, x_test, y_test), _ = load_mnist()
    x_test, y_test = x_test[:300], y_test[:300]
    models = {}
    for run in _role(runs, "prune"):
        parent = run.data.tags["mlflow.parentRunId"]
        if parent not in models:
            path = client.download_artifacts(parent, "model/model.keras", str(tmp / parent))
            models[parent] = keras.models.load_model(path)
        model = models[parent]
        kernels, biases = get_weights(model)
        method, k = run.data.params["prune.method"], float(run.data.params["prune.k"])
        pruned, pruned_b = M.apply_masks(kernels, biases, M.layer_masks(kernels, method, k), method)
        set_weights(model, pruned, pruned_b)
        accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
        set_weights(model, kernels, biases)
        assert run.data.metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_unit_pruned_model_is_logged_compacted_and_shrinks_with_k(sweep):
    tmp, _, client, runs = sweep
    sizes = {}
    for run in _role(runs, "prune"):
        if run.data.params["prune.method"] == "unit" and run.data.params["lr"] == "0.001":
            sizes[float(run.data.params["prune.k"])] = run.data.metrics["compact_model_bytes"]
    assert sizes[0] > sizes[50] > sizes[90]


def test_summary_line_per_job_and_epoch_progress(sweep):
    _, first, _, _ = sweep
    assert first.stdout.count("[prune] ") == 12
    assert len(re.findall(r"^\d+/\d+ - .*val_accuracy", first.stdout, re.M)) == 2  # Keras's epoch line, per model


def test_second_sweep_trains_nothing_and_skips_finished_jobs(sweep, mlflow_client_for):
    tmp, _, client, _ = sweep
    again = run_cli(SWEEP, tmp)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("[skip] ") == 12 and "val_accuracy:" not in again.stdout
    runs = client.search_runs([client.get_experiment_by_name("prunesweep").experiment_id])
    assert len(_role(runs, "train")) == 2 and len(_role(runs, "prune")) == 12

