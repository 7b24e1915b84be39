"""The Keras models: the zoo (mlp, lenet300, lenet5; resnet20 and mobilenetv2 from src/training/architectures), a
user's ``.keras`` file loaded safely, compilation, and
access to the weighted (prunable) layers: Dense and Conv2D, in model order.

A built model takes raw pixels, shape (N, H, W) with values 0..255 (any dtype), scales them to 0..1 inside the
model and returns logits (N, classes). It uses built-in layers only, so a saved ``.keras`` file loads with
plain ``keras.models.load_model`` and no prunesweep code.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from src.engine.evaluation import accuracy_and_loss
from src.training.architectures import mobilenetv2, resnet20
from src.training.keras_graph import read_graph

WEIGHTED = (layers.Dense, layers.Conv2D)


class ModelFileError(ValueError):
    """A user's model file is missing, not Keras, or needs code that safe mode does not run."""


def build_mlp(
    input_shape: list[int], hidden: list[int], n_classes: int, use_bias: bool,
    kernel_initializer: str = "glorot_uniform",
) -> keras.Model:
    """ReLU(... ReLU(x W1) ... W_L) -> logits; pixels are flattened and scaled by 1/255 first."""
    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=tuple(input_shape), name="pixels"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Rescaling(1.0 / 255.0, name="scale"))
    return _add_dense_layers(model, hidden, n_classes, use_bias, kernel_initializer)


def _add_dense_layers(model: keras.Sequential, hidden: list[int], n_classes: int, use_bias: bool,
                      kernel_initializer: str) -> keras.Sequential:
    """Append Dense ``hidden`` (ReLU) and the logits layer, named dense1, dense2, ...; return ``model``."""
    for i, width in enumerate(hidden, start=1):
        model.add(layers.Dense(width, activation="relu", use_bias=use_bias,
                               kernel_initializer=kernel_initializer, name=f"dense{i}"))
    model.add(layers.Dense(n_classes, use_bias=use_bias, kernel_initializer=kernel_initializer,
                           name=f"dense{len(hidden) + 1}"))
    return model


def build_convnet(
    input_shape: list[int], conv: list[int], kernel_size: int, hidden: list[int], n_classes: int, use_bias: bool,
    kernel_initializer: str = "glorot_uniform",
) -> keras.Model:
    """LeNet-5 style: per entry of ``conv``, a ``kernel_size`` conv (valid, ReLU) and a 2x2 max-pool; then Dense
    ``hidden`` (ReLU) and the logits. Layers conv1.., dense1..; pixels get a channel axis and are scaled by 1/255."""
    model = keras.Sequential(name="convnet")
    model.add(keras.Input(shape=tuple(input_shape), name="pixels"))
    if len(input_shape) == 2:
        model.add(layers.Reshape((*input_shape, 1), name="channels"))
    model.add(layers.Rescaling(1.0 / 255.0, name="scale"))
    for i, filters in enumerate(conv, start=1):
        model.add(layers.Conv2D(filters, kernel_size, activation="relu", use_bias=use_bias,
                                kernel_initializer=kernel_initializer, name=f"conv{i}"))
        model.add(layers.MaxPooling2D(2, name=f"pool{i}"))
    model.add(layers.Flatten(name="flatten"))
    return _add_dense_layers(model, hidden, n_classes, use_bias, kernel_initializer)


def build_model(model_cfg, n_classes: int | None = None) -> keras.Model:
    """The model ``model_cfg`` describes (``model.*``): the zoo's MLP or conv net, or the user's file
    (:func:`load_user_model`). ``n_classes`` overrides ``model.n_classes`` (the data's)."""
    if model_cfg.name == "keras":
        return load_user_model(model_cfg.path)
    n = model_cfg.n_classes if n_classes is None else n_classes
    if model_cfg.name == "resnet20":
        return resnet20(list(model_cfg.input_shape), n, list(model_cfg.widths), model_cfg.blocks)
    if model_cfg.name == "mobilenetv2":
        return mobilenetv2(list(model_cfg.input_shape), n, model_cfg.alpha, model_cfg.size)
    args = (list(model_cfg.input_shape),)
    if list(model_cfg.conv):
        return build_convnet(*args, list(model_cfg.conv), model_cfg.kernel_size, list(model_cfg.hidden), n,
                             model_cfg.use_bias, model_cfg.kernel_initializer)
    return build_mlp(*args, list(model_cfg.hidden), n, model_cfg.use_bias, model_cfg.kernel_initializer)


def load_user_model(path: str | Path) -> keras.Model:
    """A user's Keras 3 model, loaded in safe mode (no lambda layers or custom code run), uncompiled. Raises
    :class:`ModelFileError` (one line naming ``model.path``) when Keras cannot load it so, or it has no Dense or
    Conv2D layer to prune. (The command line checks the file before anything runs: src/cli/model_checks.py.)"""
    path = Path(path).expanduser()
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many types here; all mean "cannot load it safely"
        reason = " ".join(str(e).split())[:200]
        raise ModelFileError(f"model.path={path} cannot be loaded in Keras's safe mode ({type(e).__name__}: "
                             f"{reason}): use built-in layers only, without custom objects or Lambda") from None
    if not any(t.ranked for t in read_graph(model).tensors):
        raise ModelFileError(f"model.path={path} has no layer with weights to prune (python -m src.layers lists them)")
    return model


def load_trained(path: str | Path) -> keras.Model:
    """A model file the harness wrote (a train run's ``model.keras``), uncompiled, in safe mode."""
    return keras.models.load_model(path, compile=False, safe_mode=True)


def compile_model(model: keras.Model, optimizer: str, lr: float, momentum: float = 0.0,
                  cosine_steps: int = 0) -> keras.Model:
    """Compile for integer labels and logits. ``cosine_steps`` > 0: the learning rate decays from ``lr`` to 0
    along a cosine over that many optimizer steps (Keras's ``CosineDecay``); 0: ``lr`` throughout."""
    rate = keras.optimizers.schedules.CosineDecay(lr, cosine_steps) if cosine_steps > 0 else lr
    opt = (keras.optimizers.Adam(learning_rate=rate) if optimizer == "adam"
           else keras.optimizers.SGD(learning_rate=rate, momentum=momentum))
    model.compile(optimizer=opt,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def weighted_layers(model: keras.Model) -> list[layers.Layer]:
    """The Dense and Conv2D layers (those with a kernel: the prunable ones), in model order."""
    return [layer for layer in model.layers if isinstance(layer, WEIGHTED)]


def get_weights(model: keras.Model) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Kernels (Dense ``(fan_in, fan_out)``, Conv2D ``(kh, kw, c_in, c_out)``) and biases (or None) of the
    weighted layers, in order, float32."""
    kernels, biases = [], []
    for layer in weighted_layers(model):
        kernels.append(np.asarray(layer.kernel.numpy(), dtype=np.float32))
        biases.append(np.asarray(layer.bias.numpy(), dtype=np.float32) if layer.use_bias else None)
    return kernels, biases


def set_weights(model: keras.Model, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> None:
    for layer, w, b in zip(weighted_layers(model), kernels, biases, strict=False):
        layer.kernel.assign(w)
        if layer.use_bias:
            layer.bias.assign(b)


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 2000) -> tuple[float, float]:
    """(mean cross-entropy loss in nats, accuracy 0..1) of ``model``'s logits on raw pixels ``x``."""
    logits = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                             for i in range(0, len(x), batch_size)])
    accuracy, loss = accuracy_and_loss(logits, y)
    return loss, accuracy
