"""Checks of the configured model against the data and ``prune.layer_k``, before anything trains: no TensorFlow.

A built model (mlp, lenet300, lenet5) is described by its config alone; a user's ``.keras`` file by its
``config.json`` (read with zipfile and json: src/training/keras_file.read_config). Each problem is one
:class:`~src.cli.config.ConfigError` line naming the setting and the fix.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.cli.config import ConfigError
from src.pruning.plan import layer_k_by_name, unknown_layer_names
from src.training.keras_file import KerasFileError, read_config

WEIGHTED_CLASSES = ("Dense", "Conv2D")


def _nodes(node: Any) -> Iterator[dict]:
    """Every dict inside a Keras config (layers, initializers, nested models...)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def _layers(config: dict) -> list[dict]:
    return list(config.get("config", {}).get("layers", []))


def user_model_config(path: str | Path) -> dict:
    """The ``config.json`` of the user's model file; ConfigError when the file is missing, not a Keras 3
    ``.keras`` file, or needs code that Keras's safe mode will not run (custom classes, Lambda layers)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.path={path} does not exist: give the path of a Keras 3 .keras file")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"model.path={path} is not a Keras 3 .keras file: save the model with "
                          "model.save('name.keras') (HDF5 .h5 and SavedModel folders are not read)")
    try:
        config = read_config(path)
    except KerasFileError:
        raise ConfigError(f"model.path={path} is not a readable .keras file: re-save it with Keras 3") from None
    custom = sorted({n.get("class_name", "?") for n in _nodes(config)
                     if "class_name" in n and (not str(n.get("module") or "keras").startswith("keras")
                                               or n.get("class_name") == "Lambda")})
    if custom:
        raise ConfigError(f"model.path={path} needs custom code ({', '.join(custom)}): prunesweep loads models in "
                          "Keras's safe mode; rebuild it from built-in Keras layers")
    if not any(layer.get("class_name") in WEIGHTED_CLASSES for layer in _layers(config)):
        raise ConfigError(f"model.path={path} has no Dense or Conv2D layer to prune")
    return config


def weighted_layer_names(model: Any) -> list[str]:
    """Names of the model's Dense and Conv2D layers, in order: conv1.., dense1.. for a built model."""
    if model.name == "keras":
        return [layer["config"]["name"] for layer in _layers(user_model_config(model.path))
                if layer.get("class_name") in WEIGHTED_CLASSES]
    return [*(f"conv{i}" for i in range(1, len(model.conv) + 1)),
            *(f"dense{i}" for i in range(1, len(model.hidden) + 2))]


def input_shape(model: Any) -> tuple[int, ...] | None:
    """The image shape the model takes, without the batch axis (None when the file does not say)."""
    if model.name != "keras":
        return tuple(model.input_shape)
    for layer in _layers(user_model_config(model.path)):
        shape = layer.get("config", {}).get("batch_shape") or layer.get("config", {}).get("batch_input_shape")
        if shape:
            return tuple(shape[1:])
    return None


def _one_channel_dropped(shape: tuple) -> tuple:
    return shape[:-1] if len(shape) == 3 and shape[-1] == 1 else shape


def _fits(expected: tuple[int | None, ...], image: tuple[int, ...]) -> bool:
    """Whether images of shape ``image`` feed a model taking ``expected`` ((H, W) and (H, W, 1) match)."""
    a, b = _one_channel_dropped(tuple(expected)), _one_channel_dropped(tuple(image))
    return len(a) == len(b) and all(e is None or e == d for e, d in zip(a, b, strict=True))


def check_model(cfg: Any, image_shape: tuple[int, ...] | None, classes: int | None) -> None:
    """ConfigError for: a user's model file that cannot be used, a model whose input shape is not the data's,
    a ``model.n_classes`` that is not the labels', a ``prune.layer_k`` naming a layer that is not a Dense or
    Conv2D layer of the model. ``image_shape``/``classes``: the data's (None: not loaded, not checked)."""
    model = cfg.model
    names = weighted_layer_names(model)  # also reads (and checks) a user's file
    expected = input_shape(model)
    if image_shape is not None and expected is not None and not _fits(expected, image_shape):
        setting = "model.path" if model.name == "keras" else "model.input_shape"
        raise ConfigError(f"{setting}: the model takes inputs {tuple(expected)} but the data's images are "
                          f"{tuple(image_shape)}: set model.input_shape={list(image_shape)} or use data that fits")
    if classes is not None and model.name != "keras" and model.n_classes is not None and model.n_classes != classes:
        raise ConfigError(f"model.n_classes={model.n_classes} but the data's labels have {classes} classes: set "
                          f"model.n_classes={classes}, or null to take it from the labels")
    unknown = unknown_layer_names(cfg.prune, names)
    if unknown:
        raise ConfigError(f"prune.layer_k names {', '.join(unknown)}, which the model does not have as a Dense or "
                          f"Conv2D layer: its prunable layers are {', '.join(names)}")
    if layer_k_by_name(cfg.prune) is None and cfg.prune.layer_k is not None and model.name != "mlp":
        n_pruned = len(names) if cfg.prune.prune_last else len(names) - 1
        if len(cfg.prune.layer_k) != n_pruned:
            raise ConfigError(f"prune.layer_k has {len(cfg.prune.layer_k)} values: give one per pruned layer "
                              f"({n_pruned}: {', '.join(names[:n_pruned])}), or name them: "
                              f"prune.layer_k={{{names[0]}: 90}}")
