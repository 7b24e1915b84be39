"""Global-scope and random-baseline masks on hand-made matrices: thresholds across layers, floors, counts, seeds."""

import numpy as np
import pytest

from src.pruning import masks as M

LAST = np.ones((2, 2), dtype=np.float32)  # an unpruned logits layer


def test_global_weight_threshold_picks_across_layers():
    a = np.array([[0.9, -0.8], [0.7, 0.6]], dtype=np.float32)
    b = np.array([[0.05, -0.5, 0.65], [0.1, -0.2, 0.3]], dtype=np.float32)
    masks = M.global_masks([a, b, LAST], "weight", 50, n_pruned=2)  # 5 of 10: 0.05 0.1 0.2 0.3 0.5
    assert masks[0].all()
    np.testing.assert_array_equal(masks[1], [[False, False, True], [False, False, False]])
    assert masks[2].all()


def test_global_unit_scores_are_column_norms_over_the_layer_mean():
    a = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)  # norms 1 2 3, mean 2: scores .5 1 1.5
    b = np.array([[10.0, 20.0, 30.0, 40.0]], dtype=np.float32)  # mean 25: .4 .8 1.2 1.6
    masks = M.global_masks([a, b, LAST], "unit", 40, n_pruned=2)  # round(2.8) = 3 of 7 units
    np.testing.assert_array_equal(masks[0], [[False, True, True]])
    np.testing.assert_array_equal(masks[1], [[False, False, True, True]])


def test_global_ties_go_by_layer_then_position():
    masks = M.global_masks([np.ones((2, 2)), np.ones((2, 2)), LAST], "weight", 75, n_pruned=2)  # 6 of 8
    assert (~masks[0]).all() and (~masks[1]).ravel().tolist() == [True, True, False, False]


def test_global_floor_keeps_min_keep_and_moves_prunes_elsewhere():
    small = np.full((2, 5), 0.01, dtype=np.float32)  # the 10 smallest weights overall
    big = np.arange(1, 21, dtype=np.float32).reshape(4, 5)
    masks = M.global_masks([small, big, LAST], "weight", 50, n_pruned=2, min_keep=0.25)  # 15 of 30
    assert masks[0].sum() == 3  # ceil(0.25 * 10) kept
    assert (~masks[1]).sum() == 8  # the 15 - 7 remaining prunes: big's 8 smallest
    np.testing.assert_array_equal((~masks[1]).ravel(), np.arange(20) < 8)
    masks = M.global_masks([small, big, LAST], "weight", 50, n_pruned=2, min_keep=4)  # absolute count
    assert masks[0].sum() == 4 and (~masks[0]).sum() + (~masks[1]).sum() == 15


def test_global_floor_for_units_counts_columns_and_caps_the_total_when_it_must():
    a = np.array([[0.1, 0.1, 5.0]], dtype=np.float32)
    b = np.array([[1.0, 1.0, 1.0]], dtype=np.float32)
    masks = M.global_masks([a, b, LAST], "unit", 100, n_pruned=2, min_keep=1)  # floors allow only 4 of 6
    np.testing.assert_array_equal(masks[0], [[False, False, True]])
    np.testing.assert_array_equal(masks[1], [[False, False, True]])


@pytest.mark.parametrize("min_keep", [11, 0.95 + 0.1, -0.1, 2.5, float("nan")])
def test_global_floor_larger_than_a_layer_or_invalid_raises_naming_the_setting(min_keep):
    kernels = [np.ones((2, 5)), np.ones((4, 5)), LAST]  # 10 and 20 weights
    with pytest.raises(ValueError, match=r"prune\.min_keep"):
        M.global_masks(kernels, "weight", 50, n_pruned=2, min_keep=min_keep)
    with pytest.raises(ValueError, match=r"prune\.min_keep"):
        M.layer_masks(kernels, "unit", 50, scope="global", min_keep=6 if min_keep == 11 else min_keep)


def test_layer_masks_dispatches_scope_and_keeps_layer_default():
    rng = np.random.default_rng(1)
    kernels = [rng.normal(size=(6, 5)), rng.normal(size=(5, 4)), rng.normal(size=(4, 3))]
    for got, want in zip(M.layer_masks(kernels, "weight", 60, scope="global", min_keep=0.1),
                         M.global_masks(kernels, "weight", 60, 2, min_keep=0.1), strict=True):
        np.testing.assert_array_equal(got, want)
    assert sum(int((~m).sum()) for m in M.layer_masks(kernels, "weight", 60, True, scope="global")) == 37
    with pytest.raises(ValueError, match="one k"):
        M.layer_masks(kernels, "weight", [10, 20], scope="global")
    with pytest.raises(ValueError, match="scope"):
        M.layer_masks(kernels, "weight", 10, scope="network")


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_random_masks_prune_exact_counts_reproducibly(method):
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(30, 20)), rng.normal(size=(20, 10)), rng.normal(size=(10, 3))]
    masks = M.random_masks(kernels, method, 35, n_pruned=2, seed=7)
    for w, m in zip(kernels[:2], masks, strict=False):
        if method == "weight":
            assert (~m).sum() == M.n_to_prune(35, w.size)
        else:
            assert (~m.any(axis=0)).sum() == M.n_to_prune(35, w.shape[1])
            assert (m.all(axis=0) | ~m.any(axis=0)).all()  # whole columns
    assert masks[2].all()
    again = M.random_masks(kernels, method, 35, n_pruned=2, seed=7)
    other = M.random_masks(kernels, method, 35, n_pruned=2, seed=8)
    assert all((a == b).all() for a, b in zip(masks, again, strict=True))
    assert any((a != b).any() for a, b in zip(masks, other, strict=True))


def test_random_masks_are_not_magnitude_masks_and_accept_per_layer_k():
    w = np.arange(1, 401, dtype=np.float32).reshape(20, 20)
    masks = M.random_masks([w, w, LAST], "weight", [50, 10], n_pruned=2, seed=0)
    assert [int((~m).sum()) for m in masks] == [200, 40, 0]
    assert not (masks[0] == M.weight_mask(w, 50)).all()


def test_mask_sparsity_per_layer():
    masks = [np.array([[True, False], [False, False]]), np.ones((3, 3), dtype=bool)]
    assert M.mask_sparsity(masks) == [0.75, 0.0]


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_random_masks_of_one_seed_are_nested_across_k(method):
    rng = np.random.default_rng(0)
    kernels = [rng.standard_normal((20, 30)), rng.standard_normal((30, 10))]
    low, high = (M.random_masks(kernels, method, k, 1, seed=5)[0] for k in (40, 80))
    assert not np.any(high & ~low)  # every item kept at k=80 is kept at k=40
    assert M.mask_sparsity([low])[0] == pytest.approx(0.4) and M.mask_sparsity([high])[0] == pytest.approx(0.8)
