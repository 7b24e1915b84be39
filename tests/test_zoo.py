"""The model zoo (tests/zoo.py) builds, returns 10 scores per MNIST image, names its layers, and survives a
``.keras`` round trip through Keras's safe mode exactly. No training: ~20 s of tests here for the small models
(after ~15 s of imports), ~25 s more for the two keras.applications ones (marked slow)."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import PROJECT
from tests.zoo import APPLICATIONS, ZOO, ends_in_softmax, feed, mnist, save

X = mnist(n_train=0, n_test=16)[2]
WRAPPED = ("layer", "forward_layer", "backward_layer")  # TimeDistributed's layer, Bidirectional's two


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers and the layers they wrap (Bidirectional, TimeDistributed), not inside applications."""
    wrapped = [getattr(layer, attr, None) for layer in model.layers for attr in WRAPPED]
    return [*model.layers, *(layer for layer in wrapped if isinstance(layer, keras.layers.Layer))]


def _scores(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's outputs, called eagerly (``predict`` traces a graph first: seconds for the applications)."""
    return keras.ops.convert_to_numpy(model(feed(model, x), training=False))


# The applications models cost ~6-10 s each here (build, save, load): marked slow
@pytest.fixture(scope="module", params=[pytest.param(name, marks=pytest.mark.slow) if name in APPLICATIONS else name
                                        for name in ZOO])
def built(request):
    keras.utils.set_random_seed(0)
    return request.param, ZOO[request.param]()


def test_zoo_has_the_models_of_issue_27():
    assert len(ZOO) >= 10
    assert {"mlp_bn", "resnet", "transformer", "densenet", "mobilenetv2", "efficientnet", "mobile_seq",
            "conv1d_lstm", "gru_rnn", "multi_merge"} <= set(ZOO)
    assert set(APPLICATIONS) <= set(ZOO)


def test_builds_with_ten_scores_per_image(built):
    name, model = built
    assert model.input_shape[1:3] == (28, 28)
    out = _scores(model, X)
    assert out.shape == (len(X), 10)
    assert np.isfinite(out).all()
    if ends_in_softmax(model):
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
    if name not in APPLICATIONS:
        assert model.count_params() <= 100_000, model.count_params()


def test_layer_names_are_stable(built):
    """Explicit names: a second build in the same session has the same layer names (Keras's automatic names
    would take a counter: dense_1, input_layer_3). Inside the applications backbones only Keras names layers."""
    name, model = built
    names = [layer.name for layer in _layers(model)]
    assert [layer.name for layer in _layers(ZOO[name]())] == names
    assert len(set(names)) == len(names)


def test_safe_mode_round_trip_is_exact(built, tmp_path):
    name, model = built
    before = _scores(model, X)
    path = save(model, tmp_path / f"{name}.keras")
    loaded = keras.models.load_model(path, safe_mode=True)
    after = _scores(loaded, X)
    assert float(np.abs(after - before).max()) == 0.0
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]


def test_only_the_softmax_model_returns_probabilities():
    assert [name for name in ZOO if name not in APPLICATIONS and ends_in_softmax(ZOO[name]())] == ["gru_rnn"]


def test_probe_script_starts():
    out = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "zoo_probe.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
