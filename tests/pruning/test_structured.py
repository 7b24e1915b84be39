"""Which groups a unit job removes (src/pruning/structured.py) and how criteria score them
(src/pruning/importance.py), on hand-built groups and scores."""

from __future__ import annotations

import numpy as np
import pytest

from src.pruning.groups import Group, Node, groups
from src.pruning.importance import group_scores
from src.pruning.structured import families, random_scores, removed_by_family, removed_globally


def _residual() -> list[Group]:
    """conv1 (8 filters) -> bn1 -> relu -> conv2 (8) -> bn2 -> add(relu, bn2) -> conv3 (4) -> logits."""
    nodes = [Node("x", "input", channels=1), Node("conv1", "produce", ("x",), 8), Node("bn1", "pass", ("conv1",), 8),
             Node("relu", "pass", ("bn1",), 8, consumes=False), Node("conv2", "produce", ("relu",), 8),
             Node("bn2", "pass", ("conv2",), 8), Node("add", "merge", ("relu", "bn2"), 8),
             Node("conv3", "produce", ("add",), 4), Node("logits", "produce", ("conv3",), 10)]
    return groups(nodes, ["logits"])


def test_families_are_the_groups_of_the_same_producers() -> None:
    found = _residual()
    fams = families(found)
    assert sorted(len(f) for f in fams) == [4, 8]
    residual = next(f for f in fams if len(f) == 8)
    assert all({n for n, _ in found[i].producers()} == {"conv1", "conv2"} for i in residual)


def test_k_percent_of_each_family_the_lowest_scores_first() -> None:
    scores = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 0.5, 8.0])
    assert removed_by_family(scores, [[0, 1, 2, 3], [4, 5, 6, 7]], [50, 25]) == [1, 3, 6]
    assert removed_by_family(scores, [[0, 1, 2, 3]], [100]) == [1, 2, 3]  # every family keeps one group
    assert removed_by_family(scores, [[0, 1, 2, 3]], [0]) == []
    assert removed_by_family(np.array([1.0, np.nan, 0.5]), [[0, 1, 2]], [100]) == [0, 2]  # unscored: kept


def test_global_ranks_relative_to_the_family_and_keeps_the_floor() -> None:
    # family A's scores are 100x family B's: raw ranking would take all of B; relative ranking takes from both
    scores = np.array([100.0, 200.0, 300.0, 400.0, 1.0, 2.0, 3.0, 4.0])
    fams = [[0, 1, 2, 3], [4, 5, 6, 7]]
    out = removed_globally(scores, fams, 50, 0.0)
    assert out == [0, 1, 4, 5]
    assert removed_globally(scores, fams, 100, 0.5) == [0, 1, 4, 5]  # min_keep half of each family
    assert len(removed_globally(scores, fams, 100, 0.0)) == 6  # never a family of zero


def test_criteria_score_a_group_by_its_slices() -> None:
    found = _residual()
    g = next(i for i, grp in enumerate(found) if ("conv1", "out", 2) in grp.slices)
    stats = {("conv1", "out", 2): 9.0, ("conv2", "out", 2): 16.0, ("bn1", "in", 2): 0.5, ("bn2", "in", 2): 0.25}
    assert group_scores(found, stats, "l2")[g] == pytest.approx(np.sqrt(9 + 16 + 0.5 + 0.25))
    assert group_scores(found, stats, "l1")[g] == pytest.approx(25.75)
    assert np.isnan(group_scores(found, stats, "taylor")).sum() == len(found) - 1  # the others have no statistic
    with pytest.raises(ValueError, match="unknown unit criterion"):
        group_scores(found, stats, "fpgm")


def test_random_scores_are_seeded() -> None:
    assert np.array_equal(random_scores(10, 3), random_scores(10, 3))
    assert not np.array_equal(random_scores(10, 3), random_scores(10, 4))


def test_weight_scores_of_each_criterion() -> None:
    from src.pruning.importance import weight_scores

    w = np.array([[1.0, -2.0], [3.0, -0.5]])
    g = np.array([[0.1, 1.0], [0.0, -2.0]])
    (magnitude,) = weight_scores([w], "magnitude")
    (taylor,) = weight_scores([w], "taylor", grads=[g])
    (activation,) = weight_scores([w], "activation", input_norms=[(0, np.array([10.0, 1.0]))])
    np.testing.assert_allclose(magnitude, np.abs(w))
    np.testing.assert_allclose(taylor, [[0.1, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(activation, [[10.0, 20.0], [3.0, 0.5]])  # row i scaled by input feature i's norm
    (unknown_input,) = weight_scores([w], "activation", input_norms=[None])
    np.testing.assert_allclose(unknown_input, np.abs(w))
    with pytest.raises(ValueError, match="unknown weight criterion"):
        weight_scores([w], "fisher")
