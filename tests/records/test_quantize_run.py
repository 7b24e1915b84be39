"""Quantized prune runs (quantize=kmeans / linear, src/records/quantize_run) through the real CLI on the session's tiny
LeNet-5: what they log about the quantized model, the twin's retrained weights taken instead of retraining, the file
they measured exported byte for byte and reproducing the logged accuracy where TensorFlow cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT, TINY, finished_sweep, run_without_frameworks, seed_store

pytestmark = pytest.mark.slow

LENET = ["model=lenet5", "model.conv=[4,8]", "model.hidden=[32]", "train.epochs=6"]  # conftest's "lenet" model
RETRAINED = [*TINY, *LENET, "prune.layer_k={conv1: 30, conv2: 70, dense1: 90}", "prune.schedule=finetune",
             "prune.finetune.epochs=1", "eval.timing=off"]  # LENET after TINY: its 6 epochs
METRICS = ("test_accuracy", "val_accuracy", "prequant_test_accuracy", "prequant_val_accuracy", "compressed_file_bytes",
           "compression_ratio", "compression_ratio_float32", "bits_per_weight", "bits_per_index")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mlflow_client_for, model_store):
    """(store folder, client, {name: prune run}) of: the unquantized twin (``none``); kmeans at 8 and 2 bits run after
    it with other eval settings (taking its weights all the same); linear at 4 bits per channel of another pruning
    (no twin: retrained in its job)."""
    tmp = tmp_path_factory.mktemp("quantize")
    seed_store(model_store, tmp, "lenet")
    finished_sweep(RETRAINED, tmp, mlflow_client_for)
    other_eval = [a if a != "eval.repeats=2" else "eval.repeats=3" for a in RETRAINED]
    assert other_eval != RETRAINED
    finished_sweep(["-m", *other_eval, "quantize=kmeans", "quantize.bits=8,2"], tmp, mlflow_client_for)
    _, client, exp = finished_sweep([*RETRAINED, "prune.layer_k={conv2: 50}", "quantize=linear", "quantize.bits=4",
                                     "quantize.per_channel=true"], tmp, mlflow_client_for)
    found = {}
    for run in client.search_runs([exp], "tags.role = 'prune'"):
        p = run.data.params
        found["none" if p["quantize.method"] == "none" else f"{p['quantize.method']}{p['quantize.bits']}"] = run
    assert sorted(found) == ["kmeans2", "kmeans8", "linear4", "none"]
    assert len(client.search_runs([exp], "tags.role = 'train'")) == 1  # the session's model, trained once
    return tmp, client, found


def test_a_quantized_run_logs_what_it_measured_on_the_quantized_model(runs):
    tmp, client, found = runs
    assert not set(METRICS[2:]) & set(found["none"].data.metrics)  # an unquantized run logs as before
    for name in ("kmeans8", "kmeans2", "linear4"):
        run = found[name]
        m, params = run.data.metrics, run.data.params
        assert set(METRICS) <= set(m), name
        artifact = Path(client.download_artifacts(run.info.run_id, "model/compressed.npz", str(tmp / name)))
        assert m["compressed_file_bytes"] == artifact.stat().st_size
        assert m["compression_ratio"] == pytest.approx(m["dense_file_bytes"] / m["compressed_file_bytes"])
        kernel_weights = 5 * 5 * 4 + 5 * 5 * 4 * 8 + 4 * 4 * 8 * 32 + 32 * 10  # LeNet-5 of 4, 8 filters, 32 units
        assert m["compression_ratio_float32"] == pytest.approx(4 * kernel_weights / m["compressed_file_bytes"])
        assert m["compressed_file_bytes"] < m["sparse_file_bytes"]  # smaller than the float32 sparse file
        assert 0 < m["bits_per_weight"] < 32 and m["bits_per_index"] > 0  # below float32 (Huffman tables included)
        assert params["quantize.method"] in ("kmeans", "linear") and "quantize.coder" in params
    bits = {name: json.loads(found[name].data.params["quantize.bits_used"]) for name in ("kmeans8", "linear4")}
    assert bits == {"kmeans8": dict.fromkeys(["conv1", "conv2", "dense1", "dense2"], 8),
                    "linear4": dict.fromkeys(["conv1", "conv2", "dense1", "dense2"], 4)}


def test_a_quantized_job_takes_its_twins_retrained_weights_instead_of_retraining(runs):
    _, client, found = runs
    twin = found["none"]
    for name in ("kmeans8", "kmeans2"):
        run = found[name]
        assert run.data.tags["weights_from"] == twin.info.run_id
        assert run.data.metrics["prequant_test_accuracy"] == twin.data.metrics["test_accuracy"]
        assert run.data.metrics["prequant_val_accuracy"] == twin.data.metrics["val_accuracy"]
        assert "finetune_loss" not in run.data.metrics and "job_seconds/retrain" not in run.data.metrics
        assert run.data.metrics["sparsity"] == twin.data.metrics["sparsity"]
    linear = found["linear4"]  # another pruning: no twin, retrained in its own job
    assert linear.data.tags["weights_from"] == "retrained"
    assert client.get_metric_history(linear.info.run_id, "finetune_loss")


def test_fewer_bits_cost_accuracy(runs):
    _, _, found = runs
    eight, two = found["kmeans8"].data.metrics, found["kmeans2"].data.metrics
    # measured (2026-12-06): 8 bits 0.5367 = the float model's 0.5367; 2 bits (4 shared values a layer) 0.4267;
    # bits per weight 8.95 and 1.67
    assert abs(eight["test_accuracy"] - eight["prequant_test_accuracy"]) <= 0.01
    assert two["test_accuracy"] < eight["test_accuracy"] - 0.02
    assert two["compressed_file_bytes"] < eight["compressed_file_bytes"]
    assert two["bits_per_weight"] < 2.5 < eight["bits_per_weight"]  # codes of 4 values, Huffman tables included


def test_the_exported_file_is_the_one_measured_and_reproduces_its_accuracy_without_tensorflow(runs):
    tmp, client, found = runs
    for name in ("kmeans8", "linear4"):
        run, out = found[name], tmp / f"{name}.npz"
        done = subprocess.run([sys.executable, "-m", "src.export", "--run-id", run.info.run_id, "--out", str(out),
                               "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"], cwd=PROJECT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert out.stat().st_size == run.data.metrics["compressed_file_bytes"]
        logged = client.download_artifacts(run.info.run_id, "model/compressed.npz", str(tmp / f"{name}-export"))
        assert out.read_bytes() == Path(logged).read_bytes()
        printed = run_without_frameworks(f"""
            import numpy as np
            from src.engine.sparse_model import load
            data = np.load("data/mnist.npz")
            pixels, labels = data["x_test"][:300], data["y_test"][:300]  # the runs' test set (data.test_size=300)
            print(repr(float(np.mean(load({str(out)!r}).predict(pixels).argmax(axis=1) == labels))))
        """)
        assert float(printed[0]) == run.data.metrics["test_accuracy"], name
