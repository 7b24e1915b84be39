"""Which dependency groups a unit job removes (pure): k percent of each group family, or of all groups ranked
together (``prune.scope=global``), lowest score first, or at random (``random_unit``).

A *family* is the groups made by the same producers (a conv's filters; the channels of a residual stage, which every
conv feeding its adds makes): removing a share of each family is what "k% of each layer" is for a chain. Every family
keeps at least one group (a layer of zero filters does not build) and, with global scope, ``min_keep`` (a fraction of
the family, or a count) as the weight and unit floors do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from src.pruning.groups import Group


def families(groups: Sequence[Group]) -> list[list[int]]:
    """Indices of the prunable groups, by family (the sorted names of their producers), in order of appearance."""
    by_key: dict[tuple[str, ...], list[int]] = {}
    for i, g in enumerate(groups):
        if g.prunable:
            by_key.setdefault(tuple(sorted({n for n, _ in g.producers()})), []).append(i)
    return list(by_key.values())


def family_name(groups: Sequence[Group], family: Sequence[int]) -> str:
    """A family's producers, joined by '+' (e.g. ``s1b1_conv2+s1b2_conv2+stem``)."""
    return "+".join(sorted({n for n, _ in groups[family[0]].producers()}))


def _floor(size: int, min_keep: float) -> int:
    """Groups a family of ``size`` keeps at least: 1, or min_keep (a fraction or a count), never more than size."""
    wanted = math.ceil(min_keep * size) if min_keep < 1 else int(min_keep)
    return min(size, max(1, wanted))


def removed_by_family(scores: np.ndarray, fams: Sequence[Sequence[int]], k: Sequence[float]) -> list[int]:
    """Per family, round(k% of its groups) with the lowest scores (ties: first in order), at most all but one;
    groups without a score (NaN) are kept. Returns group indices, sorted."""
    out: list[int] = []
    for members, k_family in zip(fams, k, strict=True):
        ranked = [i for i in members if not np.isnan(scores[i])]
        n = min(int(math.floor(k_family / 100 * len(members) + 0.5)), len(members) - 1, len(ranked))
        order = sorted(ranked, key=lambda i: (scores[i], i))
        out += order[:max(n, 0)]
    return sorted(out)


def removed_globally(scores: np.ndarray, fams: Sequence[Sequence[int]], k: float, min_keep: float) -> list[int]:
    """round(k% of all prunable groups), ranked together by their score over their family's mean score (so wide and
    narrow layers compare), each family keeping :func:`_floor` groups. Returns group indices, sorted."""
    total = sum(len(f) for f in fams)
    target = int(math.floor(k / 100 * total + 0.5))
    candidates = []
    for f, members in enumerate(fams):
        ranked = [i for i in members if not np.isnan(scores[i])]
        mean = float(np.mean([scores[i] for i in ranked])) if ranked else 0.0
        candidates += [((scores[i] / mean) if mean > 0 else 0.0, i, f) for i in ranked]
    left = [len(m) - _floor(len(m), min_keep) for m in fams]
    out = []
    for _, i, f in sorted(candidates):
        if len(out) == target:
            break
        if left[f] > 0:
            out.append(i)
            left[f] -= 1
    return sorted(out)


def random_scores(n: int, seed: int) -> np.ndarray:
    """Scores that rank groups at random (``random_unit``): a seeded uniform draw."""
    return np.random.default_rng(seed).random(n)
