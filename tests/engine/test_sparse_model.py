"""The sparse file format's two versions: version 1 files (written before version 2 existed) still load, MLPs are
still written as version 1, any other net as version 2; round trips against Keras itself for LeNet-300-100,
LeNet-5 and a user's model; a loader process that cannot import TensorFlow; damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from src.engine import sparse_model
from src.engine.network import Layer, forward, kernels_of, with_weights
from src.engine.sparse_model import FORMAT, FORMAT_V2, SparseModelError, load, network_to_bytes, save_network
from tests.conftest import run_without_frameworks

DATA = Path(__file__).parent / "data"


def test_a_version_1_file_written_before_version_2_still_loads_and_predicts() -> None:
    """tests/engine/data/sparse_mlp_v1.npz: to_bytes of a 36-12-8-4 MLP (weight k=80, biases) at commit 4b1a36d."""
    model = load(DATA / "sparse_mlp_v1.npz")
    expected = np.load(DATA / "sparse_mlp_v1_expected.npz")
    pixels, logits = expected["pixels"], expected["logits"]
    assert [w.shape for w in model.kernels] == [(36, 11), (11, 8), (8, 4)]  # one dead unit was compacted away
    assert model.input_scale == np.float32(1 / 255) and model.input_shape is None
    assert np.abs(model.predict(pixels) - logits).max() < 1e-5
    assert np.abs(model.predict(pixels[:1]) - logits[:1]).max() < 1e-5
    assert np.abs(model.predict(pixels.reshape(9, -1)) - logits).max() < 1e-5


def lenet5_net(seed: int = 0) -> list[Layer]:
    rng = np.random.default_rng(seed)

    def w(*shape: int, keep: float) -> np.ndarray:
        a = (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype(np.float32)
        return np.where(np.abs(a) >= np.quantile(np.abs(a), 1 - keep), a, 0).astype(np.float32)

    return [Layer("rescale", scale=1 / 255), Layer("conv2d", "conv1", w(5, 5, 1, 20, keep=0.66), None, "relu"),
            Layer("maxpool2d", pool_size=(2, 2), strides=(2, 2)),
            Layer("conv2d", "conv2", w(5, 5, 20, 50, keep=0.12), np.full(50, 0.01, np.float32), "relu"),
            Layer("maxpool2d", pool_size=(2, 2), strides=(2, 2)), Layer("flatten"),
            Layer("dense", "fc1", w(800, 500, keep=0.08), np.full(500, 0.01, np.float32), "relu"),
            Layer("dense", "fc2", w(500, 10, keep=0.19), np.zeros(10, np.float32))]


def test_an_mlp_is_written_as_version_1_and_a_conv_net_as_version_2(tmp_path) -> None:
    rng = np.random.default_rng(1)
    mlp = [Layer("rescale", scale=1 / 255), Layer("flatten"),
           Layer("dense", "a", rng.standard_normal((16, 5)).astype(np.float32), None, "relu"),
           Layer("dense", "b", rng.standard_normal((5, 3)).astype(np.float32), None)]
    with np.load(save_network(tmp_path / "mlp.npz", mlp, (4, 4))) as f:
        assert str(f["format"]) == FORMAT
    path = save_network(tmp_path / "lenet5.npz", lenet5_net(), (28, 28))
    with np.load(path) as f:
        assert str(f["format"]) == FORMAT_V2 and list(f["input_shape"]) == [28, 28]
        layers = json.loads(str(f["layers"]))
        assert [d["kind"] for d in layers] == ["rescale", "conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten",
                                               "dense", "dense"]
        assert "kernel_1" in f.files and "values_3" in f.files  # conv1 at 66%: dense floats are smaller
        assert f["indices_6"].dtype == np.uint16 and "bias_1" not in f.files
    model = load(path)
    x = np.random.default_rng(2).integers(0, 256, (40, 28, 28)).astype(np.uint8)
    expected = forward(lenet5_net(), x)
    for batch in (x, x[:3], x[:, :, :, None]):
        assert np.abs(model.predict(batch) - expected[:len(batch)]).max() < 1e-4
    kept = sum(int(np.count_nonzero(w)) for w in kernels_of(lenet5_net())[0])
    assert 0.8 * kept < model.n_weights < kept  # fc1 units that feed nothing (fc2 keeps 19%) are left out


def test_dead_filters_are_not_stored(tmp_path) -> None:
    net = lenet5_net()
    ks, bs = kernels_of(net)
    ks = [k.copy() for k in ks]
    ks[0][..., [2, 5]] = 0  # two conv1 filters without weights (and conv1 has no bias): dead
    model = load(save_network(tmp_path / "m.npz", with_weights(net, ks, bs), (28, 28)))
    assert [w.shape for w in model.kernels][:2] == [(5, 5, 1, 18), (5, 5, 18, 50)]
    x = np.random.default_rng(3).integers(0, 256, (9, 28, 28)).astype(np.uint8)
    assert np.abs(model.predict(x) - forward(with_weights(net, ks, bs), x)).max() < 1e-4


def test_inputs_of_the_wrong_shape_are_refused(tmp_path) -> None:
    model = load(save_network(tmp_path / "m.npz", lenet5_net(), (28, 28)))
    with pytest.raises(ValueError, match=r"x\[None\]"):
        model.predict(np.zeros((28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"the model takes \(28, 28\)"):
        model.predict(np.zeros((2, 28, 27), np.uint8))
    assert model.predict(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)


def test_damaged_version_2_files_get_one_line_errors(tmp_path) -> None:
    good = network_to_bytes(lenet5_net(), (28, 28))
    with np.load(__import__("io").BytesIO(good)) as f:
        arrays = {n: f[n] for n in f.files}
    cases = {}
    layers = json.loads(str(arrays["layers"]))
    cases["kind.npz"] = {**arrays, "layers": np.array(json.dumps([*layers[:2], {"kind": "lstm"}, *layers[3:]]))}
    layers[6]["shape"] = [799, 500]
    cases["shape.npz"] = {**arrays, "layers": np.array(json.dumps(layers))}
    cases["index.npz"] = {**arrays, "indices_3": arrays["indices_3"] + 600}
    cases["bias.npz"] = {**arrays, "bias_3": arrays["bias_3"][:7]}
    for name, content in cases.items():
        np.savez(tmp_path / name, **content)
        with pytest.raises(SparseModelError) as info:
            load(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / name) in message and "export" in message, message
    assert "unknown kind 'lstm'" in str(pytest.raises(SparseModelError, load, tmp_path / "kind.npz").value)
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(SparseModelError, match="truncated"):
        load(tmp_path / "truncated.npz")


def test_the_loader_of_a_conv_net_runs_where_tensorflow_cannot_be_imported(tmp_path) -> None:
    path = save_network(tmp_path / "lenet5.npz", lenet5_net(), (28, 28))
    printed = run_without_frameworks(f"""
        import numpy as np
        from src.engine.sparse_model import load
        pixels = np.load("data/mnist.npz")["x_test"][:50]
        model = load({str(path)!r})
        out, one = model.predict(pixels), model.predict(pixels[:1])  # the batched and the per-example kernel
        print(out.shape == (50, 10) and bool(np.abs(out[:1] - one).max() < 1e-4))
        print(model.engine(10_000).name, model.engine(1).name)
    """)
    assert printed == ["True", "conv-csr-numba", "conv-direct-numba"]


# ---------------------------------------------------------------- round trips against Keras


@pytest.fixture(scope="module", params=["lenet300", "lenet5-caffe", "lenet5-relu", "user"])
def pruned_keras(request, tmp_path_factory):
    """(name, Keras model with pruned weights, its .keras file, test inputs): random weights, each weighted
    layer magnitude-pruned to Han et al.'s budget (10-66% kept), a filter or unit of the first layer dead."""
    keras = pytest.importorskip("keras")
    from tests.training.keras_models import MODELS, randomized

    model = randomized(MODELS[request.param](), seed=7)
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    keep = [0.66, 0.12, 0.08, 0.19] if len(layers) == 4 else [0.08, 0.09, 0.26]
    for layer, k in zip(layers, keep + [1.0] * len(layers), strict=False):
        w = layer.kernel.numpy()
        w = np.where(np.abs(w) >= np.quantile(np.abs(w), 1 - k), w, 0)
        w[..., 0] = 0 if layer is layers[0] else w[..., 0]
        layer.kernel.assign(w)
        if layer is layers[0] and layer.use_bias:
            layer.bias.assign(np.concatenate([[0.0], layer.bias.numpy()[1:]]))
    path = tmp_path_factory.mktemp("keras") / f"{request.param}.keras"
    model.save(path)
    shape = model.input_shape[1:]
    x = np.random.default_rng(8).integers(0, 256, (300, *shape)).astype(np.uint8)
    if len(shape) >= 2:
        x[:, :4] = 0
    return request.param, model, path, x


def test_exported_networks_predict_what_keras_does(pruned_keras, tmp_path) -> None:
    from src.training.keras_file import read_input_shape, read_network

    name, model, path, x = pruned_keras
    expected = model.predict(x.astype(np.float32), verbose=0)
    out = save_network(tmp_path / f"{name}.npz", read_network(path), read_input_shape(path))
    loaded = load(out)
    batched = loaded.predict(x)
    single = np.concatenate([loaded.predict(x[i:i + 1]) for i in range(20)])
    assert np.abs(batched - expected).max() < 1e-4 and np.abs(single - expected[:20]).max() < 1e-4
    assert (batched.argmax(axis=1) == expected.argmax(axis=1)).all()
    kept = sum(int(np.count_nonzero(w)) for w in model.get_weights() if w.ndim > 1)
    assert 0 < loaded.n_weights < kept  # the dead filter's or unit's weights in the next layer are gone too
    assert loaded.kernels[0].shape[-1] == model.get_weights()[0].shape[-1] - 1
    with np.load(out) as f:
        assert str(f["format"]) == (FORMAT if name == "lenet300" else FORMAT_V2)
    engines = (loaded.engine(10_000).name, loaded.engine(1).name)
    # the user model keeps 41% of its multiply-adds: numpy, not the per-example kernel, at batch 1 (no sample)
    assert engines == {"lenet300": ("csr-numba", "scatter-numba"), "user": ("conv-csr-numba", "dense")}.get(
        name, ("conv-csr-numba", "conv-direct-numba"))


def test_a_version_1_file_is_what_to_bytes_writes(tmp_path) -> None:
    """The MLP path of save_network is to_bytes itself: the seed study's sparse_file_bytes do not move."""
    rng = np.random.default_rng(9)
    ks = [np.where(rng.random((20, 6)) < 0.2, rng.standard_normal((20, 6)), 0).astype(np.float32),
          rng.standard_normal((6, 3)).astype(np.float32)]
    net = [Layer("flatten"), Layer("rescale", scale=float(sparse_model.PIXEL_SCALE)),
           Layer("dense", "a", ks[0], None, "relu"), Layer("dense", "b", ks[1], None)]
    assert len(network_to_bytes(net, (20,))) == len(sparse_model.to_bytes(ks, [None, None]))
