"""src/engine/network.py: the numpy forward pass of conv, pooling, flatten and dense layers against Keras itself."""

from __future__ import annotations

import numpy as np
import pytest

from src.engine.network import Layer, as_mlp, forward, im2col, kernels_of, maxpool2d, with_weights

# Keras is imported only by the test that compares against it: the pure-numpy tests run (and a Keras that fails to
# import fails that test) whatever state Keras is in.


@pytest.mark.parametrize("padding,strides", [("valid", 1), ("same", 1), ("same", 2), ("valid", 2)])
def test_conv_pool_flatten_dense_match_keras(padding: str, strides: int) -> None:
    """network.forward of conv, pooling, flatten and dense layers gives the Keras model's outputs (1e-4)."""
    import keras

    def keras_twin(net_layers: list, input_shape: tuple[int, ...]) -> keras.Model:
        return keras.Sequential([keras.Input(shape=input_shape), *net_layers])

    rng = np.random.default_rng(0)
    model = keras_twin([keras.layers.Rescaling(1 / 255),
                        keras.layers.Conv2D(4, 5, strides=strides, padding=padding, activation="relu"),
                        keras.layers.MaxPooling2D(2, padding=padding),
                        keras.layers.Conv2D(3, 3, padding=padding, use_bias=False, activation="relu"),
                        keras.layers.MaxPooling2D(3, strides=2, padding=padding),
                        keras.layers.Flatten(), keras.layers.Dense(7, activation="relu"), keras.layers.Dense(5)],
                       (29, 27, 2))
    x = rng.integers(0, 256, (6, 29, 27, 2)).astype(np.uint8)
    c1, _, c2, _, _, d1, d2 = model.layers[1:]
    net = [Layer("rescale", scale=1 / 255),
           Layer("conv2d", "c1", *[np.asarray(v) for v in c1.get_weights()], "relu", (strides,) * 2, padding),
           Layer("maxpool2d", pool_size=(2, 2), strides=(2, 2), padding=padding),
           Layer("conv2d", "c2", np.asarray(c2.get_weights()[0]), None, "relu", padding=padding),
           Layer("maxpool2d", pool_size=(3, 3), strides=(2, 2), padding=padding),
           Layer("flatten"), Layer("dense", "d1", *d1.get_weights(), "relu"), Layer("dense", "d2", *d2.get_weights())]
    np.testing.assert_allclose(forward(net, x), np.asarray(model(x.astype(np.float32))), atol=1e-4, rtol=1e-4)


def test_im2col_rows_are_patches_in_kernel_order() -> None:
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    cols = im2col(x, (2, 3), (1, 1), "valid")
    assert cols.shape == (2 * 3 * 3, 2 * 3 * 3)
    np.testing.assert_array_equal(cols[4], x[0, 1:3, 1:4, :].reshape(-1))  # row 4: output (0, 1, 1)
    np.testing.assert_array_equal(cols[0], x[0, 0:2, 0:3, :].reshape(-1))
    np.testing.assert_array_equal(cols[-1], x[1, 2:4, 2:5, :].reshape(-1))


def test_maxpool_takes_the_max_of_each_window() -> None:
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype(np.float32)
    out = maxpool2d(x, (2, 2), (2, 2), "valid")
    assert out.shape == (2, 3, 3, 3) and out[1, 2, 0, 1] == x[1, 4:6, 0:2, 1].max()
    np.testing.assert_array_equal(maxpool2d(x, (3, 3), (3, 3), "valid"), x.reshape(2, 2, 3, 2, 3, 3).max(axis=(2, 4)))


def test_an_mlp_is_recognised_and_weights_are_replaced_in_order() -> None:
    rng = np.random.default_rng(2)
    w1, w2 = rng.normal(size=(12, 5)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    net = [Layer("flatten"), Layer("rescale", scale=0.5), Layer("dense", "a", w1, None, "relu"),
           Layer("dense", "b", w2, None)]
    kernels, biases, scale = as_mlp(net)
    assert scale == 0.5 and [k.shape for k in kernels] == [(12, 5), (5, 3)] and biases == [None, None]
    assert as_mlp([Layer("conv2d", kernel=np.zeros((3, 3, 1, 2)))]) is None
    zeroed = with_weights(net, [np.zeros_like(w1), w2], [None, None])
    assert not kernels_of(zeroed)[0][0].any() and kernels_of(net)[0][0].any()
    np.testing.assert_array_equal(forward(zeroed, rng.normal(size=(4, 3, 4))), np.zeros((4, 3), np.float32))
