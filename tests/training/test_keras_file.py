"""src/training/keras_file against Keras itself: what it reads is what Keras saved, what it writes Keras loads back."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from src.engine.dense import compact_units
from src.engine.network import WEIGHTED, forward
from src.pruning import masks as M
from src.training.keras_file import (
    KerasFileError,
    UnsupportedLayer,
    read_dense_weights,
    read_input_shape,
    read_network,
    read_weights,
    unsupported_layers,
    write_like,
)
from src.training.model import build_mlp, compile_model, get_weights
from tests.training.keras_models import MODELS, randomized


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


# ---------------------------------------------------------------- any chain of layers: LeNets and a user's model

L = keras.layers


@pytest.fixture(scope="module", params=list(MODELS))
def any_saved(request, tmp_path_factory):
    model = randomized(MODELS[request.param](), seed=len(request.param))
    path = tmp_path_factory.mktemp("models") / f"{request.param}.keras"
    model.save(path)
    shape = model.input_shape[1:]
    pixels = np.random.default_rng(3).integers(0, 256, (9, *shape)).astype(np.float32)
    return request.param, model, path, pixels


def test_read_network_computes_what_keras_does(any_saved):
    name, model, path, pixels = any_saved
    net = read_network(path)
    np.testing.assert_allclose(forward(net, pixels), model.predict(pixels, verbose=0), atol=1e-4, rtol=1e-4)
    assert read_input_shape(path) == model.input_shape[1:]
    assert unsupported_layers(path) == []
    kinds = [layer.kind for layer in net]
    if name == "lenet5-caffe":
        assert kinds == ["rescale", "conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten", "dense", "dense"]
        assert [layer.activation for layer in net if layer.kind in WEIGHTED] == ["linear", "linear", "relu", "linear"]
    if name == "user":  # Reshape and Dropout left out, the Activation / ReLU layers folded into the convs before them
        assert kinds == ["rescale", "conv2d", "maxpool2d", "conv2d", "flatten", "dense", "dense"]
        assert [layer.activation for layer in net if layer.kind in WEIGHTED] == ["relu", "relu", "relu", "softmax"]
        assert net[0].offset == -1.0 and net[3].strides == (2, 2) and net[1].padding == "same"


def test_read_weights_gives_dense_and_conv_layers_in_model_order(any_saved):
    _, model, path, _ = any_saved
    kernels, biases, names = read_weights(path)
    layers = [layer for layer in model.layers if isinstance(layer, (L.Dense, L.Conv2D))]
    assert names == [layer.name for layer in layers]
    for layer, w, b in zip(layers, kernels, biases, strict=True):
        assert np.array_equal(w, layer.kernel.numpy())
        assert (b is None) == (not layer.use_bias) and (b is None or np.array_equal(b, layer.bias.numpy()))
    dense_kernels, _ = read_dense_weights(path)
    assert [w.shape for w in dense_kernels] == [w.shape for w in kernels if w.ndim == 2]


def drop_filters(kernels: list[np.ndarray], biases: list, layer: int, dead: list[int], flattened: bool):
    """Remove output filters ``dead`` of weighted layer ``layer`` and the inputs of layer + 1 they fed (every
    spatial position's row when a flatten is between them)."""
    ks, bs = list(kernels), list(biases)
    keep = np.setdiff1d(np.arange(ks[layer].shape[-1]), dead)
    ks[layer] = ks[layer][..., keep]
    bs[layer] = None if bs[layer] is None else bs[layer][keep]
    nxt = ks[layer + 1]
    if nxt.ndim == 4:
        ks[layer + 1] = nxt[:, :, keep, :]
    else:
        channels = kernels[layer].shape[-1]
        rows = np.arange(nxt.shape[0])
        ks[layer + 1] = nxt[np.isin(rows % channels, keep) if flattened else keep]
    return ks, bs


def test_written_smaller_convs_load_with_plain_keras(any_saved, tmp_path):
    name, model, path, pixels = any_saved
    kernels, biases, _ = read_weights(path)
    kernels = [np.where(np.abs(w) < np.quantile(np.abs(w), 0.7), 0, w).astype(np.float32) for w in kernels]
    conv = [i for i, w in enumerate(kernels) if w.ndim == 4]
    for i in conv:  # filter 1 of every conv layer dead: its weights and bias zero
        kernels[i][..., 1] = 0
        if biases[i] is not None:
            biases[i][1] = 0
    out = write_like(path, tmp_path / "pruned.keras", kernels, biases)
    net = read_network(out)
    loaded = keras.models.load_model(out)
    expected = loaded.predict(pixels, verbose=0)
    np.testing.assert_allclose(forward(net, pixels), expected, atol=1e-4, rtol=1e-4)
    small = (kernels, biases)
    for i in reversed(conv):  # last conv first: layer indices of the earlier ones stay valid
        small = drop_filters(*small, i, [1], flattened=kernels[i + 1].ndim == 2)
    compact = write_like(path, tmp_path / "compact.keras", *small)
    smaller = keras.models.load_model(compact)
    assert [w.shape for w in smaller.get_weights() if w.ndim > 1] == [w.shape for w in small[0]]
    np.testing.assert_allclose(smaller.predict(pixels, verbose=0), expected, atol=1e-4, rtol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(read_weights(compact)[0], small[0], strict=True))
    if name == "user":
        assert np.abs(expected.sum(axis=1) - 1).max() < 1e-5  # softmax probabilities, as Keras gives them


def test_a_kernel_that_does_not_fit_is_refused(any_saved, tmp_path):
    _, _, path, _ = any_saved
    kernels, biases, _ = read_weights(path)
    kernels[-1] = kernels[-1][1:]  # one input too few for the logits layer
    with pytest.raises(ValueError, match="kernel"):
        write_like(path, tmp_path / "bad.keras", kernels, biases)


def test_unsupported_layers_are_named(tmp_path):
    x = inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(3, 3, name="conv")(x)
    x = L.BatchNormalization(name="norm")(x)
    x = L.AveragePooling2D(2, name="mean")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(2, activation="tanh", name="out")(x)
    path = tmp_path / "bn.keras"
    keras.Model(inputs, outputs).save(path)
    found = unsupported_layers(path)
    assert [f.split(":")[0] for f in found] == ["norm (BatchNormalization)", "mean (AveragePooling2D)",
                                                "out (Dense)"]
    assert "tanh" in found[2]
    with pytest.raises(UnsupportedLayer, match=r"layer norm \(BatchNormalization\).*2 more") as info:
        read_network(path)
    assert info.value.layers == found and "\n" not in str(info.value)
    kernels, _, names = read_weights(path)  # the weights of its Dense and Conv2D layers are still readable
    assert names == ["conv", "out"] and kernels[0].shape == (3, 3, 1, 3)


def test_a_model_that_is_not_one_chain_is_refused(tmp_path):
    inputs = keras.Input((6,))
    a, b = L.Dense(4)(inputs), L.Dense(4)(inputs)
    path = tmp_path / "branches.keras"
    keras.Model(inputs, L.Add()([a, b])).save(path)
    with pytest.raises(KerasFileError, match="one chain"):
        read_network(path)


def test_other_layers_keep_their_variables(tmp_path):
    """A layer with variables of its own (here a BatchNormalization, which read_network refuses) is copied as it is:
    write_like can still write the pruned Dense and Conv2D weights of such a model."""
    x = inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(3, 3)(x)
    x = L.BatchNormalization()(x)
    x = L.Flatten()(x)
    model = randomized(keras.Model(inputs, L.Dense(2)(x)), seed=4)
    norm = model.layers[2]
    norm.moving_variance.assign(np.abs(norm.moving_variance.numpy()) + 0.5)  # its own, non-default variables
    path = tmp_path / "bn.keras"
    model.save(path)
    kernels, biases, _ = read_weights(path)
    kernels[0][..., 0] = 0
    loaded = keras.models.load_model(write_like(path, tmp_path / "pruned.keras", kernels, biases))
    model.layers[1].kernel.assign(kernels[0])
    pixels = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    expected = model.predict(pixels, verbose=0)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), expected, atol=1e-5)
