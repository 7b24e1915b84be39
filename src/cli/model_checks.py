"""Checks of the configured model against the data and ``prune.layer_k``, before anything trains: no TensorFlow.

A built model (mlp, lenet300, lenet5) is described by its config alone; a user's ``.keras`` file by its
``config.json`` (read with zipfile and json: src/training/keras_file.read_config). Each problem is one
:class:`~src.cli.config.ConfigError` line naming the setting and the fix.
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.cli.config import GRAPH_MODELS, ConfigError, model_keys
from src.cli.native_stderr import native_stderr_silenced
from src.pruning import plan as P
from src.pruning.plan import layer_k_by_name, unknown_layer_names
from src.training.keras_file import KerasFileError, graph_reason, read_config

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
    if path.is_dir():
        raise ConfigError(f"model.path={path} is a folder: give the path of a Keras 3 .keras file in it (a SavedModel "
                          "folder is not read: load it in Keras 3 and model.save('name.keras'))")
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
                                               or ">" in str(n.get("registered_name") or "")  # package>Name
                                               or n.get("class_name") == "Lambda")})
    if custom:
        raise ConfigError(f"model.path={path} needs custom code ({', '.join(custom)}): prunesweep loads models in "
                          "Keras's safe mode; rebuild it from built-in Keras layers")
    return config


@dataclass(frozen=True)
class GraphLayers:
    """A model only Keras runs (src/training/keras_graph): its prunable tensors, the unit layers producing its
    outputs, the layers with weights kept whole (with why), and why the chain reader does not take it."""

    tensors: tuple
    outputs: tuple[str, ...]
    kept: tuple[str, ...]
    reason: str


def graph_layers(model: Any, embeddings: bool = False) -> GraphLayers | None:
    """The :class:`GraphLayers` of a model that needs Keras: a user's file that is not a chain of Dense and Conv2D
    layers, or a built graph (resnet20, mobilenetv2); None otherwise. Imports Keras and loads the file (or builds
    the model) once per process (ConfigError if safe mode refuses)."""
    if model.name in GRAPH_MODELS:
        keys = {k: model[k] for k in model_keys(model)}
        return _built_graph_layers(json.dumps(OmegaConf.to_container(OmegaConf.create(keys)), sort_keys=True),
                                   embeddings)
    if model.name != "keras":
        return None
    path = Path(model.path).expanduser()
    user_model_config(path)
    reason = graph_reason(path)
    if reason is None:
        return None
    stat = path.stat()
    return _graph_layers(str(path.resolve()), stat.st_mtime_ns, stat.st_size, embeddings, reason)


@functools.cache
def _graph_layers(path: str, _mtime: int, _size: int, embeddings: bool, reason: str) -> GraphLayers:
    with native_stderr_silenced():  # TensorFlow's start-up lines: a bad setting still ends with one line
        from src.training.keras_graph import read_graph
        from src.training.model import ModelFileError, load_user_model

        try:
            graph = read_graph(load_user_model(path), embeddings)
        except ModelFileError as e:
            raise ConfigError(str(e)) from None
    return GraphLayers(tuple(graph.tensors), tuple(graph.outputs), tuple(graph.kept), reason)


@functools.cache
def _built_graph_layers(model_json: str, embeddings: bool) -> GraphLayers:
    with native_stderr_silenced():
        from src.training.keras_graph import read_graph
        from src.training.model import build_model

        model = OmegaConf.create({"n_classes": 10, **json.loads(model_json)})
        graph = read_graph(build_model(model, model.n_classes or 10), embeddings)
    return GraphLayers(tuple(graph.tensors), tuple(graph.outputs), tuple(graph.kept), f"{model.name}: a graph")


def weighted_layer_names(model: Any) -> list[str]:
    """Names of the model's prunable layers, in order: conv1.., dense1.. for a built model; a user's Dense and
    Conv2D layers, or for a model only Keras runs its layers with prunable tensors (paths like ``outer/inner``)."""
    if model.name == "keras" or model.name in GRAPH_MODELS:
        graph = graph_layers(model)
        if graph is not None:
            return list(dict.fromkeys(t.layer for t in graph.tensors if t.ranked))
        return [layer["config"]["name"] for layer in _layers(user_model_config(model.path))
                if layer.get("class_name") in WEIGHTED_CLASSES]
    return [*(f"conv{i}" for i in range(1, len(model.conv) + 1)),
            *(f"dense{i}" for i in range(1, len(model.hidden) + 2))]


def output_layer_names(model: Any) -> list[str]:
    """The prunable layers that produce the model's outputs (left whole unless configured): the last one of a
    chain, a graph's producers of its outputs."""
    graph = graph_layers(model)
    return list(graph.outputs) if graph is not None else weighted_layer_names(model)[-1:]


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
    graph = graph_layers(model, cfg.prune.embeddings)
    expected = input_shape(model)
    if image_shape is not None and expected is not None and not _fits(expected, image_shape):
        if model.name == "keras":  # the file's own Input layer: model.input_shape is not read
            raise ConfigError(f"model.path: the model takes inputs {tuple(expected)} but the data's images are "
                              f"{tuple(image_shape)}: save the model with keras.Input({tuple(image_shape)}) (e.g. "
                              "a Resizing layer after it) or use data of its shape")
        raise ConfigError(f"model.input_shape: the model takes inputs {tuple(expected)} but the data's images are "
                          f"{tuple(image_shape)}: set model.input_shape={list(image_shape)} or use data that fits")
    if classes is not None and model.name != "keras" and model.n_classes is not None and model.n_classes != classes:
        raise ConfigError(f"model.n_classes={model.n_classes} but the data's labels have {classes} classes: set "
                          f"model.n_classes={classes}, or null to take it from the labels")
    _check_criterion(cfg)
    _check_quantize(cfg, names, graph)
    if graph is not None:
        _check_graph(cfg, graph)
        return
    if not names:
        raise ConfigError(f"model.path={model.path} has no Dense or Conv2D layer to prune")
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


def _check_quantize(cfg: Any, names: list[str], graph: GraphLayers | None) -> None:
    """Quantization needs a net the sparse engine expresses (its file format is the engine's) and pruned in numpy,
    and ``quantize.layer_bits`` by names of its Dense and Conv2D layers."""
    q = cfg.quantize
    if q.method == "none":
        return
    where = f"model.path={cfg.model.path}" if cfg.model.name == "keras" else f"model={cfg.model.name}"
    if graph is not None:
        raise ConfigError(f"quantize={q.method} needs a model the sparse engine runs (a chain of Dense, Conv2D, "
                          f"pooling layers), and {where} is one only Keras runs ({graph.reason}): use quantize=none, "
                          "or Keras's own model.quantize('int8') on the run's model/pruned.keras")
    if P.custom_criterion(cfg.prune):
        raise ConfigError(f"quantize={q.method} quantizes a model pruned in numpy, and prune.criterion="
                          f"{cfg.prune.criterion} prunes in Keras: use the method's default criterion, or "
                          "quantize=none")
    unknown = [n for n in (q.layer_bits or {}) if n not in names]
    if unknown:
        raise ConfigError(f"quantize.layer_bits names {', '.join(unknown)}, which the model does not have as a Dense "
                          f"or Conv2D layer: its layers are {', '.join(names)}")


def has_batchnorm(model: Any) -> bool:
    """Whether the model has a BatchNormalization layer (a user's file: its config; built: resnet20, mobilenetv2)."""
    if model.name == "keras":
        return any(n.get("class_name") == "BatchNormalization" for n in _nodes(user_model_config(model.path)))
    return model.name in GRAPH_MODELS


def _check_criterion(cfg: Any) -> None:
    """``prune.criterion=bn_scale`` needs BatchNormalization to read scales from."""
    if cfg.prune.get("criterion") == "bn_scale" and not has_batchnorm(cfg.model):
        where = f"model.path={cfg.model.path}" if cfg.model.name == "keras" else f"model={cfg.model.name}"
        raise ConfigError(f"prune.criterion=bn_scale ranks channels by their BatchNormalization scale, and {where} has "
                          "no BatchNormalization layer: use prune.criterion=l2, l1 or taylor")


def _check_graph(cfg: Any, graph: GraphLayers) -> None:
    """A model only Keras runs: something to prune outside its output layers, ``prune.layer_k`` by known names."""
    prune, path = cfg.prune, cfg.model.path
    listing = (f"list them with: python -m src.layers {path}" if cfg.model.name == "keras" else
               f"its layers: {', '.join(dict.fromkeys(t.layer for t in graph.tensors if t.ranked))}"[:400])
    if prune.layer_k is not None and layer_k_by_name(prune) is None:
        raise ConfigError(f"prune.layer_k is a list, but {path} is a graph model: give k by layer name, e.g. "
                          f"prune.layer_k={{{graph.tensors[0].layer}: 90}} ({listing})")
    unknown = P.unknown_graph_names(prune, graph.tensors)
    if unknown:
        what = "layers with units (unit pruning takes layer names)" if prune.method in P.UNIT_METHODS else "tensors"
        raise ConfigError(f"prune.layer_k names {', '.join(unknown)}, which cover none of the model's prunable "
                          f"{what}: {listing}")
    named_outputs = [n for n in (layer_k_by_name(prune) or {}) if n in graph.outputs]
    if prune.method in P.UNIT_METHODS and named_outputs:  # structural: an output's units are what the model returns
        raise ConfigError(f"prune.layer_k names {', '.join(named_outputs)}, an output layer of {path}: removing its "
                          "units would change what the model returns, so unit pruning keeps it whole; name other "
                          f"layers (python -m src.layers {path} --groups lists the families)")
    if prune.method != "none" and not P.graph_items(prune, graph.tensors, graph.outputs):
        outputs = ", ".join(graph.outputs) or "none"
        raise ConfigError(f"model.path={path} has nothing to prune by {prune.method} outside its output layers "
                          f"({outputs}): set prune.prune_last=true, or name them in prune.layer_k ({listing})")
