"""Any Keras 3 model through every stage, as a user runs it (issue 27): the zoo of tests/zoo.py (graphs with
residual adds and concatenations, BatchNorm, depthwise and separable convs, attention, RNNs and wrappers, merges,
nested keras.applications backbones) pruned by weight and by unit from the command line, retrained with the masks
held, and the run's ``model/pruned.keras`` reopened in plain Keras."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import TINY, finished_sweep, run_cli

pytestmark = pytest.mark.slow

RETRAINED = ("resnet", "transformer", "conv1d_lstm")  # trained here (1 epoch), then retrained with masks held
GIVEN = ("mlp_bn", "densenet", "mobile_seq", "gru_rnn", "multi_merge", "wrappers", "conv_variants",
         "mobilenetv2", "efficientnet")  # given as trained (their initial weights): pruning needs no accuracy
ZOO_RUN = (*RETRAINED, *GIVEN)
K = 50


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory) -> dict[str, Path]:
    import keras

    from tests.zoo import ZOO, save

    folder = tmp_path_factory.mktemp("zoo")
    files = {}
    for name in ZOO_RUN:
        keras.utils.set_random_seed(0)
        files[name] = save(ZOO[name](), folder / f"{name}.keras")
    return files


@pytest.fixture(scope="module")
def store(tmp_path_factory, zoo_files, mlflow_client_for):
    """One store: the small zoo trained here and pruned both ways, one-shot and retrained (finetune); the
    applications pruned as given; the schedules that re-rank on an LSTM; global scope (timed: the compact model
    against the original in Keras), the random baselines and the unit criteria on a residual net."""
    tmp = tmp_path_factory.mktemp("graph-store")
    paths = lambda names: "model.path=" + ",".join(str(zoo_files[n]) for n in names)  # noqa: E731
    common = ["-m", "model=keras", "prune=weight,unit", f"prune.k={K}", *TINY, "eval.timing=off"]
    quick = ["tracking.save_pruned=none", "model.trained=false"]
    finished_sweep([*common, paths(RETRAINED), "model.trained=false", "prune.schedule=oneshot,finetune",
                    "prune.finetune.epochs=1"], tmp, mlflow_client_for)
    finished_sweep([*common, paths(GIVEN), "model.trained=true"], tmp, mlflow_client_for)
    finished_sweep([*common, paths(["conv1d_lstm"]), *quick, "prune.schedule=gradual,iterative",
                    "prune.finetune.epochs=2", "prune.iterative.rounds=2", "prune.gradual.frequency=2"],
                   tmp, mlflow_client_for)
    finished_sweep([*common, paths(["resnet"]), *quick, "prune.scope=global", "prune.min_keep=0.2",
                    "eval.timing=quick"], tmp, mlflow_client_for)
    finished_sweep(["-m", "model=keras", "prune=random,random_unit", f"prune.k={K}", *TINY, paths(["resnet"]),
                    *quick, "eval.timing=off"], tmp, mlflow_client_for)
    finished_sweep(["-m", "model=keras", "prune=unit", "prune.criterion=l1,bn_scale,taylor", f"prune.k={K}", *TINY,
                    paths(["resnet"]), *quick, "eval.timing=off"], tmp, mlflow_client_for)
    client = mlflow_client_for(tmp)
    runs = client.search_runs([client.get_experiment_by_name("prunesweep").experiment_id],
                              "tags.role = 'prune'", max_results=1000)
    return tmp, client, runs


def _runs(store, name: str, method: str, schedule: str = "oneshot", scope: str = "layer", criterion: str = "None"):
    _, _, runs = store
    return [r for r in runs if Path(r.data.params["model.path"]).stem == name
            and r.data.params["prune.method"] == method and r.data.params["prune.schedule"] == schedule
            and r.data.params["prune.scope"] == scope and r.data.params.get("prune.criterion", "None") == criterion]


def _tensor_sparsity(run) -> dict[str, float]:
    """``weights/<tensor>/sparsity`` by tensor name."""
    return {k[len("weights/"):-len("/sparsity")]: v for k, v in run.data.metrics.items()
            if k.startswith("weights/") and k.endswith("/sparsity")}


def _pruned_file(store, run, tmp_path: Path, name: str = "pruned") -> Path:
    return Path(store[1].download_artifacts(run.info.run_id, f"model/{name}.keras", str(tmp_path)))


def _accuracy(model, n: int = 300) -> float:
    with np.load(Path(__file__).resolve().parents[1] / "data" / "mnist.npz") as data:
        x, y = data["x_test"][:n], data["y_test"][:n]
    return float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(1) == y))


def _config(method: str) -> SimpleNamespace:
    return SimpleNamespace(method=method, k=float(K), layer_k=None, prune_last=False, scope="layer", min_keep=0.01,
                           seed=0, embeddings=False, criterion=None)


NOTHING_TO_GROUP = ("wrappers",)  # Bidirectional and TimeDistributed: their channels are kept whole


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("name", ZOO_RUN)
def test_every_zoo_model_is_pruned_through_keras(store, name: str, method: str, tmp_path) -> None:
    """One FINISHED run per zoo model and method, evaluated by Keras (the reason given). weight: k% of each pruned
    tensor, the output layer whole. unit: k% of each family of dependency groups removed (what the masked model
    zeroes, the compact model does not have), ``model/compact.keras`` smaller and computing the masked model's
    logits. Both files open in plain ``keras.models.load_model`` and score the logged test accuracy."""
    import keras

    (run,) = _runs(store, name, method)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert run.data.params["eval.engine_used"].startswith("keras (")
    per_tensor = _tensor_sparsity(run)
    assert per_tensor
    if method == "weight":  # round(k% of each tensor): a 3-weight tensor loses 2 of 3; the output layer whole
        assert not any(t.startswith(("logits/", "probabilities/")) for t in per_tensor)
        assert all(abs(s - K / 100) <= 1 / 6 + 1e-9 for s in per_tensor.values()), per_tensor
        assert np.median(list(per_tensor.values())) == pytest.approx(K / 100, abs=0.01)
        assert "output layer" in run.data.params["prune.kept_layers"]
    elif name in NOTHING_TO_GROUP:
        assert m["groups_removed"] == 0 and m["params_kept"] == 1.0
    else:  # half of each family, rounded; the masked and compact models agree
        assert 0 < m["groups_removed"] <= m["groups_prunable"] / 2 + m["group_families"] / 2
        assert m["groups_removed"] >= m["groups_prunable"] / 2 - m["group_families"] / 2
        assert m["params_kept"] < 1 and m["macs_kept"] < 1 and m["compact_max_abs_diff"] <= 1e-4
        compact = keras.models.load_model(_pruned_file(store, run, tmp_path / "c", "compact"))
        assert compact.count_params() == pytest.approx(m["params_kept"] * keras.models.load_model(
            _pruned_file(store, run, tmp_path / "o")).count_params(), rel=1e-6)
        assert abs(_accuracy(compact) - m["test_accuracy"]) <= 1 / 300
        assert run.data.params["prune.kept_groups"] or name == "gru_rnn"  # softmax outputs: no group at all
    model = keras.models.load_model(_pruned_file(store, run, tmp_path))  # no prunesweep code, no safe-mode flag
    assert abs(_accuracy(model) - m["test_accuracy"]) <= 1 / 300  # one image: float ties at most


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

    (run,) = _runs(store, name, method, "finetune")
    (oneshot,) = _runs(store, name, method)
    assert run.info.status == "FINISHED" and "oneshot_test_accuracy" in run.data.metrics
    trained = store[1].download_artifacts(oneshot.data.tags["mlflow.parentRunId"], "model/model.keras",
                                          str(tmp_path / "trained"))
    before = load_graph(trained)
    if method == "unit":
        from src.records.structured_prune import GroupPlan
        from src.training.compact import variable_masks

        removed = GroupPlan(before.model, _config(method), None).removed()
        masks = [m.astype(bool) for m in variable_masks(before.model, removed)]
        original = [np.asarray(v) for v in before.model.trainable_weights]
        pruned = keras.models.load_model(_pruned_file(store, run, tmp_path))
        after = [np.asarray(v) for v in pruned.trainable_weights]
        compact = keras.models.load_model(_pruned_file(store, run, tmp_path / "c", "compact"))
        x = np.load(Path(__file__).resolve().parents[1] / "data" / "mnist.npz")["x_test"][:64]
        assert np.abs(compact.predict(x, verbose=0) - pruned.predict(x, verbose=0)).max() <= 1e-4
    else:
        masks = P.graph_mask_fn(_config(method), before.tensors, before.outputs)(before.arrays(), float(K))
        original, after = before.arrays(), load_graph(_pruned_file(store, run, tmp_path)).arrays()
    assert sum(int((~m).sum()) for m in masks) > 0
    for a, m in zip(after, masks, strict=True):
        assert not np.any(a[~m]), "a masked entry is nonzero after retraining"
    assert any(not np.array_equal(a[m], b[m]) for a, b, m in zip(after, original, masks, strict=True) if m.any())


def test_layer_k_by_name_on_a_nested_backbone(store, zoo_files) -> None:
    """``prune.layer_k`` takes a nested model's name (all its tensors) and a tensor's own name, the longer winning."""
    tmp, client, _ = store
    result = run_cli(["model=keras", f"model.path={zoo_files['mobilenetv2']}", "model.trained=true",
                      "prune=weight", "prune.layer_k={mobilenetv2: 30, mobilenetv2/Conv1/kernel: 80}",
                      "eval.timing=off", "tracking.save_pruned=none", *TINY], tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    run = client.search_runs([client.get_experiment_by_name("prunesweep").experiment_id],
                             "tags.role = 'prune' and params.`prune.layer_k` != ''", max_results=10)[0]
    sparsity = {k: v for k, v in run.data.metrics.items() if k.endswith("/sparsity") and k.startswith("weights/")}
    assert sparsity["weights/mobilenetv2/Conv1/kernel/sparsity"] == pytest.approx(0.8, abs=0.01)
    assert sparsity["weights/mobilenetv2/block_1_expand/kernel/sparsity"] == pytest.approx(0.3, abs=0.01)
    assert float(run.data.params["prune.k_mean"]) == pytest.approx(30, abs=1.5)


@pytest.mark.parametrize(("override", "says"), [
    ("prune.layer_k={nope: 50}", "prune.layer_k names nope"),
    ("prune.layer_k=[50]", "give k by layer name"),
])
def test_bad_names_end_before_training(zoo_files, tmp_path, mlflow_client_for, override: str, says: str) -> None:
    result = run_cli(["model=keras", f"model.path={zoo_files['resnet']}", "model.trained=false", override, *TINY],
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


def _family_removed(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith("groups/")}


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
    (run,) = _runs(store, "conv1d_lstm", method, schedule)
    assert run.info.status == "FINISHED" and "oneshot_test_accuracy" in run.data.metrics
    sparsity = _tensor_sparsity(run)
    assert set(sparsity) >= {"lstm/kernel", "lstm/recurrent_kernel"}
    if method == "weight":
        assert all(abs(v - K / 100) <= 0.07 for v in sparsity.values()), sparsity  # round(k% of 16 units or filters)
    else:
        assert _family_removed(run) == {"groups/conv1d/removed": 0.5, "groups/lstm/removed": 0.5}
        assert sparsity["lstm/kernel"] == pytest.approx(0.75) and sparsity["lstm/recurrent_kernel"] == pytest.approx(
            0.75)


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_global_scope_on_a_graph_prunes_the_total_with_the_floor(store, method: str) -> None:
    """Global ranking over a residual net: k% of all its weights (weight) or of all its groups (unit), the layers or
    families unevenly pruned and none below the prune.min_keep floor of 20%. Timed: the compact model against the
    original in Keras, at batch 1 and 256."""
    (run,) = _runs(store, "resnet", method, scope="global")
    m = run.data.metrics
    if method == "weight":  # exactly k% of all their weights
        shares = _tensor_sparsity(run)
        assert m["sparsity"] == pytest.approx(K / 100, abs=0.005)
    else:
        shares = _family_removed(run)
        assert m["groups_removed"] == round(K / 100 * m["groups_prunable"])
        for key in ("keras_latency_speedup", "keras_eval_speedup", "compact_batch_ms", "keras_batch_ms"):
            assert m[key] > 0
    assert max(shares.values()) - min(shares.values()) > 0.05  # not k% of each: ranked together
    assert max(shares.values()) <= 0.8 + 1e-9  # every tensor or family keeps its floor
    assert run.info.run_name.endswith("-global")


@pytest.mark.parametrize("method", ["random", "random_unit"])
def test_random_baselines_on_a_graph(store, method: str) -> None:
    (run,) = _runs(store, "resnet", method)
    (magnitude,) = _runs(store, "resnet", "weight" if method == "random" else "unit")
    assert run.data.metrics["sparsity"] == pytest.approx(magnitude.data.metrics["sparsity"])
    assert _tensor_sparsity(run) == _tensor_sparsity(magnitude)  # the same counts per tensor, other entries
    assert _family_removed(run) == _family_removed(magnitude)


@pytest.mark.parametrize("criterion", ["l1", "bn_scale", "taylor"])
def test_every_unit_criterion_removes_the_same_share(store, criterion: str) -> None:
    """Each criterion's job is its own run (named by it), removing the same share of each family as l2's."""
    (run,) = _runs(store, "resnet", "unit", criterion=criterion)
    (l2,) = _runs(store, "resnet", "unit")
    assert run.info.status == "FINISHED" and run.info.run_name.endswith(f"-{criterion}")
    assert _family_removed(run) == _family_removed(l2)


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
    (run,) = _runs(store, "resnet", "weight")
    out = subprocess.run([sys.executable, "-m", "src.export", "--run-id", run.info.run_id, "--out",
                          str(tmp_path / "x.npz"), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"], cwd=PROJECT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "model/pruned.keras" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.npz").exists()
