"""Small Keras models the engine and file tests share: LeNet-300-100, LeNet-5 (Han et al.'s Caffe net, or with ReLU
after its convolutions), and a user's Functional chain. Importing this module imports Keras."""

from __future__ import annotations

import keras
import numpy as np

L = keras.layers


def lenet300() -> keras.Model:
    return keras.Sequential([keras.Input((28, 28)), L.Flatten(), L.Rescaling(1 / 255), L.Dense(300, activation="relu"),
                             L.Dense(100, activation="relu"), L.Dense(10)])


def lenet5(conv_activation: str | None) -> keras.Model:
    """Han et al.'s Caffe LeNet-5 (no ReLU after the convolutions) or the variant with it."""
    return keras.Sequential([keras.Input((28, 28, 1)), L.Rescaling(1 / 255),
                             L.Conv2D(20, 5, activation=conv_activation), L.MaxPooling2D(2),
                             L.Conv2D(50, 5, activation=conv_activation), L.MaxPooling2D(2), L.Flatten(),
                             L.Dense(500, activation="relu"), L.Dense(10)])


def user_model() -> keras.Model:
    """A Functional chain with the layers a user writes: Reshape, same padding, strides, Activation and ReLU
    layers (one after a pooling layer), Dropout, a softmax output."""
    x = inputs = keras.Input((12, 12), name="image")
    x = L.Reshape((12, 12, 1))(x)
    x = L.Rescaling(0.5, offset=-1.0)(x)
    x = L.Conv2D(6, 3, padding="same", name="features")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU()(x)
    x = L.Flatten()(x)
    x = L.Dropout(0.3)(x)
    x = L.Dense(16)(x)
    x = L.Activation("relu")(x)
    outputs = L.Dense(4, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs)


def randomized(model: keras.Model, seed: int) -> keras.Model:
    """Nonzero biases too, so a bias read from the wrong layer shows."""
    rng = np.random.default_rng(seed)
    scale = [0.1 if w.ndim == 1 else np.sqrt(2 / np.prod(w.shape[:-1])) for w in model.get_weights()]
    model.set_weights([(rng.standard_normal(w.shape) * s).astype(np.float32)
                       for w, s in zip(model.get_weights(), scale, strict=True)])
    return model


MODELS = {"lenet300": lenet300, "lenet5-caffe": lambda: lenet5(None), "lenet5-relu": lambda: lenet5("relu"),
          "user": user_model}
