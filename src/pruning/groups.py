"""Dependency groups: which channels of a model must be removed together (DepGraph, Fang et al. CVPR 2023), as pure
functions over the model graph described as data (no Keras here).

A model is a list of :class:`Node` in topological order. Each node's output has ``channels`` (its last axis). How a
node's output channels relate to its inputs' is its ``role``:

- ``produce``: new channels made from all input channels (Dense, Conv, EinsumDense, a separable conv's pointwise
  kernel): each output channel is a fresh item; the inputs are *consumed* (the kernel's input slices).
- ``pass``: channel c out is channel c in (BatchNormalization, activations, pooling, padding, dropout, resizing,
  global pooling): its per-channel parameters (BN gamma, beta, moving statistics) are consumed slices.
- ``depthwise``: channel c in gives channels c*m .. c*m+m-1 out (``multiplier`` m): one item, its kernel channel.
- ``merge``: elementwise over inputs of equal channels (Add, Subtract, Multiply, Average, Maximum, Minimum): channel c
  of every input is one item.
- ``concat``: the inputs' channels one after the other (Concatenate on the last axis).
- ``flatten``: ``(H, W, C)`` to ``H*W*C`` in Keras's NHWC order: row (h*W + w)*C + c is channel c (``spatial`` = H*W).
- ``attention``: self-attention with ``heads`` heads (MultiHeadAttention on one input): its input channels are
  consumed (query, key and value kernel rows), each head is an item of its own (``(node, "head", h)``: its query,
  key and value slices and the output projection's rows), and its output channels are kept whole.
- ``block``: anything that mixes channels otherwise (Reshape, Permute, attention, a layer not known): every channel
  it reads or writes is kept whole.

The model's inputs and the channels its outputs carry are kept whole too, and so are a producer's whose activation
is not 0 at 0 (a sigmoid: a removed channel would not be a zero channel). A :class:`Group` lists, per item, the
slices that go with it: ``(node, "out", index)`` for a producer's output channel and ``(node, "in", index)`` for an
input position of a consumer (a kernel row or input channel, a BN parameter, a depthwise channel), ``(node, "head", h)``
an attention head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

ROLES = ("input", "produce", "pass", "depthwise", "merge", "concat", "flatten", "attention", "block")


@dataclass(frozen=True)
class Node:
    """One layer: ``name`` (its path), ``role`` (see the module doc), ``inputs`` (names of the nodes it reads, in
    order), ``channels`` (of its output), ``multiplier`` (depthwise) or ``spatial`` (flatten: H*W)."""

    name: str
    role: str
    inputs: tuple[str, ...] = ()
    channels: int = 0
    multiplier: int = 1
    spatial: int = 1
    heads: int = 0  # attention: number of heads
    consumes: bool = True  # pass nodes: whether it has per-channel parameters (BN: yes; ReLU: no)
    zero_stays_zero: bool = True  # produce nodes: f(0) = 0 for its activation (sigmoid: no, so its channels stay)


@dataclass
class Group:
    """Channels removed together: ``slices`` of (node, "out" | "in", index); ``kept_why``: non-empty when the group
    touches the model's inputs or outputs or a blocking layer, so it stays."""

    slices: list[tuple[str, str, int]] = field(default_factory=list)
    kept_why: str = ""

    @property
    def prunable(self) -> bool:
        return not self.kept_why

    def producers(self) -> list[tuple[str, int]]:
        """(node, index) of the slices that make the group: output channels and attention heads."""
        return [(n, i) for n, side, i in self.slices if side in ("out", "head")]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def groups(nodes: Sequence[Node], outputs: Sequence[str]) -> list[Group]:
    """The dependency groups of a model (``outputs``: the nodes whose output is a model output), one per item, in
    order of first appearance. ValueError if a node reads an unknown node or channel counts disagree."""
    items = _UnionFind()
    blocked: dict[int, str] = {}  # item -> why it stays
    owner: dict[int, tuple[str, str, int]] = {}  # fresh item -> its slice (producer, "out" | "head", index)
    consumed: list[tuple[int, str, int]] = []  # (item, consumer, input position)
    out: dict[str, list[int]] = {}

    def fresh(n: int, why: str = "", node: str = "", side: str = "out") -> list[int]:
        new = [items.add() for _ in range(n)]
        for c, i in enumerate(new):
            if why:
                blocked[i] = why
            elif node:
                owner[i] = (node, side, c)
        return new

    for node in nodes:
        if node.role not in ROLES:
            raise ValueError(f"node {node.name}: unknown role {node.role!r}")
        missing = [i for i in node.inputs if i not in out]
        if missing:
            raise ValueError(f"node {node.name} reads {missing}, which come later or not at all")
        ins = [out[i] for i in node.inputs]
        if node.role == "input":
            out[node.name] = fresh(node.channels, why=f"{node.name}: the model's input")
        elif node.role == "produce":
            for channels in ins:
                consumed += [(item, node.name, p) for p, item in enumerate(channels)]
            out[node.name] = (fresh(node.channels, node=node.name) if node.zero_stays_zero else
                              fresh(node.channels, why=f"{node.name}: its activation is not 0 at 0"))
        elif node.role == "attention":
            consumed += [(item, node.name, p) for p, item in enumerate(ins[0])]
            fresh(node.heads, node=node.name, side="head")
            out[node.name] = fresh(node.channels, why=f"{node.name}: an attention output")
        elif node.role == "block":
            for channels in ins:
                for item in channels:
                    blocked.setdefault(items.find(item), f"{node.name}: mixes channels")
            out[node.name] = fresh(node.channels, why=f"{node.name}: mixes channels")
        elif node.role in ("pass", "depthwise"):
            (channels,) = ins
            if node.consumes or node.role == "depthwise":
                consumed += [(item, node.name, p) for p, item in enumerate(channels)]
            out[node.name] = ([c for c in channels for _ in range(node.multiplier)] if node.role == "depthwise"
                              else list(channels))
        elif node.role == "merge":
            if len({len(c) for c in ins}) != 1:
                raise ValueError(f"node {node.name} merges inputs of {[len(c) for c in ins]} channels")
            for channels in ins[1:]:
                for a, b in zip(ins[0], channels, strict=True):
                    items.union(a, b)
            out[node.name] = list(ins[0])
        elif node.role == "concat":
            out[node.name] = [c for channels in ins for c in channels]
        elif node.role == "flatten":
            (channels,) = ins
            out[node.name] = list(channels) * node.spatial
        if node.role not in ("input", "block", "attention") and len(out[node.name]) != node.channels * (
                node.spatial if node.role == "flatten" else 1):
            raise ValueError(f"node {node.name}: {len(out[node.name])} channels from its inputs, "
                             f"{node.channels} declared")
    for name in outputs:
        for item in out[name]:
            blocked.setdefault(items.find(item), f"{name}: a model output")
    by_root: dict[int, Group] = {}
    for item, (node, side, c) in owner.items():
        by_root.setdefault(items.find(item), Group()).slices.append((node, side, c))
    for item, consumer, p in consumed:
        root = items.find(item)
        if root in by_root:
            by_root[root].slices.append((consumer, "in", p))
    for item, why in blocked.items():
        root = items.find(item)
        if root in by_root and not by_root[root].kept_why:
            by_root[root].kept_why = why
    return list(by_root.values())
