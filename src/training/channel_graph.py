"""A loaded Keras model as the graph src/pruning/groups.py groups: one :class:`~src.pruning.groups.Node` per layer,
nested models inlined (``outer/inner`` names), in topological order.

What each built-in layer is (its role) is a table below (SimpleRNN, LSTM and GRU produce their units from their
inputs' channels); a layer not in it, or one that mixes channels (Reshape, Permute, attention, wrappers,
LayerNormalization over the channels, a Concatenate or Softmax on another axis, a layer
called more than once), blocks: the channels it touches are kept whole.
"""

from __future__ import annotations

import math

import keras

from src.pruning.groups import Node
from src.training.keras_graph import RNN_GATES

PRODUCE = ("Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose",
           "Conv2DTranspose", "Conv3DTranspose")
DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
MERGE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
PER_CHANNEL = ("BatchNormalization", "PReLU")  # pass, with parameters per channel (consumed slices)
PASS = ("Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
        "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
        "Identity")


def _channels(tensor) -> int:
    return int(tensor.shape[-1])


ZERO_AT_ZERO = ("linear", "relu", "relu6", "elu", "selu", "gelu", "silu", "swish", "tanh", "leaky_relu", "mish",
                "hard_silu", "hard_swish", "softsign")  # f(0) = 0: a removed (zero) channel stays zero


def _zero_at_zero(activation) -> bool:
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", "other")
    return name is None or name in ZERO_AT_ZERO


def _role(layer) -> tuple[str, dict]:
    """(role, extra Node fields) of one non-nested layer."""
    kind = type(layer).__name__
    c = layer.get_config()
    if kind in PRODUCE and c.get("groups", 1) == 1:
        return "produce", {"zero_stays_zero": _zero_at_zero(c.get("activation", "linear"))}
    if kind == "MultiHeadAttention" and len(set(_parents(layer))) == 1:  # self-attention: one input
        return "attention", {"heads": int(c["num_heads"])}
    if kind in RNN_GATES and not c.get("return_state"):  # a unit with no weights in or across stays 0 (h0 = 0)
        return "produce", {"zero_stays_zero": _zero_at_zero(c.get("activation", "tanh"))}
    if kind == "Activation" and not _zero_at_zero(c.get("activation")):
        return "block", {}
    if kind in DEPTHWISE:
        return "depthwise", {"multiplier": int(c.get("depth_multiplier", 1))}
    if kind in MERGE:
        return "merge", {}
    if kind == "Concatenate" and c.get("axis", -1) in (-1, len(layer.output.shape) - 1):
        return "concat", {}
    if kind == "Flatten":
        return "flatten", {"spatial": math.prod(int(d) for d in layer.input.shape[1:-1])}
    if kind in PER_CHANNEL and (kind != "PReLU" or c.get("shared_axes")):
        return "pass", {}
    if kind in PASS or (kind == "Rescaling" and not isinstance(c.get("scale"), (list, tuple))):
        return "pass", {"consumes": False}
    return "block", {}


def _parents(layer) -> list:
    return [parent.operation for node in layer._inbound_nodes[:1] for parent in node.parent_nodes]


def _walk(model, prefix: str, aliases: dict[int, str], nodes: list[Node]) -> None:
    """Append the nodes of ``model`` (Functional or Sequential); ``aliases``: a layer object's id -> the node name
    that stands for its output (an inlined model's input layer stands for what feeds it)."""
    layers = model.layers
    if isinstance(model, keras.Sequential):
        previous = aliases.get(id(model))
        for layer in layers:  # model.add rebuilds: a layer has one inbound node per add, none shared
            _add(layer, prefix, [previous] if previous else [], aliases, nodes, chain=True)
            previous = aliases[id(layer)]
        return
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer) and id(layer) in aliases:
            continue
        _add(layer, prefix, [aliases[id(p)] for p in _parents(layer)], aliases, nodes)


def _add(layer, prefix: str, inputs: list[str], aliases: dict[int, str], nodes: list[Node], chain: bool = False
         ) -> None:
    name = f"{prefix}{layer.name}"
    if isinstance(layer, keras.layers.InputLayer):
        nodes.append(Node(name, "input", (), _channels(layer.output)))
        aliases[id(layer)] = name
        return
    if isinstance(layer, keras.Model):  # inlined: its input stands for what feeds it, its output for it
        (source,) = inputs
        inner_inputs = [t._keras_history.operation for t in layer.inputs] if not isinstance(
            layer, keras.Sequential) else []
        for op in inner_inputs:
            aliases[id(op)] = source
        aliases[id(layer)] = source
        _walk(layer, f"{name}/", aliases, nodes)
        last = (layer.layers[-1] if isinstance(layer, keras.Sequential)
                else layer.outputs[0]._keras_history.operation)
        nodes.append(Node(name, "pass", (aliases[id(last)],), _channels(layer.output), consumes=False))
        aliases[id(layer)] = name
        return
    role, extra = _role(layer) if chain or len(layer._inbound_nodes) <= 1 else ("block", {})
    channels = _channels(layer.input if role == "flatten" else layer.output)  # flatten: the channels it reorders
    nodes.append(Node(name, role, tuple(inputs), channels, **extra))
    aliases[id(layer)] = name


def channel_graph(model: keras.Model) -> tuple[list[Node], list[str]]:
    """(nodes in topological order, names of the nodes whose outputs are the model's outputs)."""
    nodes: list[Node] = []
    aliases: dict[int, str] = {}
    if isinstance(model, keras.Sequential):
        first = model.layers[0]._inbound_nodes[0].parent_nodes[0].operation
        nodes.append(Node(first.name, "input", (), _channels(first.output)))
        aliases[id(model)] = first.name
        _walk(model, "", aliases, nodes)
        return nodes, [aliases[id(model.layers[-1])]]
    _walk(model, "", aliases, nodes)
    return nodes, [aliases[id(t._keras_history.operation)] for t in model.outputs]
