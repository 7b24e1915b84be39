"""Masks on hand-made matrices: exact counts, ties, extremes, last layer, whole columns."""

import numpy as np
import pytest

from src.pruning import masks as M


def test_n_to_prune_rounds_half_up_and_rejects_out_of_range():
    assert M.n_to_prune(50, 5) == 3  # 2.5 -> 3
    assert M.n_to_prune(25, 10) == 3  # 2.5 -> 3
    assert M.n_to_prune(24, 10) == 2
    assert M.n_to_prune(0, 7) == 0 and M.n_to_prune(100, 7) == 7
    with pytest.raises(ValueError):
        M.n_to_prune(101, 10)
    with pytest.raises(ValueError):
        M.n_to_prune(-1, 10)


def test_weight_mask_zeroes_smallest_magnitudes():
    w = np.array([[0.5, -0.1], [-0.9, 0.2], [0.05, -0.3]], dtype=np.float32)
    keep = M.weight_mask(w, 50)  # 3 of 6 pruned: 0.05, -0.1, 0.2
    np.testing.assert_array_equal(keep, [[True, False], [True, False], [False, True]])


def test_weight_mask_ties_prune_exact_count_in_position_order():
    w = np.ones((4, 4), dtype=np.float32)
    keep = M.weight_mask(w, 25)
    assert (~keep).sum() == 4
    np.testing.assert_array_equal((~keep).ravel()[:4], True)


@pytest.mark.parametrize("k, expected", [(0, 0), (100, 12), (90, 11), (99, 12), (1, 0)])
def test_weight_mask_extremes(k, expected):
    w = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    assert (~M.weight_mask(w, k)).sum() == expected


def test_unit_mask_zeroes_whole_columns_with_smallest_l2():
    w = np.array([[3.0, 0.1, 1.0, 0.0], [4.0, 0.1, 1.0, 0.5]], dtype=np.float32)  # norms 5, .14, 1.41, .5
    keep = M.unit_mask(w, 50)
    np.testing.assert_array_equal(keep, [[True, False, True, False]] * 2)


@pytest.mark.parametrize("k", [10, 40, 90])
def test_unit_mask_keeps_or_drops_every_column_whole(k):
    """On a random kernel every column is kept whole or dropped whole, and exactly round(k% of the columns) go,
    those of the smallest L2 norm."""
    w = np.random.default_rng(k).normal(size=(20, 30)).astype(np.float32)
    keep = M.unit_mask(w, k)
    assert (keep.all(axis=0) | ~keep.any(axis=0)).all()  # no column is part kept
    dropped = ~keep.any(axis=0)
    assert dropped.sum() == M.n_to_prune(k, 30)
    assert np.linalg.norm(w[:, dropped], axis=0).max() < np.linalg.norm(w[:, ~dropped], axis=0).min()


def test_layer_masks_leave_final_layer_unless_configured():
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(6, 5)), rng.normal(size=(5, 4)), rng.normal(size=(4, 3))]
    masks = M.layer_masks(kernels, "weight", 50)
    assert masks[-1].all()
    assert [int((~m).sum()) for m in masks[:-1]] == [15, 10]
    masks = M.layer_masks(kernels, "weight", 50, prune_last=True)
    assert (~masks[-1]).sum() == 6


def test_layer_masks_per_layer_k_and_errors():
    kernels = [np.ones((10, 10)), np.ones((10, 10)), np.ones((10, 2))]
    masks = M.layer_masks(kernels, "weight", [10, 90])
    assert [int((~m).sum()) for m in masks] == [10, 90, 0]
    with pytest.raises(ValueError):
        M.layer_masks(kernels, "weight", [10])
    with pytest.raises(ValueError):
        M.layer_masks(kernels, "magic", 10)
    assert all(m.all() for m in M.layer_masks(kernels, "none", 90))


def test_unit_pruning_removes_bias_too_but_weight_pruning_does_not():
    kernels = [np.array([[1.0, 0.01], [1.0, 0.01]]), np.ones((2, 2))]
    biases = [np.array([0.5, 0.7]), np.array([0.1, 0.1])]
    masks = M.layer_masks(kernels, "unit", 50)
    pk, pb = M.apply_masks(kernels, biases, masks, "unit")
    np.testing.assert_array_equal(pk[0][:, 1], 0)
    np.testing.assert_array_equal(pb[0], [0.5, 0.0])
    np.testing.assert_array_equal(pb[1], [0.1, 0.1])
    masks = M.layer_masks(kernels, "weight", 50)
    _, pb = M.apply_masks(kernels, biases, masks, "weight")
    np.testing.assert_array_equal(pb[0], [0.5, 0.7])


def test_sparsity_counts_exact_zeros():
    assert M.sparsity([np.array([0.0, 1.0]), np.zeros(2)]) == 0.75


@pytest.mark.parametrize("k", [0, 1, 33.3, 50, 90, 99.5, 100])
def test_partition_mask_equals_stable_argsort_with_many_ties(k):
    rng = np.random.default_rng(3)
    w = rng.integers(-4, 5, size=(37, 23)).astype(np.float32)  # 9 values: ties everywhere
    n = M.n_to_prune(k, w.size)
    expected = np.ones(w.size, dtype=bool)
    expected[np.argsort(np.abs(w).ravel(), kind="stable")[:n]] = False
    assert np.array_equal(M.weight_mask(w, k).ravel(), expected)
