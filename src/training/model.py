"""The Keras MLP: construction, compilation, and access to its dense layers' weights.

The model takes raw MNIST pixels, shape (N, 28, 28) with values 0..255 (any dtype), scales them
to 0..1 inside the model and returns logits (N, 10). It uses built-in layers only, so a saved
``.keras`` file loads with plain ``keras.models.load_model`` and no prunesweep code.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from src.engine.evaluation import accuracy_and_loss


def build_mlp(
    input_shape: list[int], hidden: list[int], n_classes: int, use_bias: bool,
    kernel_initializer: str = "glorot_uniform",
) -> keras.Model:
    """ReLU(... ReLU(x W1) ... W_L) -> logits; pixels are flattened and scaled by 1/255 first."""
    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=tuple(input_shape), name="pixels"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Rescaling(1.0 / 255.0, name="scale"))
    for i, width in enumerate(hidden, start=1):
        model.add(layers.Dense(width, activation="relu", use_bias=use_bias,
                               kernel_initializer=kernel_initializer, name=f"dense{i}"))
    model.add(layers.Dense(n_classes, use_bias=use_bias, kernel_initializer=kernel_initializer,
                           name=f"dense{len(hidden) + 1}"))
    return model


def compile_model(model: keras.Model, optimizer: str, lr: float, momentum: float = 0.0) -> keras.Model:
    opt = (keras.optimizers.Adam(learning_rate=lr) if optimizer == "adam"
           else keras.optimizers.SGD(learning_rate=lr, momentum=momentum))
    model.compile(optimizer=opt,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def dense_layers(model: keras.Model) -> list[layers.Dense]:
    return [layer for layer in model.layers if isinstance(layer, layers.Dense)]


def get_weights(model: keras.Model) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Kernels (fan_in, fan_out) and biases (or None) of the Dense layers, in order, float32."""
    kernels, biases = [], []
    for layer in dense_layers(model):
        kernels.append(np.asarray(layer.kernel.numpy(), dtype=np.float32))
        biases.append(np.asarray(layer.bias.numpy(), dtype=np.float32) if layer.use_bias else None)
    return kernels, biases


def set_weights(model: keras.Model, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> None:
    for layer, w, b in zip(dense_layers(model), kernels, biases, strict=False):
        layer.kernel.assign(w)
        if layer.use_bias:
            layer.bias.assign(b)


def model_from_weights(
    input_shape: list[int], kernels: list[np.ndarray], biases: list[np.ndarray | None]
) -> keras.Model:
    """An MLP whose layer widths are read off ``kernels`` (used for compacted, unit-pruned nets)."""
    use_bias = biases[0] is not None
    model = build_mlp(input_shape, [w.shape[1] for w in kernels[:-1]], kernels[-1].shape[1], use_bias)
    set_weights(model, kernels, biases)
    return model


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 2000) -> tuple[float, float]:
    """(mean cross-entropy loss in nats, accuracy 0..1) of ``model``'s logits on raw pixels ``x``."""
    logits = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                             for i in range(0, len(x), batch_size)])
    accuracy, loss = accuracy_and_loss(logits, y)
    return loss, accuracy
