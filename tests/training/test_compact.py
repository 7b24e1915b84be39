"""Structural pruning in Keras (issue 28): the zoo's graphs as channel graphs (src/training/channel_graph), whole
dependency groups removed (src/training/compact): the smaller model computes what the masked model does, is smaller,
and opens in plain Keras."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from src.pruning.groups import groups
from src.training.channel_graph import channel_graph
from src.training.compact import compact, mask
from tests.conftest import PROJECT
from tests.zoo import ZOO, feed, mnist

X = mnist(n_train=0, n_test=32)[2]
# Residual adds, concatenations, depthwise and separable convs, Flatten into Dense, merges of branches, LSTM, GRU and
# SimpleRNN units, attention heads
MODELS = ("resnet", "densenet", "mobile_seq", "mlp_bn", "multi_merge", "conv_variants", "conv1d_lstm", "gru_rnn",
          "transformer")


def _randomized_norms(model: keras.Model, rng: np.random.Generator) -> None:
    """BatchNormalization statistics and scales away from their initial values, so a slice left in shows."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def max_difference(name: str, floatx: str = "float32", save_to: str | None = None) -> float:
    """Max |compact - masked| of the zoo model ``name`` (BatchNorm statistics randomized, about half its prunable
    groups removed at random), after checking it is smaller and, with ``save_to``, reloads in plain Keras."""
    keras.config.set_floatx(floatx)
    keras.utils.set_random_seed(0)
    model = ZOO[name]()
    rng = np.random.default_rng(0)
    _randomized_norms(model, rng)
    nodes, outputs = channel_graph(model)
    prunable = [g for g in groups(nodes, outputs) if g.prunable]
    removed = [g for g in prunable if rng.random() < 0.5]
    assert len(prunable) >= 8 and removed
    smaller = compact(model, removed)
    mask(model, removed)
    assert smaller.count_params() < model.count_params()
    x = feed(model, X)
    if save_to:
        smaller.save(save_to)
        reloaded = keras.models.load_model(save_to)  # plain Keras, safe mode on
        np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(smaller(x)))
    return float(np.abs(np.asarray(smaller(x)) - np.asarray(model(x))).max())


@pytest.mark.parametrize("name", MODELS)
def test_the_compact_model_computes_what_the_masked_model_does(name: str, tmp_path) -> None:
    assert max_difference(name, save_to=str(tmp_path / "compact.keras")) <= 1e-5


@pytest.mark.slow
def test_a_nested_backbone_compacts_exactly() -> None:
    """keras.applications MobileNetV2 inside a model, in float64 in a fresh process (float32 convolutions of other
    widths round differently, ~1e-3 at its depth; a process that built float32 models keeps float32 kernels)."""
    code = "from tests.training.test_compact import max_difference; print(max_difference('mobilenetv2', 'float64'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) <= 1e-9


def test_a_residual_family_loses_the_same_channel_in_every_branch() -> None:
    """resnet: a stem channel tied through an Add to its block's output channel: both convs lose it, and so do the
    BatchNorms after them and the next convs' inputs."""
    keras.utils.set_random_seed(0)
    model = ZOO["resnet"]()
    nodes, outputs = channel_graph(model)
    family = [g for g in groups(nodes, outputs) if g.prunable and len({n for n, _ in g.producers()}) == 2]
    assert family
    smaller = compact(model, family[:3])
    widths = {layer.name: layer.filters for layer in smaller.layers if hasattr(layer, "filters")}
    original = {layer.name: layer.filters for layer in model.layers if hasattr(layer, "filters")}
    shrunk = {n for n in widths if widths[n] == original[n] - 3}
    assert {n for n, _ in family[0].producers()} <= shrunk and len(shrunk) == 2


def _resnet_half_removed():
    keras.utils.set_random_seed(0)
    model = ZOO["resnet"]()
    rng = np.random.default_rng(1)
    _randomized_norms(model, rng)
    nodes, outputs = channel_graph(model)
    removed = [g for g in groups(nodes, outputs) if g.prunable and rng.random() < 0.5]
    return model, removed


def test_expand_puts_a_retrained_compact_model_back_as_the_masked_model() -> None:
    """The compact model's weights changed (as retraining does), expanded into the original's shapes: the full model
    computes what the compact one does, and every slice of the removed groups is 0."""
    from src.training.compact import expand, variable_masks

    model, removed = _resnet_half_removed()
    smaller = compact(model, removed)
    rng = np.random.default_rng(2)
    smaller.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in smaller.get_weights()])
    model.set_weights(expand(model, removed, smaller))
    x = feed(model, X)
    assert np.abs(np.asarray(model(x)) - np.asarray(smaller(x))).max() <= 1e-5
    masks = variable_masks(model, removed)
    assert sum(int((m == 0).sum()) for m in masks) > 0
    for v, m in zip(model.trainable_weights, masks, strict=True):
        assert not np.any(np.asarray(v)[m == 0]), v.path


def test_variable_masks_cover_what_mask_zeroes_and_nothing_else() -> None:
    """variable_masks marks exactly the trainable entries mask() sets to 0 (BN gamma and beta included)."""
    from src.training.compact import variable_masks

    model, removed = _resnet_half_removed()
    before = [np.asarray(v).copy() for v in model.trainable_weights]
    mask(model, removed)
    masks = variable_masks(model, removed)
    paths = [v.path for v in model.trainable_weights]
    assert any("gamma" in p and (m == 0).any() for p, m in zip(paths, masks, strict=True))
    for b, v, m in zip(before, model.trainable_weights, masks, strict=True):
        after = np.asarray(v)
        np.testing.assert_array_equal(after[m == 1], b[m == 1])
        assert not np.any(after[m == 0])


def test_slice_statistics_of_each_criterion() -> None:
    """l2: a filter's squared kernel column; bn_scale: |gamma|; taylor: (w * dL/dw)^2 of the kernel column plus the
    next layers' rows and the BN parameters of that channel, the gradient taken by TensorFlow here independently."""
    import tensorflow as tf

    from src.training.channel_stats import slice_stats

    keras.utils.set_random_seed(0)
    model = ZOO["resnet"]()
    _randomized_norms(model, np.random.default_rng(3))
    x, y = feed(model, X[:16]), np.arange(16) % 10
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    kernel = np.asarray(conv.kernel)
    l2 = slice_stats(model, "l2", lambda: (x, y))
    assert l2[(conv.name, "out", 3)] == pytest.approx(float((kernel[..., 3] ** 2).sum()), rel=1e-6)
    bn_scale = slice_stats(model, "bn_scale", lambda: (x, y))
    assert bn_scale[(bn.name, "in", 2)] == pytest.approx(abs(float(np.asarray(bn.gamma)[2])), rel=1e-6)
    assert not any(key[0] == conv.name for key in bn_scale)
    taylor = slice_stats(model, "taylor", lambda: (x, y))
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x, training=False))
    g = np.asarray(tape.gradient(loss, conv.kernel.value))
    assert taylor[(conv.name, "out", 3)] == pytest.approx(float(((kernel * g)[..., 3] ** 2).sum()), rel=1e-4)
    assert taylor[(conv.name, "out", 3)] > 0
