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
    """One store: the small zoo trained here and pruned both ways, the applications pruned as given, and three
    models retrained (finetune) on the trained models the first sweep cached."""
    tmp = tmp_path_factory.mktemp("graph-store")
    paths = lambda names: "model.path=" + ",".join(str(zoo_files[n]) for n in names)  # noqa: E731
    common = ["-m", "model=keras", "prune=weight,unit", f"prune.k={K}", *TINY]
    finished_sweep([*common, paths(RETRAINED), "model.trained=false"], tmp, mlflow_client_for)
    finished_sweep([*common, paths(GIVEN), "model.trained=true", "eval.timing=off"], tmp, mlflow_client_for)
    finished_sweep([*common, paths(RETRAINED), "model.trained=false", "prune.schedule=finetune",
                    "prune.finetune.epochs=1", "eval.timing=off"], tmp, mlflow_client_for)
    finished_sweep([*common, paths(["conv1d_lstm"]), "model.trained=false", "prune.schedule=gradual,iterative",
                    "prune.finetune.epochs=2", "prune.iterative.rounds=2", "prune.gradual.frequency=2",
                    "eval.timing=off", "tracking.save_pruned=none"], tmp, mlflow_client_for)
    finished_sweep([*common, paths(["resnet"]), "model.trained=false", "prune.scope=global", "prune.min_keep=0.2",
                    "eval.timing=off", "tracking.save_pruned=none"], tmp, mlflow_client_for)
    finished_sweep(["-m", "model=keras", "prune=random,random_unit", f"prune.k={K}", *TINY, paths(["resnet"]),
                    "model.trained=false", "eval.timing=off", "tracking.save_pruned=none"], tmp, mlflow_client_for)
    client = mlflow_client_for(tmp)
    runs = client.search_runs([client.get_experiment_by_name("prunesweep").experiment_id],
                              "tags.role = 'prune'", max_results=1000)
    return tmp, client, runs


def _runs(store, name: str, method: str, schedule: str = "oneshot", scope: str = "layer"):
    _, _, runs = store
    return [r for r in runs if Path(r.data.params["model.path"]).stem == name
            and r.data.params["prune.method"] == method and r.data.params["prune.schedule"] == schedule
            and r.data.params["prune.scope"] == scope]


def _tensor_sparsity(run) -> dict[str, float]:
    """``weights/<tensor>/sparsity`` by tensor name."""
    return {k[len("weights/"):-len("/sparsity")]: v for k, v in run.data.metrics.items()
            if k.startswith("weights/") and k.endswith("/sparsity")}


def _pruned_file(store, run, tmp_path: Path) -> Path:
    return Path(store[1].download_artifacts(run.info.run_id, "model/pruned.keras", str(tmp_path)))


def _config(method: str) -> SimpleNamespace:
    return SimpleNamespace(method=method, k=float(K), layer_k=None, prune_last=False, scope="layer", min_keep=0.01,
                           seed=0, embeddings=False)


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("name", ZOO_RUN)
def test_every_zoo_model_is_pruned_through_keras(store, name: str, method: str, tmp_path) -> None:
    """One FINISHED run per zoo model and method, evaluated by Keras (the reason given), k% of each pruned tensor
    (weight) or of each layer's units (unit) gone, the output layer whole, and a pruned.keras that plain
    ``keras.models.load_model`` opens and that scores the logged test accuracy."""
    import keras

    (run,) = _runs(store, name, method)
    assert run.info.status == "FINISHED"
    assert run.data.params["eval.engine_used"].startswith("keras (")
    per_tensor = _tensor_sparsity(run)
    assert per_tensor and not any(t.startswith(("logits/", "probabilities/")) for t in per_tensor)
    if method == "weight":  # round(k% of each tensor): a 3-weight tensor loses 2 of 3
        assert all(abs(s - K / 100) <= 1 / 6 + 1e-9 for s in per_tensor.values()), per_tensor
        assert np.median(list(per_tensor.values())) == pytest.approx(K / 100, abs=0.01)
    else:  # round(k% of units) per layer; a separable conv's depthwise kernel has no units: kept
        assert all(0.25 <= s <= 1.0 for t, s in per_tensor.items() if not t.endswith("depthwise_kernel")), per_tensor
    assert "output layer" in run.data.params["prune.kept_layers"]
    model = keras.models.load_model(_pruned_file(store, run, tmp_path))  # no prunesweep code, no safe-mode flag
    with np.load(Path(__file__).resolve().parents[1] / "data" / "mnist.npz") as data:
        x, y = data["x_test"][:300], data["y_test"][:300]
    accuracy = float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(1) == y))
    assert abs(accuracy - run.data.metrics["test_accuracy"]) <= 1 / 300  # one image: float ties at most


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("name", RETRAINED)
def test_retraining_holds_every_mask(store, zoo_files, name: str, method: str, tmp_path) -> None:
    """finetune: every entry the one-shot mask removed (kernels, recurrent kernels, attention heads, biases of
    removed units) is exactly 0.0 after retraining, and retraining changed the kept weights."""
    from src.pruning import plan as P
    from src.training.keras_graph import load_graph

    (run,) = _runs(store, name, method, "finetune")
    (oneshot,) = _runs(store, name, method)
    assert run.info.status == "FINISHED" and "oneshot_test_accuracy" in run.data.metrics
    trained = store[1].download_artifacts(oneshot.data.tags["mlflow.parentRunId"], "model/model.keras",
                                          str(tmp_path / "trained"))
    before = load_graph(trained)
    masks = P.graph_mask_fn(_config(method), before.tensors, before.outputs)(before.arrays(), float(K))
    after = load_graph(_pruned_file(store, run, tmp_path)).arrays()
    removed = sum(int((~m).sum()) for m in masks)
    assert removed > 0
    for a, m, t in zip(after, masks, before.tensors, strict=True):
        assert not np.any(a[~m]), f"{t.name}: a masked entry is nonzero after retraining"
    moved = [not np.array_equal(a[m], b[m]) for a, b, m in zip(after, before.arrays(), masks, strict=True) if m.any()]
    assert any(moved)


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


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("schedule", ["gradual", "iterative"])
def test_gradual_and_iterative_reach_k_on_every_rnn_tensor(store, schedule: str, method: str) -> None:
    """Conv1D + LSTM: the schedules re-rank during retraining and end at k on the conv kernel, the LSTM kernel and
    its recurrent kernel (weight: 50% of each; unit: half the units, their gate columns in both LSTM tensors)."""
    (run,) = _runs(store, "conv1d_lstm", method, schedule)
    assert run.info.status == "FINISHED" and "oneshot_test_accuracy" in run.data.metrics
    sparsity = _tensor_sparsity(run)
    assert set(sparsity) >= {"lstm/kernel", "lstm/recurrent_kernel"}
    assert all(abs(v - K / 100) <= 0.07 for v in sparsity.values()), sparsity  # round(k% of 16 units or filters)
    assert sparsity["lstm/kernel"] == sparsity["lstm/recurrent_kernel"] or method == "weight"


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_global_scope_on_a_graph_prunes_the_total_with_the_floor(store, method: str) -> None:
    """Global ranking over a residual net's tensors: k% of all of them (by weight) or of all units, the layers
    unevenly pruned and none below the prune.min_keep floor of 20%."""
    (run,) = _runs(store, "resnet", method, scope="global")
    sparsity = _tensor_sparsity(run)
    if method == "weight":  # exactly k% of all their weights (units differ in size: unit pruning is near it)
        assert run.data.metrics["sparsity"] == pytest.approx(K / 100, abs=0.005)
    else:
        assert 0.2 <= run.data.metrics["sparsity"] <= 0.8
    assert max(sparsity.values()) - min(sparsity.values()) > 0.05  # not k% of each: ranked together
    assert max(sparsity.values()) <= 0.8 + 1e-9  # every tensor keeps its floor
    assert run.info.run_name.endswith("-global")


@pytest.mark.parametrize("method", ["random", "random_unit"])
def test_random_baselines_on_a_graph(store, method: str) -> None:
    (run,) = _runs(store, "resnet", method)
    (magnitude,) = _runs(store, "resnet", "weight" if method == "random" else "unit")
    assert run.data.metrics["sparsity"] == pytest.approx(magnitude.data.metrics["sparsity"])
    assert _tensor_sparsity(run) == _tensor_sparsity(magnitude)  # the same counts per tensor, other entries


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
