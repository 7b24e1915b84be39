"""src/training/keras_file against Keras itself: what it reads is what Keras saved, what it writes Keras loads back."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from src.engine.dense import compact_units
from src.pruning import masks as M
from src.training.keras_file import KerasFileError, read_dense_weights, write_like
from src.training.model import build_mlp, compile_model, get_weights


@pytest.fixture(scope="module", params=[False, True], ids=["no-bias", "bias"])
def saved(request, tmp_path_factory):
    model = compile_model(build_mlp([28, 28], [40, 20], 10, request.param), "adam", 1e-3)
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    model.save(path)
    return model, path


def test_reads_the_dense_weights_keras_saved(saved):
    model, path = saved
    kernels, biases = read_dense_weights(path)
    expected_kernels, expected_biases = get_weights(model)
    assert all(np.array_equal(a, b) for a, b in zip(kernels, expected_kernels, strict=True))
    assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(biases, expected_biases, strict=True))


def test_written_models_load_with_plain_keras_and_predict_the_same(saved, tmp_path):
    model, path = saved
    kernels, biases = read_dense_weights(path)
    pruned = M.apply_masks(kernels, biases, M.layer_masks(kernels, "unit", 50), "unit")
    x = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28)).astype(np.uint8)
    for name, weights in (("pruned", pruned), ("compact", compact_units(*pruned))):
        out = write_like(path, tmp_path / f"{name}.keras", *weights)
        loaded = keras.models.load_model(out)
        assert [w.shape[1] for w in weights[0]] == [layer.units for layer in loaded.layers[2:]]
        assert all(np.array_equal(a, b) for a, b in zip(read_dense_weights(out)[0], weights[0], strict=True))
        reference = keras.models.load_model(path)
        reference.set_weights([v for w, b in zip(*pruned, strict=True) for v in ((w,) if b is None else (w, b))])
        np.testing.assert_allclose(loaded.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-5)
        assert getattr(loaded, "optimizer", None) is None
        assert b"optimizer" not in zipfile.ZipFile(out).read("config.json")


def test_sparse_weights_are_stored_compressed(saved, tmp_path):
    _, path = saved
    kernels, biases = read_dense_weights(path)
    pruned = M.apply_masks(kernels, biases, M.layer_masks(kernels, "weight", 98), "weight")
    dense = write_like(path, tmp_path / "k0.keras", kernels, biases).stat().st_size
    sparse = write_like(path, tmp_path / "k98.keras", *pruned).stat().st_size
    assert sparse < dense / 3


def test_not_a_keras_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(KerasFileError, match="not a readable .keras file"):
        read_dense_weights(bad)
