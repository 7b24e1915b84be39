"""Outcomes, not only records: what pruning does to the session's tiny models, each with a margin it could fail.

Real CLI runs (tests/conftest.py: TINY data, 1,000 images, 300 test images) on the session's models: "tiny" (1 epoch,
48% test accuracy) and "trained" (6 epochs, 90%). Every bound was measured on models trained with seeds 0-2 (and
random draws 0-3) before it was set; the comment at each says what was measured and the margin left."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.engine.sparse_model import load
from src.pruning import masks as M
from src.training.data import load_mnist
from src.training.keras_file import read_weights
from tests.conftest import MODELS, PROJECT, TINY, cases, finished_sweep, seed_store

pytestmark = pytest.mark.slow
# Every job below is a case of one multirun on one store holding the session's "tiny" and "trained" models
# (tests/conftest.cases): one CLI process. Common: TINY data, no timing (none is asserted here); the epochs of TINY
# ("tiny") or of MODELS["trained"] are each case's own.
EPOCHS = "train.epochs=1"
COMMON = ["-m", *(o for o in TINY if o != EPOCHS), "eval.timing=off"]
RETRAIN = {f"retrain_{s}": ["prune=weight", f"prune.schedule={s}", "prune.k=90", "prune.finetune.epochs=2",
                            "prune.gradual.frequency=2", EPOCHS] for s in ("oneshot", "finetune", "gradual")}
AT_K0 = {f"k0_{m}": [f"prune={m}", "prune.k=0", EPOCHS] for m in ("none", "weight", "unit")}
# prune.seed is not part of a weight job's identity: the weight job runs once, then is skipped for seeds 1 and 2
RANDOM = {f"trained_{m}_{seed}": [f"prune={m}", f"prune.seed={seed}", "prune.k=90", *MODELS["trained"]]
          for m in ("weight", "random") for seed in (0, 1, 2)}
GLOBAL = {"global": ["prune=weight", "prune.scope=global", "prune.k=98", "prune.min_keep=0.01", EPOCHS]}


def prune_runs(client, experiment_id: str) -> list:
    runs = client.search_runs([experiment_id], "tags.role = 'prune'", max_results=100)
    assert runs and {r.info.status for r in runs} == {"FINISHED"}
    return runs


@pytest.fixture(scope="module")
def store(tmp_path_factory, model_store, mlflow_client_for) -> tuple[Path, object, list]:
    """(folder, client, prune runs) of RETRAIN, AT_K0, RANDOM and GLOBAL run as one multirun on a copy of the
    session store holding "tiny" and "trained"."""
    tmp = tmp_path_factory.mktemp("outcomes")
    seed_store(model_store, tmp, "tiny", "trained")
    _, client, experiment_id = finished_sweep(cases(tmp / "conf", COMMON, RETRAIN | AT_K0 | RANDOM | GLOBAL),
                                              tmp, mlflow_client_for, timeout=2400)  # 4 sweeps' limits
    return tmp, client, prune_runs(client, experiment_id)


def runs_where(store, epochs: int = 1, scope: str = "layer", k: float | None = None, method: str | None = None) -> list:
    """The store's prune runs of the model trained ``epochs`` epochs ("tiny": 1, "trained": 6) pruned with ``scope``,
    and to ``k`` by ``method`` where given."""
    return [r for r in store[2] if int(r.data.params["train.epochs"]) == epochs
            and r.data.params["prune.scope"] == scope and (k is None or float(r.data.params["prune.k"]) == k)
            and (method is None or r.data.params["prune.method"] == method)]


def pixels_and_labels(run) -> tuple[np.ndarray, np.ndarray]:
    """The run's test images (raw pixels) and labels: the first data.test_size of MNIST's test split."""
    _, _, x, y = load_mnist()[0]
    n = int(run.data.params["data.test_size"])
    return x[:n], y[:n]


def pruned_file(client, run, tmp: Path) -> str:
    return client.download_artifacts(run.info.run_id, "model/pruned.keras", str(tmp / run.info.run_id))


# ---------------------------------------------------------------- retraining


@pytest.fixture(scope="module")
def retrained(store) -> dict[str, object]:
    """{schedule: prune run} of weight pruning to k=90 on "tiny": one-shot, finetune and gradual (2 epochs)."""
    runs = runs_where(store, k=90, method="weight")
    assert len(runs) == 3
    return {r.data.params["prune.schedule"]: r for r in runs}


@pytest.mark.parametrize("schedule", ["finetune", "gradual"])
def test_retraining_beats_one_shot_at_k90_by_20_points_with_the_mask_held(retrained, schedule: str) -> None:
    """Retrained 2 epochs with the mask held, the model ends at k=90 exactly and at least 20 points above the
    one-shot prune of the same model. Measured over training seeds 0-2 and retraining seeds 0-2: one-shot
    0.14-0.17, retrained 0.56-0.68, gains 0.39-0.51 (this model, seed 0: 0.51 finetune, 0.40 gradual); margin 0.19."""
    oneshot, run = retrained["oneshot"].data.metrics, retrained[schedule].data.metrics
    assert run["sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert run["oneshot_test_accuracy"] == oneshot["test_accuracy"]
    assert run["test_accuracy"] >= oneshot["test_accuracy"] + 0.20


# ---------------------------------------------------------------- k = 0


def test_pruning_at_k0_scores_exactly_the_unpruned_accuracy(store) -> None:
    """Unit and weight pruning at k=0 remove nothing: the same test accuracy, to the image, as prune=none and as the
    trained model's own (Keras) evaluation, and the same loss to float32 rounding."""
    _, client, _ = store
    runs = runs_where(store, k=0)
    assert len(runs) == 3
    by_method = {r.data.params["prune.method"]: r.data.metrics for r in runs}
    assert set(by_method) == {"none", "weight", "unit"}
    train = client.get_run(runs[0].data.tags["mlflow.parentRunId"]).data.metrics
    for method, m in by_method.items():
        assert m["sparsity"] == 0.0, method
        assert m["test_accuracy"] == train["test_accuracy"], method
        assert m["test_loss"] == pytest.approx(train["test_loss"], abs=1e-5), method


# ---------------------------------------------------------------- the random baseline


def test_random_baseline_is_20_points_worse_than_magnitude_at_k90(store) -> None:
    """On the 6-epoch model, random pruning to k=90 (draws 0-2) scores at least 20 points below magnitude pruning to
    the same k. Measured over training seeds 0-2 and draws 0-3: magnitude 0.55-0.73, random 0.05-0.18, smallest gap
    0.37 (this model, seed 0: 0.73 against at most 0.12); margin 0.17."""
    runs = runs_where(store, epochs=6)
    magnitude = [r.data.metrics["test_accuracy"] for r in runs if r.data.params["prune.method"] == "weight"]
    draws = {r.data.params["prune.seed"]: r.data.metrics["test_accuracy"] for r in runs
             if r.data.params["prune.method"] == "random"}
    assert len(magnitude) == 1 and set(draws) == {"0", "1", "2"}
    assert all(r.data.metrics["sparsity"] == pytest.approx(0.9, abs=1e-6) for r in runs)
    assert max(draws.values()) <= magnitude[0] - 0.20, (magnitude, draws)


# ---------------------------------------------------------------- global scope, floor, export


@pytest.fixture(scope="module")
def global_run(store) -> tuple[Path, object, object, list[np.ndarray]]:
    """(folder, client, prune run, its pruned model's kernels) of weight pruning to k=98 over all hidden layers
    together (prune.scope=global) with the floor prune.min_keep=0.01, on "tiny"."""
    tmp, client, _ = store
    (run,) = runs_where(store, scope="global")
    return tmp, client, run, read_weights(pruned_file(client, run, tmp))[0]


def test_global_scope_prunes_the_stated_total_with_the_floor_held(global_run) -> None:
    """Exactly round(98% of all hidden weights) are zero; every hidden layer keeps at least ceil(1%) of its weights,
    and the floor is what some layer keeps (without it, layer 2 keeps none here); the layers are ranked together,
    not each to 98%: the least pruned keeps 24.8% here, asserted >= 10% (5x the 2% share)."""
    _, _, run, kernels = global_run
    hidden, total = kernels[:-1], sum(w.size for w in kernels[:-1])
    kept = [int(np.count_nonzero(w)) for w in hidden]
    floors = [math.ceil(0.01 * w.size) for w in hidden]
    assert total - sum(kept) == M.n_to_prune(98, total)
    assert run.data.metrics["sparsity"] == pytest.approx(M.n_to_prune(98, total) / total, abs=1e-12)
    assert all(k >= f for k, f in zip(kept, floors, strict=True)), (kept, floors)
    assert any(k == f for k, f in zip(kept, floors, strict=True)), (kept, floors)
    assert max(k / w.size for k, w in zip(kept, hidden, strict=True)) >= 0.10, kept
    assert np.count_nonzero(kernels[-1]) == kernels[-1].size  # the logits layer is not pruned


def test_a_global_run_exports_to_the_pruned_models_logits(global_run) -> None:
    """python -m src.export of the global run writes a file whose logits are the pruned Keras model's (1e-4) and whose
    accuracy on the run's test images is the one the run logged."""
    import keras

    tmp, client, run, kernels = global_run
    out = tmp / "global.npz"
    done = subprocess.run([sys.executable, "-m", "src.export", "--run-id", run.info.run_id, "--out", str(out),
                           "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"], cwd=PROJECT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    x, y = pixels_and_labels(run)
    expected = keras.models.load_model(pruned_file(client, run, tmp)).predict(x, verbose=0)
    exported = load(out)
    logits = exported.predict(x)
    assert np.abs(logits - expected).max() < 1e-4
    assert float(np.mean(logits.argmax(axis=1) == y)) == run.data.metrics["test_accuracy"]
    assert 0 < exported.n_weights <= sum(int(np.count_nonzero(w)) for w in kernels)
