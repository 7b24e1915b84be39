"""What the weight criteria read from a Keras model (src/training/weight_stats.py): gradients of the prunable
tensors and the norms of their input features, checked against a direct computation."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from src.training.keras_graph import read_graph
from src.training.weight_stats import input_norms, tensor_gradients
from tests.zoo import ZOO, feed, mnist


def test_input_norms_are_each_input_features_norm_over_the_batch() -> None:
    keras.utils.set_random_seed(0)
    model = ZOO["resnet"]()
    graph = read_graph(model)
    x = feed(model, mnist(n_train=0, n_test=32)[2])
    norms = input_norms(graph, x)
    by_name = {t.name: n for t, n in zip(graph.tensors, norms, strict=True)}
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    seen = np.asarray(keras.Model(model.inputs, conv.input).predict(x, verbose=0), np.float64)
    axis, n = by_name[f"{conv.name}/kernel"]
    assert axis == 2  # (kh, kw, in, out): the input channels
    np.testing.assert_allclose(n, np.sqrt((seen ** 2).sum(axis=(0, 1, 2))), rtol=1e-6)
    logits_axis, logits_norms = by_name["logits/kernel"]
    assert logits_axis == 0 and logits_norms.shape == (model.get_layer("logits").input.shape[-1],)
    assert all(v is None for k, v in by_name.items() if not k.endswith("/kernel"))  # biases: no input feature


def test_tensor_gradients_are_the_losss() -> None:
    keras.utils.set_random_seed(0)
    model = ZOO["mlp_bn"]()
    graph = read_graph(model)
    x, y = mnist(n_train=16, n_test=0)[:2]
    grads = tensor_gradients(graph, x, y)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x, training=False))
    expected = tape.gradient(loss, [v.value for v in graph.variables])
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g, np.asarray(e), rtol=1e-6, atol=1e-9)
    assert any(np.abs(g).sum() > 0 for g in grads)
