"""What the weight criteria of src/pruning/importance read from a Keras model besides the weights: each prunable
tensor's gradient on a training batch (``taylor``) and the norm of each of its input features over that batch
(``activation``), for src/training/keras_graph's tensors."""

from __future__ import annotations

import keras
import numpy as np

from src.pruning import plan as P
from src.pruning.importance import weight_scores
from src.training.keras_graph import GraphModel

# tensors whose input features are their layer's input channels: axis 0 of a 2-D or 3-D kernel, -2 of a conv's
INPUT_FED = ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SimpleRNN", "LSTM", "GRU",
             "MultiHeadAttention")
BATCH = 512  # training examples both statistics are taken over


def tensor_gradients(graph: GraphModel, x: np.ndarray, y: np.ndarray) -> list[np.ndarray | None]:
    """dL/dw of every prunable tensor (L: mean sparse cross-entropy of the logits on (x, y), inference mode)."""
    import tensorflow as tf  # the TF backend's gradient tape

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, graph.model(x, training=False))
    grads = tape.gradient(loss, [v.value for v in graph.variables])
    return [None if g is None else np.asarray(g) for g in grads]


def _input_axis(name: str, kind: str, ndim: int) -> int | None:
    """The axis of a tensor along which its input features lie, or None (recurrent kernels, output projections,
    biases, separable and transposed convs: their inputs are not the layer's input)."""
    variable = name.rsplit("/", 1)[-1]
    if kind not in INPUT_FED or variable != "kernel" or "attention_output" in name:
        return None
    return 0 if ndim == 2 or kind == "MultiHeadAttention" else ndim - 2


def input_norms(graph: GraphModel, x: np.ndarray) -> list[tuple[int, np.ndarray] | None]:
    """Per prunable tensor, (axis, the L2 norm over the batch and positions of each of its input features), or None
    where its input is not known: a layer inside a nested model or wrapper, or a tensor :func:`_input_axis` skips."""
    model = graph.model
    top = {layer.name: layer for layer in model.layers}
    wanted = sorted({t.layer for t in graph.tensors if t.layer in top})
    inputs = [top[name].input[0] if isinstance(top[name].input, list) else top[name].input for name in wanted]
    outputs = keras.Model(model.inputs, inputs).predict(x, batch_size=256, verbose=0) if wanted else []
    outputs = outputs if isinstance(outputs, list) else [outputs]
    norms = {name: np.sqrt((np.asarray(a, np.float64) ** 2).reshape(-1, a.shape[-1]).sum(0))
             for name, a in zip(wanted, outputs, strict=True)}
    out: list[tuple[int, np.ndarray] | None] = []
    for t in graph.tensors:
        axis = _input_axis(t.name, t.kind, len(t.shape))
        n = norms.get(t.layer)
        out.append((axis, n) if axis is not None and n is not None and n.size == t.shape[axis] else None)
    return out


def weight_scores_of(graph: GraphModel, arrays: list[np.ndarray], criterion: str, x: np.ndarray, y: np.ndarray
                     ) -> list[np.ndarray]:
    """The scores of ``arrays`` (the model's prunable tensors, which ``graph.model`` holds) under ``criterion``."""
    if criterion == "magnitude":
        return weight_scores(arrays, criterion)
    if criterion == "taylor":
        return weight_scores(arrays, criterion, grads=tensor_gradients(graph, x[:BATCH], y[:BATCH]))
    return weight_scores(arrays, criterion, input_norms=input_norms(graph, x[:BATCH]))


def ranked_mask_fn(graph: GraphModel, prune, x: np.ndarray, y: np.ndarray) -> P.MaskFn:
    """src/pruning/plan.graph_mask_fn, ranking by ``prune.criterion``'s scores of the tensors ``graph.model`` holds
    when it is called (a weight job's taylor or activation; else the masks of the arrays as given)."""
    base = P.graph_mask_fn(prune, graph.tensors, graph.outputs)
    criterion = P.criterion(prune)
    if prune.method != "weight" or criterion == "magnitude":
        return base
    return lambda arrays, k: base(weight_scores_of(graph, arrays, criterion, x, y), k)
