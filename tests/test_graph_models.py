"""Any Keras 3 model through every stage, as a user runs it (issue 27), part 1 (part 2, the models given as trained:
tests/test_graph_applications.py): the small zoo of tests/zoo.py (residual adds and BatchNorm, attention, a Conv1D +
LSTM) trained and pruned by weight and by unit from the command line, retrained with the masks held (finetune,
gradual, iterative), global scope, the random baselines and the unit criteria, all as one multirun; the run's
``model/pruned.keras`` reopened in plain Keras; the layer and group listings, the search and export of such runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, run_cli
from tests.graph_runs import (
    MNIST,
    K,
    check_zoo_run,
    family_removed,
    multirun_store,
    prune_config,
    pruned_file,
    runs_of,
    save_zoo,
    tensor_sparsity,
)

pytestmark = pytest.mark.slow

RETRAINED = ("resnet", "transformer", "conv1d_lstm")  # trained here (1 epoch), then retrained with masks held
METHODS = ("weight", "unit")


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory) -> dict[str, Path]:
    return save_zoo(tmp_path_factory.mktemp("zoo"), RETRAINED)


def store_jobs(files: dict[str, Path]) -> dict[str, list[str]]:
    """The store's jobs by case name: the small zoo trained here and pruned both ways, one-shot and retrained
    (finetune); the schedules that re-rank on an LSTM; global scope (timed: the compact model against the original in
    Keras), the random baselines and the unit criteria on a residual net."""
    quick = ["tracking.save_pruned=none", "model.trained=false"]
    resnet = [f"model.path={files['resnet']}", *quick]
    jobs = {f"{name}_{method}_{schedule}": [f"prune={method}", f"model.path={files[name]}", "model.trained=false",
                                            f"prune.schedule={schedule}", "prune.finetune.epochs=1", "eval.timing=off"]
            for name in RETRAINED for method in METHODS for schedule in ("oneshot", "finetune")}
    jobs |= {f"lstm_{method}_{schedule}": [f"prune={method}", f"model.path={files['conv1d_lstm']}", *quick,
                                           f"prune.schedule={schedule}", "prune.finetune.epochs=2",
                                           "prune.iterative.rounds=2", "prune.gradual.frequency=2", "eval.timing=off"]
             for method in METHODS for schedule in ("gradual", "iterative")}
    jobs |= {f"resnet_{method}_global": [f"prune={method}", *resnet, "prune.scope=global", "prune.min_keep=0.2",
                                         "eval.timing=quick"] for method in METHODS}
    jobs |= {f"resnet_{method}": [f"prune={method}", *resnet, "eval.timing=off"]
             for method in ("random", "random_unit")}
    jobs |= {f"resnet_unit_{criterion}": ["prune=unit", f"prune.criterion={criterion}", *resnet, "eval.timing=off"]
             for criterion in ("l1", "bn_scale", "taylor")}
    return jobs


@pytest.fixture(scope="module")
def store(tmp_path_factory, zoo_files, mlflow_client_for):
    """One store filled by one CLI multirun of store_jobs: (folder, MLflow client, prune runs)."""
    return multirun_store(tmp_path_factory.mktemp("graph-store"), store_jobs(zoo_files), mlflow_client_for)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", RETRAINED)
def test_every_zoo_model_is_pruned_through_keras(store, name: str, method: str, tmp_path) -> None:
    """tests/graph_runs.check_zoo_run on the models trained here."""
    check_zoo_run(store, name, method, tmp_path)


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("name", RETRAINED)
def test_retraining_holds_every_mask(store, zoo_files, name: str, method: str, tmp_path) -> None:
    """finetune: every entry the one-shot mask removed is exactly 0.0 after retraining, and retraining changed the
    kept weights. weight: the masks per tensor (kernels, recurrent kernels, attention heads). unit: every slice of the
    removed groups in every trainable variable (kernels' outputs and inputs, biases, BatchNorm gamma and beta, gate
    columns, heads), found again from the trained model; the retrained compact model computes the same logits."""
    import keras

    from src.pruning import plan as P
    from src.training.keras_graph import load_graph

    (run,) = runs_of(store, name, method, "finetune")
    (oneshot,) = runs_of(store, name, method)
    assert run.info.status == "FINISHED" and "oneshot_test_accuracy" in run.data.metrics
    trained = store[1].download_artifacts(oneshot.data.tags["mlflow.parentRunId"], "model/model.keras",
                                          str(tmp_path / "trained"))
    before = load_graph(trained)
    if method == "unit":
        from src.records.structured_prune import GroupPlan
        from src.training.compact import variable_masks

        removed = GroupPlan(before.model, prune_config(method), None).removed()
        masks = [m.astype(bool) for m in variable_masks(before.model, removed)]
        original = [np.asarray(v) for v in before.model.trainable_weights]
        pruned = keras.models.load_model(pruned_file(store, run, tmp_path))
        after = [np.asarray(v) for v in pruned.trainable_weights]
        compact = keras.models.load_model(pruned_file(store, run, tmp_path / "c", "compact"))
        x = np.load(MNIST)["x_test"][:64]
        assert np.abs(compact.predict(x, verbose=0) - pruned.predict(x, verbose=0)).max() <= 1e-4
    else:
        masks = P.graph_mask_fn(prune_config(method), before.tensors, before.outputs)(before.arrays(), float(K))
        original, after = before.arrays(), load_graph(pruned_file(store, run, tmp_path)).arrays()
    assert sum(int((~m).sum()) for m in masks) > 0
    for a, m in zip(after, masks, strict=True):
        assert not np.any(a[~m]), "a masked entry is nonzero after retraining"
    assert any(not np.array_equal(a[m], b[m]) for a, b, m in zip(after, original, masks, strict=True) if m.any())


@pytest.mark.parametrize(("override", "says"), [
    (["prune.layer_k={nope: 50}"], "prune.layer_k names nope"),
    (["prune.layer_k=[50]"], "give k by layer name"),
    (["prune=unit", "prune.layer_k={logits: 50}"], "prune.layer_k names logits, an output layer"),  # was a no-op
])
def test_bad_names_end_before_training(zoo_files, tmp_path, mlflow_client_for, override: list[str], says: str) -> None:
    result = run_cli(["model=keras", f"model.path={zoo_files['resnet']}", "model.trained=false", *override, *TINY],
                     tmp_path)
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists() or not mlflow_client_for(tmp_path).search_runs(
        [e.experiment_id for e in mlflow_client_for(tmp_path).search_experiments()])


def test_the_layer_listing_names_what_layer_k_takes(zoo_files) -> None:
    import subprocess
    import sys

    from tests.conftest import PROJECT

    out = subprocess.run([sys.executable, "-m", "src.layers", str(zoo_files["transformer"])], cwd=PROJECT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for expected in ("| mha/query/kernel | MultiHeadAttention |", "head (", "no: an output layer", "Kept whole:"):
        assert expected in out.stdout


def test_the_group_listing_shows_what_unit_pruning_removes_together(zoo_files) -> None:
    """``python -m src.layers FILE --groups``: the residual family (the stem and the conv feeding the Add) with its
    BatchNorms and every reader of the channel, the output kept whole; nothing else on stderr."""
    import subprocess
    import sys

    from tests.conftest import PROJECT

    out = subprocess.run([sys.executable, "-m", "src.layers", str(zoo_files["resnet"]), "--groups"], cwd=PROJECT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| block1_b_conv+stem_conv |"))
    assert "| 16 |" in row and all(f"{n} (in)" in row for n in ("stem_bn", "block1_b_bn", "block2_proj_conv"))
    assert "- logits: a model output" in out.stdout


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("schedule", ["gradual", "iterative"])
def test_gradual_and_iterative_reach_k_on_every_rnn_tensor(store, schedule: str, method: str) -> None:
    """Conv1D + LSTM: the schedules re-rank during retraining and end at k. weight: 50% of the conv kernel, the LSTM
    kernel and its recurrent kernel. unit: half of the conv's filters and of the LSTM's units, so each LSTM tensor
    loses half its gate columns and half its rows (the removed filters' inputs; the removed units' own rows): 75%."""
    (run,) = runs_of(store, "conv1d_lstm", method, schedule)
    assert run.info.status == "FINISHED" and "oneshot_test_accuracy" in run.data.metrics
    sparsity = tensor_sparsity(run)
    assert set(sparsity) >= {"lstm/kernel", "lstm/recurrent_kernel"}
    if method == "weight":
        assert all(abs(v - K / 100) <= 0.07 for v in sparsity.values()), sparsity  # round(k% of 16 units or filters)
    else:
        assert family_removed(run) == {"groups/conv1d/removed": 0.5, "groups/lstm/removed": 0.5}
        assert sparsity["lstm/kernel"] == pytest.approx(0.75) and sparsity["lstm/recurrent_kernel"] == pytest.approx(
            0.75)


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_global_scope_on_a_graph_prunes_the_total_with_the_floor(store, method: str) -> None:
    """Global ranking over a residual net: k% of all its weights (weight) or of all its groups (unit), the layers or
    families unevenly pruned and none below the prune.min_keep floor of 20%. Timed: the compact model against the
    original in Keras, at batch 1 and 256."""
    (run,) = runs_of(store, "resnet", method, scope="global")
    m = run.data.metrics
    if method == "weight":  # exactly k% of all their weights
        shares = tensor_sparsity(run)
        assert m["sparsity"] == pytest.approx(K / 100, abs=0.005)
    else:
        shares = family_removed(run)
        assert m["groups_removed"] == round(K / 100 * m["groups_prunable"])
        for key in ("keras_latency_speedup", "keras_eval_speedup", "compact_batch_ms", "keras_batch_ms"):
            assert m[key] > 0
    assert max(shares.values()) - min(shares.values()) > 0.05  # not k% of each: ranked together
    assert max(shares.values()) <= 0.8 + 1e-9  # every tensor or family keeps its floor
    assert run.info.run_name.endswith("-global")


@pytest.mark.parametrize("method", ["random", "random_unit"])
def test_random_baselines_on_a_graph(store, method: str) -> None:
    (run,) = runs_of(store, "resnet", method)
    (magnitude,) = runs_of(store, "resnet", "weight" if method == "random" else "unit")
    assert run.data.metrics["sparsity"] == pytest.approx(magnitude.data.metrics["sparsity"])
    assert tensor_sparsity(run) == tensor_sparsity(magnitude)  # the same counts per tensor, other entries
    assert family_removed(run) == family_removed(magnitude)


@pytest.mark.parametrize("criterion", ["l1", "bn_scale", "taylor"])
def test_every_unit_criterion_removes_the_same_share(store, criterion: str) -> None:
    """Each criterion's job is its own run (named by it), removing the same share of each family as l2's."""
    (run,) = runs_of(store, "resnet", "unit", criterion=criterion)
    (l2,) = runs_of(store, "resnet", "unit")
    assert run.info.status == "FINISHED" and run.info.run_name.endswith(f"-{criterion}")
    assert family_removed(run) == family_removed(l2)


def test_the_search_names_a_graphs_layers(store, zoo_files) -> None:
    """search=optuna on a transformer: one k per prunable layer by name (attention included), not the output."""
    import optuna

    tmp, _, _ = store
    result = run_cli(["-m", "search=optuna", "model=keras", f"model.path={zoo_files['transformer']}",
                      "model.trained=false", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{tmp}/o.db",
                      "hydra.sweeper.study_name=g", *TINY], tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    (trial, *_) = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp}/o.db").trials
    assert set(trial.params) == {"prune", *(f"prune.layer_k.{n}" for n in ("embed", "mha", "ffn1", "ffn2"))}


def test_export_of_a_keras_run_points_at_its_pruned_model(store, tmp_path) -> None:
    """python -m src.export on a run only Keras runs: one line naming model/pruned.keras, exit 2, no file."""
    import subprocess
    import sys

    from tests.conftest import PROJECT

    tmp, _, _ = store
    (run,) = runs_of(store, "resnet", "weight")
    out = subprocess.run([sys.executable, "-m", "src.export", "--run-id", run.info.run_id, "--out",
                          str(tmp_path / "x.npz"), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"], cwd=PROJECT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "model/pruned.keras" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.npz").exists()
