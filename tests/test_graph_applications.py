"""Any Keras 3 model through every stage, as a user runs it (issue 27), part 2 (part 1: tests/test_graph_models.py):
the zoo models given as trained (their initial weights: pruning needs no accuracy), among them BatchNorm MLPs,
DenseNet-style concatenations, depthwise and separable convs, RNNs and wrappers, merges and the nested
keras.applications backbones, pruned by weight and by unit from the command line (one multirun), and their
``model/pruned.keras`` reopened in plain Keras."""

from __future__ import annotations

import pytest

from tests.graph_runs import check_zoo_run, multirun_store, runs_of, save_zoo

pytestmark = pytest.mark.slow

GIVEN = ("mlp_bn", "densenet", "mobile_seq", "gru_rnn", "multi_merge", "wrappers", "conv_variants",
         "mobilenetv2", "efficientnet")
LAYER_K = "{mobilenetv2: 30, mobilenetv2/Conv1/kernel: 80}"


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_client_for):
    """One store, one multirun: every GIVEN model pruned by weight and by unit (as given, eval.timing=off), and a
    weight job on MobileNetV2 with ``prune.layer_k`` by a nested model's name and a tensor's own name."""
    tmp = tmp_path_factory.mktemp("graph-applications")
    files = save_zoo(tmp / "zoo", GIVEN)
    jobs = {f"{name}_{method}": [f"prune={method}", f"model.path={files[name]}", "model.trained=true",
                                 "eval.timing=off"] for name in GIVEN for method in ("weight", "unit")}
    jobs["mobilenetv2_layer_k"] = ["prune=weight", f"model.path={files['mobilenetv2']}", "model.trained=true",
                                   f"prune.layer_k={LAYER_K}", "eval.timing=off", "tracking.save_pruned=none"]
    return multirun_store(tmp, jobs, mlflow_client_for)


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("name", GIVEN)
def test_every_zoo_model_is_pruned_through_keras(store, name: str, method: str, tmp_path) -> None:
    """tests/graph_runs.check_zoo_run on the models given as trained."""
    check_zoo_run(store, name, method, tmp_path)


def test_layer_k_by_name_on_a_nested_backbone(store) -> None:
    """``prune.layer_k`` takes a nested model's name (all its tensors) and a tensor's own name, the longer winning."""
    (run,) = runs_of(store, "mobilenetv2", "weight", layer_k='{"mobilenetv2": 30.0, "mobilenetv2/Conv1/kernel": 80.0}')
    sparsity = {k: v for k, v in run.data.metrics.items() if k.endswith("/sparsity") and k.startswith("weights/")}
    assert sparsity["weights/mobilenetv2/Conv1/kernel/sparsity"] == pytest.approx(0.8, abs=0.01)
    assert sparsity["weights/mobilenetv2/block_1_expand/kernel/sparsity"] == pytest.approx(0.3, abs=0.01)
    assert float(run.data.params["prune.k_mean"]) == pytest.approx(30, abs=1.5)
