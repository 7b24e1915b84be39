"""Read and write Keras 3 ``.keras`` files with zipfile, json and h5py: no Keras, no TensorFlow.

A prune job on a cached model needs the weighted layers' weights, the network as plain arrays
(src/engine/network) and, for its own model artifacts, a file that plain ``keras.models.load_model`` opens.
Importing Keras costs ~7 s (TensorFlow), more than a whole job, so this module reads and writes the format
directly. A ``.keras`` file is a zip of ``config.json`` (the architecture), ``metadata.json`` and
``model.weights.h5``. In the weights file every layer of the model has a group ``layers/<class>`` named after
its CLASS, not its name: Keras's snake case of the class name, numbered per class in model order (``dense``,
``dense_1``, ..., ``conv2d``, ``conv2d_1``, ``max_pooling2d``, ...); a Dense or Conv2D layer's kernel is dataset
``vars/0`` (``(fan_in, fan_out)`` / ``(kh, kw, c_in, c_out)``) and its bias ``vars/1``.
tests/training/test_keras_file.py checks both directions against Keras itself, so a change of that layout in a
new Keras release fails the suite instead of corrupting models.

Models read: a Sequential, or a Functional model whose layers form one chain (each layer takes the output of the
one before). Layers and what they become (src/engine/network kinds):
InputLayer (the input shape), Rescaling (``rescale``, one scale and offset), Flatten (``flatten``), Dense
(``dense``), Conv2D (``conv2d``: channels_last, no dilation, no groups), MaxPooling2D (``maxpool2d``),
Dropout / SpatialDropout1D-3D / GaussianDropout / GaussianNoise / ActivityRegularization (identity at inference:
left out), Reshape (to one axis: ``flatten``; adding a trailing channel axis of 1 to the input: left out),
Activation / ReLU / Softmax (relu, linear, softmax; folded into the Dense or Conv2D layer before it: relu may
pass max-pooling and flatten layers, which it commutes with). Activations of Dense and Conv2D: relu, linear,
softmax. Anything else raises :class:`UnsupportedLayer`; :func:`unsupported_layers` lists every such layer
without raising (the job then evaluates the model densely through Keras).

Written files hold no optimizer state and no compile config (inference models), and store weights with
gzip compression: a 98%-zero matrix takes a small fraction of its dense size, and loads back exactly.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from src.engine.network import WEIGHTED, Layer, Network, conv_output_shape

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
WEIGHTED_CLASSES = {"Dense": "dense", "Conv2D": "conv2d"}
IDENTITY_CLASSES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                    "GaussianNoise", "ActivityRegularization")
ACTIVATIONS = ("relu", "linear", "softmax")
COMMUTES_WITH_RELU = ("maxpool2d", "flatten")  # relu(pool(h)) = pool(relu(h)); same for flatten


class KerasFileError(ValueError):
    """The file is not a readable ``.keras`` model, or not one this module can read; one line."""


class UnsupportedLayer(KerasFileError):
    """A layer :func:`read_network` cannot express as a src/engine/network Network. ``layers``: each such layer
    as ``"<name> (<Class>): <why>"``, in model order (the message names the first)."""

    def __init__(self, path: Path | str, layers: list[str]) -> None:
        self.layers = layers
        more = f" (and {len(layers) - 1} more)" if len(layers) > 1 else ""
        super().__init__(f"{path}: layer {layers[0]}{more}: the sparse engine cannot run it")


def _snake(class_name: str) -> str:
    """Keras's ``naming.to_snake_case``: the stem of a layer's group in the weights file."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _open(path: Path | str, weights: bool = True) -> tuple[dict, bytes | None]:
    """(config, weights file bytes or None: absent, or ``weights=False``) of a ``.keras`` file; KerasFileError if it
    is not one."""
    read_weights = weights
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(CONFIG))
            weights = archive.read(WEIGHTS) if read_weights and WEIGHTS in archive.namelist() else None
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KerasFileError(f"{path} is not a readable .keras file ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict) or "config" not in config:
        raise KerasFileError(f"{path} is not a readable .keras file (its config.json describes no model)")
    return config, weights


def read_config(path: Path | str) -> dict:
    """The model's architecture (``config.json``) as a dict."""
    return _open(path, weights=False)[0]


def _history(node_arg: object) -> str | None:
    """The name of the layer a Functional node argument comes from (None if it is not one tensor)."""
    if isinstance(node_arg, dict) and node_arg.get("class_name") == "__keras_tensor__":
        return node_arg["config"]["keras_history"][0]
    return None


def layer_chain(path: Path | str, config: dict) -> list[dict]:
    """The layer configs of a Sequential model, or of a Functional one whose layers form a single chain, in model
    order (the dicts of ``config``, so callers may edit them). KerasFileError for any other model."""
    kind, layers = config.get("class_name"), config["config"].get("layers", [])
    if kind == "Sequential":
        return layers
    if kind not in ("Functional", "Model"):
        raise KerasFileError(f"{path}: a {kind} model; prunesweep reads Sequential and Functional models")
    previous = None
    for layer in layers:
        nodes = layer.get("inbound_nodes", [])
        inputs = [_history(a) for node in nodes for a in node.get("args", [])]
        if layer["class_name"] == "InputLayer" and not nodes and previous is None:
            previous = layer["name"]
            continue
        if len(nodes) != 1 or inputs != [previous]:
            raise KerasFileError(f"{path}: layer {layer['name']} ({layer['class_name']}) does not take the output of "
                                 f"the layer before it ({previous}): prunesweep reads models that are one chain of "
                                 "layers")
        previous = layer["name"]
    outputs = config["config"].get("output_layers", [])
    outputs = outputs[0] if outputs and isinstance(outputs[0], list) and len(outputs) == 1 else outputs
    if not outputs or outputs[0] != previous:
        raise KerasFileError(f"{path}: the model's output is not its last layer: prunesweep reads one chain of layers")
    return layers


# Layers with weights that only the Keras path prunes (src/training/keras_graph.PRUNABLE_CLASSES less Dense, Conv2D)
GRAPH_ONLY_CLASSES = ("EinsumDense", "Conv1D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                      "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "SimpleRNN",
                      "LSTM", "GRU", "MultiHeadAttention", "Embedding", "Bidirectional", "TimeDistributed",
                      "Functional", "Sequential", "Model")


def graph_reason(path: Path | str) -> str | None:
    """Why the model in ``path`` is pruned through Keras: it is not one chain, holds a prunable layer other than
    Dense and Conv2D or a nested model, or has a layer src/engine/network does not express (a BatchNormalization:
    Keras then runs it, and retraining moves its statistics too). None when this module and the engine take it."""
    config = read_config(path)
    try:
        chain = layer_chain(path, config)
    except KerasFileError:
        return "a graph of layers, not one chain"
    other = [f"{layer['config'].get('name', '?')} ({layer['class_name']})" for layer in chain
             if layer["class_name"] in GRAPH_ONLY_CLASSES or layer["config"].get("groups", 1) != 1]
    if other:
        return f"layer {other[0]}"
    problems = _read(path, with_weights=False)[2]
    return problems[0] if problems and not problems[0].startswith("(the model)") else None


def _groups(chain: list[dict]) -> list[str]:
    """Each layer's group name in the weights file (``layers/<name>``), as Keras numbers them per class."""
    seen: dict[str, int] = {}
    names = []
    for layer in chain:
        stem = _snake(layer["class_name"])
        names.append(stem if stem not in seen else f"{stem}_{seen[stem] + 1}")
        seen[stem] = seen[stem] + 1 if stem in seen else 0
    return names


def _input_shape(chain: list[dict]) -> tuple[int, ...] | None:
    """One example's input shape: the InputLayer's, else the first recorded ``build_config`` input shape."""
    for layer in chain:
        c = layer["config"]
        shape = (c.get("batch_shape") or c.get("batch_input_shape") if layer["class_name"] == "InputLayer"
                 else (layer.get("build_config") or {}).get("input_shape"))
        if shape:
            return tuple(int(v) for v in shape[1:])
    return None


def _activation(value: object) -> str:
    """An activation's name as the config holds it (None is linear; a serialized object stays readable)."""
    if value is None:
        return "linear"
    return value if isinstance(value, str) else json.dumps(value)


def _fold(net: Network, activation: str) -> str | None:
    """Fold ``activation`` into the weighted layer before it (relu may pass pooling and flatten); the problem, if
    it cannot be."""
    if activation == "linear":
        return None
    j = len(net) - 1
    while activation == "relu" and j >= 0 and net[j].kind in COMMUTES_WITH_RELU:
        j -= 1
    if j < 0 or net[j].kind not in WEIGHTED:
        return f"a {activation} activation that does not follow a Dense or Conv2D layer"
    if j != len(net) - 1 and activation != "relu":
        return f"a {activation} activation after a {net[-1].kind} layer"
    if net[j].activation == activation == "relu":
        return None
    if net[j].activation != "linear":
        return f"a {activation} activation after {net[j].activation}"
    net[j] = replace(net[j], activation=activation)
    return None


def _pair(value: object) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def _convert(chain: list[dict], groups: list[str], weights: h5py.File | None
             ) -> tuple[Network, tuple[int, ...] | None, list[str]]:
    """(network, input shape, problems): each layer config as a Network layer, weights from ``weights`` (None:
    zero-size placeholders, to check the architecture only). A problem is ``"<name> (<Class>): <why>"``."""
    net: Network = []
    problems: list[str] = []
    input_shape = shape = _input_shape(chain)
    weighted_seen = False
    for layer, group in zip(chain, groups, strict=True):
        cls, c = layer["class_name"], layer["config"]
        label = f"{c.get('name', layer.get('name', '?'))} ({cls})"
        problem, out = None, None
        if c.get("data_format", "channels_last") != "channels_last":
            problem = f"data_format {c['data_format']} (only channels_last)"
        elif cls == "InputLayer" or cls in IDENTITY_CLASSES:
            pass
        elif cls == "Rescaling":
            if isinstance(c.get("scale"), (int, float)) and isinstance(c.get("offset", 0.0), (int, float)):
                out = Layer("rescale", c["name"], scale=float(c["scale"]), offset=float(c.get("offset", 0.0)))
            else:
                problem = "a per-channel scale or offset"
        elif cls == "Flatten":
            out = Layer("flatten", c["name"])
        elif cls == "Reshape":
            target = tuple(int(v) for v in c["target_shape"])
            if len(target) == 1 and (shape is None or target[0] in (-1, math.prod(shape))):
                out = Layer("flatten", c["name"])
            elif weighted_seen or shape is None or target != (*shape, 1):
                problem = f"a reshape to {target} (only to one axis, or adding a channel axis to the input)"
        elif cls in ("Activation", "ReLU", "Softmax"):
            activation = (_activation(c.get("activation")) if cls == "Activation" else cls.lower())
            if cls == "ReLU" and (c.get("max_value") is not None or c.get("negative_slope", 0) or
                                  c.get("threshold", 0)):
                problem = "a ReLU with max_value, negative_slope or threshold"
            elif cls == "Softmax" and c.get("axis", -1) not in (-1, [-1]):
                problem = f"softmax over axis {c['axis']}"
            elif activation not in ACTIVATIONS:
                problem = f"activation {activation} (only {', '.join(ACTIVATIONS)})"
            else:
                problem = _fold(net, activation)
        elif cls in WEIGHTED_CLASSES:
            activation = _activation(c.get("activation"))
            if activation not in ACTIVATIONS:
                problem = f"activation {activation} (only {', '.join(ACTIVATIONS)})"
            elif cls == "Conv2D" and (_pair(c.get("dilation_rate", 1)) != (1, 1) or c.get("groups", 1) != 1
                                      or c.get("padding") not in ("valid", "same")):
                problem = "dilation, groups or padding other than valid/same"
            else:
                kernel, bias = _weights(weights, group, bool(c.get("use_bias", True)), cls)
                kind = WEIGHTED_CLASSES[cls]
                out = (Layer("dense", c["name"], kernel, bias, activation) if kind == "dense" else
                       Layer("conv2d", c["name"], kernel, bias, activation, _pair(c.get("strides", 1)), c["padding"]))
                weighted_seen = True
        elif cls == "MaxPooling2D":
            if c.get("padding") not in ("valid", "same"):
                problem = f"padding {c.get('padding')}"
            else:
                size = _pair(c["pool_size"])
                out = Layer("maxpool2d", c["name"], pool_size=size, strides=_pair(c.get("strides") or size),
                            padding=c["padding"])
        else:
            problem = "a layer the sparse engine does not have"
        if problem:
            problems.append(f"{label}: {problem}")
        if out is not None:
            net.append(out)
        shape = _next_shape(cls, c, shape)
    if not problems and not any(layer.kind in WEIGHTED for layer in net):
        problems.append("(the model): no Dense or Conv2D layer")
    return net, input_shape, problems


def _weights(h5: h5py.File | None, group: str, use_bias: bool, cls: str
             ) -> tuple[np.ndarray, np.ndarray | None]:
    if h5 is None:
        return np.zeros((1, 1) if cls == "Dense" else (1, 1, 1, 1), np.float32), None
    variables = h5["layers"][group]["vars"]
    kernel = np.asarray(variables["0"], dtype=np.float32)
    return kernel, np.asarray(variables["1"], dtype=np.float32) if use_bias else None


def _next_shape(cls: str, c: dict, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """A layer's output shape (no batch axis) from its config and its input shape (None if unknown)."""
    if shape is None:
        return None
    if cls == "Dense":
        return (*shape[:-1], int(c["units"]))
    if cls in ("Conv2D", "MaxPooling2D") and len(shape) == 3:
        size = _pair(c["kernel_size"] if cls == "Conv2D" else c["pool_size"])
        strides = _pair(c.get("strides") or size)
        h, w = conv_output_shape(shape[0], shape[1], size, strides, c.get("padding", "valid"))
        return (h, w, int(c["filters"]) if cls == "Conv2D" else shape[2])
    if cls == "Flatten":
        return (math.prod(shape),)
    if cls == "Reshape":
        target = [int(v) for v in c["target_shape"]]
        if -1 in target:
            target[target.index(-1)] = math.prod(shape) // -math.prod(target)
        return tuple(target)
    return shape


def _read(path: Path | str, with_weights: bool) -> tuple[Network, tuple[int, ...] | None, list[str]]:
    config, weights = _open(path, weights=with_weights)
    chain = layer_chain(path, config)
    try:
        if not with_weights:
            return _convert(chain, _groups(chain), None)
        if weights is None:
            raise KerasFileError(f"{path} is not a readable .keras file (no {WEIGHTS})")
        with h5py.File(io.BytesIO(weights), "r") as h5:
            return _convert(chain, _groups(chain), h5)
    except (OSError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, KerasFileError):
            raise
        raise KerasFileError(f"{path} is not a readable .keras file ({type(e).__name__}: {e})") from None


def read_network(path: Path | str) -> Network:
    """The model as a src/engine/network Network (float32 weights, Keras layouts). Raises UnsupportedLayer
    naming the first layer it cannot express (``.layers`` lists them all), KerasFileError for a file that is
    not a readable ``.keras`` model or not one chain of layers."""
    net, _, problems = _read(path, with_weights=True)
    if problems:
        raise UnsupportedLayer(path, problems)
    return net


def read_input_shape(path: Path | str) -> tuple[int, ...] | None:
    """The model's input shape without the batch axis, e.g. ``(28, 28)`` (None if the file does not say)."""
    config, _ = _open(path, weights=False)
    return _input_shape(layer_chain(path, config))


def unsupported_layers(path: Path | str) -> list[str]:
    """The layers :func:`read_network` would refuse, as ``"<name> (<Class>): <why>"`` (empty: it reads the
    model). From the architecture alone (no weights are read). KerasFileError as read_network."""
    return _read(path, with_weights=False)[2]


def read_weights(path: Path | str) -> tuple[list[np.ndarray], list[np.ndarray | None], list[str]]:
    """(kernels, biases, layer names) of the Dense and Conv2D layers in model order, float32 in Keras layouts
    (Dense ``(fan_in, fan_out)``, Conv2D ``(kh, kw, c_in, c_out)``); a bias is None where the layer has none.
    Works for any Sequential or single-chain Functional model, whatever its other layers."""
    config, weights = _open(path)
    chain = layer_chain(path, config)
    picked = [(layer, group) for layer, group in zip(chain, _groups(chain), strict=True)
              if layer["class_name"] in WEIGHTED_CLASSES]
    if weights is None:
        raise KerasFileError(f"{path} is not a readable .keras file (no {WEIGHTS})")
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            read = [_weights(h5, group, bool(layer["config"].get("use_bias", True)), layer["class_name"])
                    for layer, group in picked]
    except (OSError, KeyError) as e:
        raise KerasFileError(f"{path} is not a readable .keras file ({type(e).__name__}: {e})") from None
    return [k for k, _ in read], [b for _, b in read], [layer["config"]["name"] for layer, _ in picked]


def read_dense_weights(path: Path | str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Kernels ``(fan_in, fan_out)`` and biases (None without bias) of the Dense layers, in order, float32."""
    kernels, biases, _ = read_weights(path)
    dense = [i for i, w in enumerate(kernels) if w.ndim == 2]
    return [kernels[i] for i in dense], [biases[i] for i in dense]


def _resize(path: Path | str, chain: list[dict], kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> None:
    """Set each Dense / Conv2D config's width from its kernel's last axis and every layer's recorded input
    shapes (``build_config``, a Functional node's input tensor) from the new widths. ValueError if a kernel does
    not fit what its layer receives or a bias is given for a layer without one (or the reverse)."""
    weighted = [layer for layer in chain if layer["class_name"] in WEIGHTED_CLASSES]
    if len(weighted) != len(kernels):
        raise ValueError(f"{path} has {len(weighted)} Dense and Conv2D layers, got {len(kernels)} kernels")
    for layer, w, b in zip(weighted, kernels, biases, strict=True):
        c = layer["config"]
        if (b is None) == bool(c.get("use_bias", True)):
            raise ValueError(f"layer {c['name']}: bias given = {b is not None}, use_bias = {c.get('use_bias', True)}")
        c["units" if layer["class_name"] == "Dense" else "filters"] = int(w.shape[-1])
    shape, weights = _input_shape(chain), iter(kernels)
    for layer in chain:
        cls, c = layer["class_name"], layer["config"]
        if shape is not None and cls != "InputLayer":
            if "build_config" in layer:
                layer["build_config"] = {"input_shape": [None, *shape]}
            for node in layer.get("inbound_nodes", []):
                for arg in node.get("args", []):
                    if _history(arg) is not None:
                        arg["config"]["shape"] = [None, *shape]
        if cls in WEIGHTED_CLASSES:
            w = next(weights)
            fan_in = w.shape[0] if cls == "Dense" else w.shape[2]
            if shape is not None and shape[-1] != fan_in:
                raise ValueError(f"layer {c['name']}: a kernel {w.shape} on inputs of shape {shape}")
        shape = _next_shape(cls, c, shape)


def write_like(template: Path | str, out: Path | str, kernels: list[np.ndarray],
               biases: list[np.ndarray | None], compress: bool = True) -> Path:
    """Write ``out``: the model of ``template`` (its config: input, scaling, activations, other layers) with
    these Dense and Conv2D weights, in model order.

    Widths follow ``kernels``' last axes (units, filters), so a compacted net (dead units or filters removed, the
    next layer's inputs with them) is a smaller model; biases must be given exactly for the layers that use
    them. Other layers keep the template's variables as they are. No optimizer state, no compile config.
    ``compress=False`` stores the weights as Keras itself does (no HDF5 filter), e.g. to measure the plain
    file's size. Returns ``out``."""
    config, weights = _open(template)
    config = copy.deepcopy(config)
    config.pop("compile_config", None)
    chain = layer_chain(template, config)
    _resize(template, chain, kernels, biases)
    groups = _groups(chain)
    replaced = {g: (w, b) for g, w, b in zip(
        [g for layer, g in zip(chain, groups, strict=True) if layer["class_name"] in WEIGHTED_CLASSES],
        kernels, biases, strict=True)}
    filters = dict(compression="gzip", compression_opts=1, shuffle=True) if compress else {}
    # gzip level 1: ~1.5x faster to write than the default 4, ~5% larger
    buffer = io.BytesIO()
    with h5py.File(io.BytesIO(weights), "r") as source, h5py.File(buffer, "w") as h5:
        layers = h5.create_group("layers")
        missing = set(replaced) - set(source["layers"])
        if missing:
            raise ValueError(f"{template}: no weights for {sorted(missing)} in its {WEIGHTS}")
        for name in source["layers"]:  # every layer keeps its (possibly empty) vars group, as Keras writes them
            held = name not in replaced and len(source["layers"][name].get("vars", {}))
            if held:  # another layer's variables (e.g. a normalization's), copied as they are
                source.copy(source["layers"][name], layers, name=name)
            else:  # created, not copied: an MLP's file is byte for byte what it was before conv layers came
                layers.create_group(name).create_group("vars")
        for name, (w, b) in replaced.items():
            group = layers[name]["vars"]
            group.create_dataset("0", data=np.asarray(w, np.float32), **filters)
            if b is not None:
                group.create_dataset("1", data=np.asarray(b, np.float32), **filters)
        h5.create_group("vars")
    with zipfile.ZipFile(template) as archive:
        metadata = archive.read(METADATA)
    out = Path(out)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(METADATA, metadata)
        archive.writestr(CONFIG, json.dumps(config))
        archive.writestr(WEIGHTS, buffer.getvalue())
    return out
