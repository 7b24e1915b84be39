"""Shared by the two graph test files (tests/test_graph_models.py: the small zoo trained and retrained, the schedules,
global scope, baselines and criteria; tests/test_graph_applications.py: the models given as trained, among them the
keras.applications backbones): the zoo's files, one CLI multirun of a store's jobs, finding its runs, and the check
every zoo run passes. Two files, so pytest-xdist runs them on both workers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import TINY, cases, finished_sweep

K = 50
COMMON = ["-m", "model=keras", f"prune.k={K}", *TINY]  # every job's settings; each case adds its own
NOTHING_TO_GROUP = ("wrappers",)  # Bidirectional and TimeDistributed: their channels are kept whole
MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist.npz"


def save_zoo(folder: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """{name: .keras file in ``folder``} of the zoo models ``names``, each built from seed 0."""
    import keras

    from tests.zoo import ZOO, save

    files = {}
    for name in names:
        keras.utils.set_random_seed(0)
        files[name] = save(ZOO[name](), folder / f"{name}.keras")
    return files


def multirun_store(tmp: Path, jobs: dict[str, list[str]], client_for) -> tuple[Path, object, list]:
    """Run ``jobs`` ({case name: its overrides beside COMMON}) as one CLI multirun on a new store in ``tmp``:
    (tmp, MLflow client, its prune runs). The time limit is the 6 sweeps' this multirun replaced (issue 26)."""
    _, client, experiment_id = finished_sweep(cases(tmp / "conf", COMMON, jobs), tmp, client_for, timeout=3600)
    return tmp, client, client.search_runs([experiment_id], "tags.role = 'prune'", max_results=1000)


def runs_of(store, name: str, method: str, schedule: str = "oneshot", scope: str = "layer",
            criterion: str = "None", layer_k: str = "None") -> list:
    """The prune runs of zoo model ``name`` with these settings (MLflow's params: "None" for null)."""
    _, _, runs = store
    return [r for r in runs if Path(r.data.params["model.path"]).stem == name
            and r.data.params["prune.method"] == method and r.data.params["prune.schedule"] == schedule
            and r.data.params["prune.scope"] == scope and r.data.params.get("prune.criterion", "None") == criterion
            and r.data.params.get("prune.layer_k", "None") == layer_k]


def tensor_sparsity(run) -> dict[str, float]:
    """``weights/<tensor>/sparsity`` by tensor name."""
    return {k[len("weights/"):-len("/sparsity")]: v for k, v in run.data.metrics.items()
            if k.startswith("weights/") and k.endswith("/sparsity")}


def family_removed(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith("groups/")}


def pruned_file(store, run, tmp_path: Path, name: str = "pruned") -> Path:
    return Path(store[1].download_artifacts(run.info.run_id, f"model/{name}.keras", str(tmp_path)))


def accuracy(model, n: int = 300) -> float:
    with np.load(MNIST) as data:
        x, y = data["x_test"][:n], data["y_test"][:n]
    return float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(1) == y))


def prune_config(method: str) -> SimpleNamespace:
    return SimpleNamespace(method=method, k=float(K), layer_k=None, prune_last=False, scope="layer", min_keep=0.01,
                           seed=0, embeddings=False, criterion=None)


def check_zoo_run(store, name: str, method: str, tmp_path: Path) -> None:
    """One FINISHED run per zoo model and method, evaluated by Keras (the reason given). weight: k% of each pruned
    tensor, the output layer whole. unit: k% of each family of dependency groups removed (what the masked model
    zeroes, the compact model does not have), ``model/compact.keras`` smaller and computing the masked model's
    logits. Both files open in plain ``keras.models.load_model`` and score the logged test accuracy."""
    import keras

    (run,) = runs_of(store, name, method)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert run.data.params["eval.engine_used"].startswith("keras (")
    per_tensor = tensor_sparsity(run)
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
        compact = keras.models.load_model(pruned_file(store, run, tmp_path / "c", "compact"))
        assert compact.count_params() == pytest.approx(m["params_kept"] * keras.models.load_model(
            pruned_file(store, run, tmp_path / "o")).count_params(), rel=1e-6)
        assert abs(accuracy(compact) - m["test_accuracy"]) <= 1 / 300
        assert run.data.params["prune.kept_groups"] or name == "gru_rnn"  # softmax outputs: no group at all
    model = keras.models.load_model(pruned_file(store, run, tmp_path))  # no prunesweep code, no safe-mode flag
    assert abs(accuracy(model) - m["test_accuracy"]) <= 1 / 300  # one image: float ties at most
