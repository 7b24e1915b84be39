"""Prunable tensors as data (src/pruning/tensors.py) and the graph-model plan (src/pruning/plan.graph_*): where a
tensor's units are, unit matrices across a layer's tensors, masks per tensor and per unit, names by prefix."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from src.pruning import masks as M
from src.pruning import plan as P
from src.pruning import tensors as T

LSTM_UNITS = 3
LSTM = [T.Tensor("lstm/kernel", "lstm", "LSTM", (5, 4 * LSTM_UNITS), -1, gates=4),
        T.Tensor("lstm/recurrent_kernel", "lstm", "LSTM", (LSTM_UNITS, 4 * LSTM_UNITS), -1, gates=4),
        T.Tensor("lstm/bias", "lstm", "LSTM", (4 * LSTM_UNITS,), -1, gates=4, ranked=False)]


def test_gate_major_units_gather_every_gate_column() -> None:
    """An LSTM unit u is columns u, U+u, 2U+u, 3U+u: its unit-view column holds exactly those entries."""
    t = LSTM[0]
    a = np.arange(np.prod(t.shape), dtype=float).reshape(t.shape)
    view = T.unit_view(a, t)
    assert view.shape == (5 * 4, LSTM_UNITS)
    for u in range(LSTM_UNITS):
        assert sorted(view[:, u]) == sorted(a[:, [g * LSTM_UNITS + u for g in range(4)]].ravel())


def test_unit_major_repeats_follow_their_channel() -> None:
    """A depthwise bias with multiplier 2 is (channel, multiple) flattened: channel c owns entries 2c, 2c+1."""
    t = T.Tensor("dw/bias", "dw", "DepthwiseConv2D", (6,), 0, repeat=2, ranked=False)
    keep = T.expand_units(np.array([True, False, True]), t)
    assert keep.tolist() == [True, True, False, False, True, True]


def test_heads_on_a_middle_axis() -> None:
    """A query kernel (d, heads, dim): a head is a slice of axis 1."""
    t = T.Tensor("mha/query/kernel", "mha", "MultiHeadAttention", (4, 3, 2), 1)
    keep = T.expand_units(np.array([False, True, True]), t)
    assert not keep[:, 0, :].any() and keep[:, 1:, :].all()


def test_unit_pruning_ranks_a_unit_over_all_its_tensors() -> None:
    """The unit with the smallest L2 norm over kernel AND recurrent kernel goes, with its bias, in every tensor;
    a unit small in one tensor but large in the other stays."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=t.shape) for t in LSTM]
    cols = [[g * LSTM_UNITS + u for g in range(4)] for u in range(LSTM_UNITS)]
    arrays[0][:, cols[0]] *= 1e-3  # unit 0: tiny input weights, normal recurrent weights
    arrays[0][:, cols[1]] *= 0.5
    arrays[1][:, cols[1]] *= 1e-3  # unit 1: small in both -> the weakest overall
    masks = T.masks(arrays, LSTM, "unit", {"lstm": 100 / 3})
    for m in masks:
        assert not m[..., cols[1]].any() and m[..., cols[0] + cols[2]].all()


def test_weight_pruning_is_per_ranked_tensor_and_keeps_biases() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=t.shape) for t in LSTM]
    masks = T.masks(arrays, LSTM, "weight", {"lstm/kernel": 50, "lstm/recurrent_kernel": 25})
    assert [1 - m.mean() for m in masks] == [0.5, 0.25, 0.0]
    np.testing.assert_array_equal(masks[0], M.weight_mask(arrays[0], 50))


def test_a_chain_kernel_as_a_tensor_gives_the_chain_masks() -> None:
    """A Dense kernel with its units on the last axis: the same masks as src/pruning/masks.py's chain functions."""
    w = np.random.default_rng(2).normal(size=(20, 8))
    t = [T.Tensor("d/kernel", "d", "Dense", w.shape)]
    np.testing.assert_array_equal(T.masks([w], t, "unit", {"d": 40})[0], M.unit_mask(w, 40))
    np.testing.assert_array_equal(T.masks([w], t, "weight", {"d/kernel": 40})[0], M.weight_mask(w, 40))


def test_global_scope_prunes_the_total_with_the_floor_held() -> None:
    rng = np.random.default_rng(3)
    tensors = [T.Tensor("a/kernel", "a", "Dense", (50, 4)), T.Tensor("b/kernel", "b", "Dense", (10, 4))]
    arrays = [rng.normal(size=(50, 4)), rng.normal(size=(10, 4)) * 1e-3]  # b is far smaller: global empties it
    masks = T.masks(arrays, tensors, "weight", {"a/kernel": 50, "b/kernel": 50}, "global", min_keep=0.1)
    assert sum(int((~m).sum()) for m in masks) == M.n_to_prune(50, 240)
    assert int(masks[1].sum()) == 4  # the floor: ceil(0.1 * 40)


def test_random_baseline_keeps_the_counts() -> None:
    rng = np.random.default_rng(4)
    arrays = [rng.normal(size=t.shape) for t in LSTM]
    magnitude = T.masks(arrays, LSTM, "unit", {"lstm": 67})
    randomly = T.masks(arrays, LSTM, "unit", {"lstm": 67}, seed=0)
    assert [int(m.sum()) for m in randomly] == [int(m.sum()) for m in magnitude]


def test_longest_name_wins() -> None:
    keys = {"backbone": 50.0, "backbone/block1": 80.0}
    assert T.item_of("backbone/block1/kernel", keys) == "backbone/block1"
    assert T.item_of("backbone/block2/kernel", keys) == "backbone"
    assert T.item_of("backbone2/kernel", keys) is None  # a prefix counts only at a "/"


def _prune(method: str = "weight", layer_k=None, prune_last: bool = False) -> SimpleNamespace:
    return SimpleNamespace(method=method, k=60.0, layer_k=layer_k, prune_last=prune_last, scope="layer",
                           min_keep=0.01, seed=0)


GRAPH = [T.Tensor("conv/kernel", "conv", "Conv2D", (3, 3, 1, 4)), T.Tensor("conv/bias", "conv", "Conv2D", (4,),
                                                                               ranked=False),
         T.Tensor("net/head/kernel", "net/head", "Dense", (4, 10))]


def test_output_layers_are_left_whole_unless_configured() -> None:
    assert P.graph_items(_prune(), GRAPH, ["net/head"]) == ["conv/kernel"]
    assert P.graph_items(_prune(prune_last=True), GRAPH, ["net/head"]) == ["conv/kernel", "net/head/kernel"]
    assert P.graph_items(_prune(layer_k={"net": 30}), GRAPH, ["net/head"]) == ["conv/kernel", "net/head/kernel"]
    assert P.graph_k(_prune(layer_k={"net": 30}), GRAPH, ["net/head"]) == {"conv/kernel": 60.0,
                                                                          "net/head/kernel": 30.0}


@pytest.mark.parametrize(("method", "key", "unknown"), [("weight", "conv/kernel", False), ("weight", "nope", True),
                                                         ("unit", "conv", False), ("unit", "conv/kernel", True)])
def test_unknown_names(method: str, key: str, unknown: bool) -> None:
    """Unit pruning takes layer names; weight pruning a layer's or a tensor's name."""
    assert P.unknown_graph_names(_prune(method, {key: 50}), GRAPH) == ([key] if unknown else [])


def test_graph_mask_fn_masks_a_removed_units_bias() -> None:
    rng = np.random.default_rng(5)
    arrays = [rng.normal(size=t.shape) for t in GRAPH]
    masks = P.graph_mask_fn(_prune("unit"), GRAPH, ["net/head"])(arrays, 50.0)
    dropped = ~masks[0].reshape(-1, 4).any(axis=0)
    assert dropped.sum() == 2 and (masks[1] == ~dropped).all() and masks[2].all()
