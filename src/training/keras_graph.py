"""Any Keras 3 model's prunable tensors, read from the loaded model (Sequential, Functional graphs, nested models).

Each built-in layer with weights maps to :class:`src.pruning.tensors.Tensor` records (the table below); every other
layer is kept whole, with the reason. Names are Keras's layer paths: a layer of a nested model is
``<outer>/<inner>`` (e.g. ``mobilenetv2_0.35_32/block_1_expand``), a tensor ``<layer>/<variable>``
(``block_1_expand/kernel``, ``mha/query/kernel``). Never pruned: biases (they follow a removed unit), normalization
parameters, scales; Embedding only with ``embeddings=True``.

| layers | tensors | a unit |
|---|---|---|
| Dense, EinsumDense | kernel | an output feature (the kernel's last axis) |
| Conv1D/2D/3D | kernel | a filter |
| Conv1D/2D/3DTranspose | kernel ``(..., out, in)`` | a filter (axis -2) |
| DepthwiseConv1D/2D | kernel ``(..., channels, multiplier)`` | a channel, all its multiples |
| SeparableConv1D/2D | depthwise_kernel, pointwise_kernel | a filter of the pointwise kernel |
| SimpleRNN, LSTM, GRU | kernel, recurrent_kernel | a unit: its 1/4/3 gate columns together |
| MultiHeadAttention | query/key/value/attention_output kernels | a head |
| Embedding (opt-in) | embeddings | an embedding feature |

Wrappers (Bidirectional, TimeDistributed) are walked into: ``bilstm/forward_lstm/kernel``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import keras
import numpy as np

from src.pruning.tensors import Tensor

CONV = ("Conv1D", "Conv2D", "Conv3D")
TRANSPOSE = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
RNN_GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
WRAPPED = ("forward_layer", "backward_layer", "layer")  # Bidirectional, TimeDistributed
PRUNABLE_CLASSES = ("Dense", "EinsumDense", *CONV, *TRANSPOSE, *DEPTHWISE, *SEPARABLE, *RNN_GATES,
                    "MultiHeadAttention", "Embedding")


@dataclass
class GraphModel:
    """A loaded Keras model and its prunable tensors: ``tensors[i]`` is held by ``variables[i]``. ``outputs``: the
    unit layers that produce the model's outputs (left whole unless configured); ``kept``: each layer with weights
    that is not pruned, as ``"<path> (<Class>): <why>"``."""

    model: keras.Model
    tensors: list[Tensor]
    variables: list
    outputs: list[str]
    kept: list[str] = field(default_factory=list)

    def arrays(self) -> list[np.ndarray]:
        return [np.asarray(v.numpy(), dtype=np.float32) for v in self.variables]

    def assign(self, arrays: list[np.ndarray]) -> None:
        for v, a in zip(self.variables, arrays, strict=True):
            v.assign(a)


def _t(path: str, layer: str, kind: str, variable, unit_axis: int | None = -1, gates: int = 1, repeat: int = 1,
       ranked: bool = True, name: str | None = None) -> tuple[Tensor, object]:
    tensor = Tensor(f"{path}/{name or variable.name}", layer, kind, tuple(int(d) for d in variable.shape), unit_axis,
                    gates, repeat, ranked)
    return tensor, variable


def _bias(path: str, layer: str, kind: str, variable, units: int, **kw) -> list[tuple[Tensor, object]]:
    """A bias that follows its layer's units (none when the layer has no bias or it does not match them)."""
    if variable is None or int(variable.shape[-1]) not in (units, units * kw.get("gates", 1),
                                                            units * kw.get("repeat", 1)):
        return []
    return [_t(path, layer, kind, variable, ranked=False, **kw)]


def layer_tensors(layer, path: str, embeddings: bool = False) -> tuple[list[tuple[Tensor, object]], str | None]:
    """(tensors with their variables, None) of one built-in layer, or ([], why it is kept whole)."""
    kind = type(layer).__name__
    if kind in ("Dense", "EinsumDense", *CONV):
        k = layer.kernel
        return [_t(path, path, kind, k), *_bias(path, path, kind, getattr(layer, "bias", None), int(k.shape[-1]))], None
    if kind in TRANSPOSE:
        k = layer.kernel
        bias = _bias(path, path, kind, layer.bias, int(k.shape[-2])) if layer.use_bias else []
        return [_t(path, path, kind, k, unit_axis=-2), *bias], None
    if kind in DEPTHWISE:
        k = layer.kernel
        bias = (_bias(path, path, kind, layer.bias, int(k.shape[-2]), unit_axis=0, repeat=int(k.shape[-1]))
                if layer.use_bias else [])
        return [_t(path, path, kind, k, unit_axis=-2), *bias], None
    if kind in SEPARABLE:
        p = layer.pointwise_kernel
        bias = _bias(path, path, kind, layer.bias, int(p.shape[-1])) if layer.use_bias else []
        return [_t(path, path, kind, layer.depthwise_kernel, unit_axis=None), _t(path, path, kind, p), *bias], None
    if kind in RNN_GATES:
        cell, gates = layer.cell, RNN_GATES[kind]
        out = [_t(path, path, kind, cell.kernel, gates=gates), _t(path, path, kind, cell.recurrent_kernel, gates=gates)]
        if cell.bias is not None:
            out += [_t(path, path, kind, cell.bias, gates=gates, ranked=False)]
        return out, None
    if kind == "MultiHeadAttention":
        out = []
        for sub in (layer.query_dense, layer.key_dense, layer.value_dense):  # kernels (d, heads, dim)
            out.append(_t(f"{path}/{sub.name}", path, kind, sub.kernel, unit_axis=1))
            if sub.bias is not None:  # (heads, dim)
                out.append(_t(f"{path}/{sub.name}", path, kind, sub.bias, unit_axis=0, ranked=False))
        o = layer.output_dense  # (heads, dim, d); its bias (d,) is not a head's
        out.append(_t(f"{path}/{o.name}", path, kind, o.kernel, unit_axis=0))
        return out, None
    if kind == "Embedding":
        if not embeddings:
            return [], "an Embedding (prune.embeddings=true prunes it)"
        return [_t(path, path, kind, layer.embeddings)], None
    if layer.weights:
        return [], "normalization, scale or statistics: never pruned" if kind.endswith(
            ("Normalization", "Rescaling")) else "a layer prunesweep does not prune"
    return [], None


def _walk(model, prefix: str, embeddings: bool, found: list, kept: list[str]) -> None:
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            _walk(layer, f"{path}/", embeddings, found, kept)
            continue
        wrapped = [getattr(layer, a) for a in WRAPPED if isinstance(getattr(layer, a, None), keras.layers.Layer)]
        if wrapped:  # Bidirectional's two RNNs, TimeDistributed's layer: named <wrapper>/<inner>
            _walk(SimpleNamespace(layers=wrapped), f"{path}/", embeddings, found, kept)
            continue
        tensors, why = layer_tensors(layer, path, embeddings)
        found.extend(tensors)
        if why:
            kept.append(f"{path} ({type(layer).__name__}): {why}")


def _producers(model, prefix: str, has_tensors: set[str]) -> list[str]:
    """The unit layers whose outputs reach the model's outputs through layers without prunable weights."""
    out: list[str] = []
    todo = [t._keras_history.operation for t in model.outputs]
    seen: set[int] = set()
    while todo:
        op = todo.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        path = f"{prefix}{op.name}"
        if isinstance(op, keras.Model):
            out += _producers(op, f"{path}/", has_tensors)
        elif any(h == path or h.startswith(f"{path}/") for h in has_tensors):  # a layer, or a wrapper's
            out += [h for h in has_tensors if h == path or h.startswith(f"{path}/")]
        else:
            todo += [parent.operation for node in op._inbound_nodes for parent in node.parent_nodes]
    return out


def read_graph(model: keras.Model, embeddings: bool = False) -> GraphModel:
    """The :class:`GraphModel` of a built Keras model."""
    found: list = []
    kept: list[str] = []
    _walk(model, "", embeddings, found, kept)
    seen: set[int] = set()
    found = [(t, v) for t, v in found if not (id(v) in seen or seen.add(id(v)))]  # a shared layer counts once
    tensors = [t for t, _ in found]
    outputs = _producers(model, "", {t.layer for t in tensors})
    return GraphModel(model, tensors, [v for _, v in found], sorted(set(outputs)), kept)


def unit_kind(t: Tensor) -> str:
    """What one unit of ``t``'s layer is, for listings."""
    return {"MultiHeadAttention": "head", "Dense": "output feature", "EinsumDense": "output feature",
            "Embedding": "embedding feature"}.get(
        t.kind, "unit (gate columns together)" if t.kind in RNN_GATES else
        "channel" if t.kind in DEPTHWISE else "filter")


def load_graph(path, embeddings: bool = False) -> GraphModel:
    """The :class:`GraphModel` of a ``.keras`` file, loaded in Keras's safe mode, uncompiled."""
    return read_graph(keras.models.load_model(path, compile=False, safe_mode=True), embeddings)


def state_with(graph: GraphModel, state: list[np.ndarray], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``state`` (``model.get_weights()``: every variable of the model) with the prunable tensors set to ``arrays``."""
    index = {id(v): i for i, v in enumerate(graph.model.weights)}
    out = list(state)
    for v, a in zip(graph.variables, arrays, strict=True):
        out[index[id(v)]] = a
    return out


def arrays_of(graph: GraphModel, state: list[np.ndarray]) -> list[np.ndarray]:
    """The prunable tensors' arrays within ``state`` (``model.get_weights()`` order)."""
    index = {id(v): i for i, v in enumerate(graph.model.weights)}
    return [np.asarray(state[index[id(v)]], dtype=np.float32) for v in graph.variables]
