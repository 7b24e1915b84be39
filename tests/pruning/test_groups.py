"""Dependency groups on hand-built graphs (src/pruning/groups.py): residual adds, concatenations, depthwise
channels, Flatten into Dense, blocking layers, inputs and outputs kept whole."""

from __future__ import annotations

import pytest

from src.pruning.groups import Node, groups


def _by_producer(found):
    return {tuple(sorted(g.producers())): g for g in found}


def test_a_residual_add_ties_both_branches_and_their_batchnorms() -> None:
    nodes = [Node("x", "input", channels=1), Node("conv1", "produce", ("x",), 8), Node("bn1", "pass", ("conv1",), 8),
             Node("relu", "pass", ("bn1",), 8, consumes=False), Node("conv2", "produce", ("relu",), 8),
             Node("bn2", "pass", ("conv2",), 8), Node("add", "merge", ("relu", "bn2"), 8),
             Node("gap", "pass", ("add",), 8, consumes=False), Node("logits", "produce", ("gap",), 10)]
    found = groups(nodes, ["logits"])
    prunable = [g for g in found if g.prunable]
    assert len(prunable) == 8 and len(found) == 18
    g = _by_producer(prunable)[(("conv1", 3), ("conv2", 3))]
    assert sorted(g.slices) == sorted([("conv1", "out", 3), ("conv2", "out", 3), ("bn1", "in", 3), ("bn2", "in", 3),
                                       ("conv2", "in", 3), ("logits", "in", 3)])
    assert all("model output" in g.kept_why for g in found if not g.prunable)


def test_concat_slices_follow_their_branch() -> None:
    nodes = [Node("x", "input", channels=1), Node("a", "produce", ("x",), 4), Node("b", "produce", ("x",), 3),
             Node("cat", "concat", ("a", "b"), 7), Node("c", "produce", ("cat",), 5), Node("out", "produce", ("c",), 2)]
    by = _by_producer(groups(nodes, ["out"]))
    assert sorted(by[(("b", 1),)].slices) == [("b", "out", 1), ("c", "in", 5)]
    assert sorted(by[(("a", 2),)].slices) == [("a", "out", 2), ("c", "in", 2)]


def test_a_depthwise_channel_and_its_multiples_go_with_the_filter_before() -> None:
    nodes = [Node("x", "input", channels=1), Node("a", "produce", ("x",), 4),
             Node("dw", "depthwise", ("a",), 8, multiplier=2), Node("b", "produce", ("dw",), 6),
             Node("out", "produce", ("b",), 2)]
    by = _by_producer(groups(nodes, ["out"]))
    assert sorted(by[(("a", 1),)].slices) == [("a", "out", 1), ("b", "in", 2), ("b", "in", 3), ("dw", "in", 1)]


def test_flatten_rows_of_a_channel_are_in_nhwc_order() -> None:
    nodes = [Node("x", "input", channels=1), Node("a", "produce", ("x",), 3), Node("flat", "flatten", ("a",), 3,
                                                                                   spatial=4),
             Node("out", "produce", ("flat",), 2)]
    by = _by_producer(groups(nodes, ["out"]))
    assert sorted(s for s in by[(("a", 1),)].slices if s[1] == "in") == [("out", "in", r) for r in (1, 4, 7, 10)]


def test_a_blocking_layer_keeps_what_it_touches() -> None:
    nodes = [Node("x", "input", channels=1), Node("a", "produce", ("x",), 4), Node("r", "block", ("a",), 4),
             Node("b", "produce", ("r",), 3), Node("out", "produce", ("b",), 2)]
    found = groups(nodes, ["out"])
    kept = {g.producers()[0][0]: g.kept_why for g in found if not g.prunable}
    assert kept.get("a") == "r: mixes channels" and [g.producers()[0][0] for g in found if g.prunable] == ["b"] * 3


def test_an_add_with_the_input_keeps_the_branch_whole() -> None:
    nodes = [Node("x", "input", channels=4), Node("a", "produce", ("x",), 4), Node("add", "merge", ("x", "a"), 4),
             Node("out", "produce", ("add",), 2)]
    assert not any(g.prunable for g in groups(nodes, ["out"]))


def test_bad_graphs_are_refused() -> None:
    with pytest.raises(ValueError, match="merges inputs of"):
        groups([Node("x", "input", channels=2), Node("a", "produce", ("x",), 3), Node("m", "merge", ("x", "a"), 3)],
               ["m"])
    with pytest.raises(ValueError, match="come later or not at all"):
        groups([Node("a", "produce", ("x",), 3)], ["a"])


def test_self_attention_heads_are_groups_of_their_own_and_its_output_stays() -> None:
    nodes = [Node("x", "input", channels=4), Node("embed", "produce", ("x",), 8),
             Node("mha", "attention", ("embed", "embed"), 8, heads=2), Node("ffn", "produce", ("mha",), 6),
             Node("out", "produce", ("ffn",), 2)]
    found = groups(nodes, ["out"])
    heads = [g for g in found if any(side == "head" for _, side, _ in g.slices)]
    assert [g.slices for g in heads] == [[("mha", "head", 0)], [("mha", "head", 1)]] and all(g.prunable for g in heads)
    embed = [g for g in found if ("embed", "out", 3) in g.slices]
    assert embed[0].prunable and ("mha", "in", 3) in embed[0].slices  # its query/key/value rows go with it
    ffn_in = [g for g in found if ("ffn", "in", 0) in g.slices]
    assert not ffn_in  # the attention output is kept whole: no group holds the ffn's input rows
