"""The report's trained-weights figure reads chain models and leaves graph models out without an error line."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import keras
import pytest

from src.report import figures
from src.report.runs import trained_models
from src.store.train_cache import MODEL_ARTIFACT


class _Store:
    """download_artifacts as MlflowClient's: the run's model file, copied to ``dst``/MODEL_ARTIFACT."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def download_artifacts(self, run_id: str, artifact: str, dst: str) -> str:
        assert artifact == MODEL_ARTIFACT
        out = Path(dst) / artifact
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.files[run_id], out)
        return str(out)


def _run(run_id: str, lr: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id),
                           data=SimpleNamespace(params={"lr": lr, "model.name": name}))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("trained")
    chain = keras.Sequential([keras.Input((12,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(3)])
    x = keras.Input((12,))
    h = keras.layers.Dense(12, activation="relu")(x)
    graph = keras.Model(x, keras.layers.Dense(3)(keras.layers.Add()([x, h])))
    files = {"chain": tmp / "chain.keras", "graph": tmp / "graph.keras", "broken": tmp / "broken.keras"}
    chain.save(files["chain"])
    graph.save(files["graph"])
    files["broken"].write_bytes(b"not a zip")
    return files


def test_graph_models_are_left_out_without_a_message(model_files, capsys):
    models = trained_models(_Store(model_files), [_run("chain", "0.001", "mlp"), _run("graph", "0.01", "resnet20")])
    assert list(models) == ["mlp, lr=0.001"]  # the model's name first: two models in the runs
    assert [k.shape for k in models["mlp, lr=0.001"]] == [(12, 6), (6, 3)]
    assert capsys.readouterr().err == ""


def test_an_unreadable_model_is_left_out_with_a_message(model_files, capsys):
    assert trained_models(_Store(model_files), [_run("broken", "0.001", "mlp")]) == {}
    assert "left out the weights of train run broken: KerasFileError" in capsys.readouterr().err


def test_no_chain_model_means_no_figure(model_files, tmp_path):
    models = trained_models(_Store(model_files), [_run("graph", "0.01", "resnet20")])
    assert figures.weight_distributions(tmp_path / "w.png", models, "t") is None
    assert not (tmp_path / "w.png").exists()
