"""Pruning any weighted layer: conv filters as units, k by layer name, per-layer k for gradual and iterative."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from src.pruning import masks as M
from src.pruning import plan as P
from src.pruning import schedules as S

RNG = np.random.default_rng(0)
CONV = RNG.normal(size=(5, 5, 1, 20)).astype(np.float32)
CONV2 = RNG.normal(size=(5, 5, 20, 50)).astype(np.float32)
FC1, FC2 = RNG.normal(size=(800, 500)).astype(np.float32), RNG.normal(size=(500, 10)).astype(np.float32)
LENET5 = [CONV, CONV2, FC1, FC2]
NAMES = ["conv1", "conv2", "dense1", "dense2"]


def prune_cfg(**kw) -> SimpleNamespace:
    base = dict(method="weight", k=0.0, layer_k=None, scope="layer", min_keep=0.0, prune_last=False, seed=0)
    return SimpleNamespace(**{**base, **kw})


def test_unit_pruning_of_a_conv_kernel_removes_whole_filters_by_l2_norm() -> None:
    mask = M.unit_mask(CONV2, 40)
    kept = mask.reshape(-1, 50).all(axis=0)
    assert mask.shape == CONV2.shape and kept.sum() == 30
    assert (mask.reshape(-1, 50).any(axis=0) == kept).all()  # each filter wholly kept or wholly pruned
    norms = np.linalg.norm(CONV2.reshape(-1, 50), axis=0)
    assert norms[~kept].max() <= norms[kept].min()
    assert (M.bias_masks([mask])[0] == kept).all()


def test_global_unit_scores_span_dense_columns_and_conv_filters() -> None:
    masks = M.global_masks(LENET5, "unit", 50, n_pruned=3)
    units = [m.reshape(-1, m.shape[-1]).all(axis=0) for m in masks[:3]]
    assert sum(int((~u).sum()) for u in units) == M.n_to_prune(50, 20 + 50 + 500)
    assert masks[3].all()


def test_layer_k_by_name_prunes_the_named_layers_and_the_logits_only_when_named() -> None:
    han = prune_cfg(layer_k={"conv1": 34, "conv2": 88, "dense1": 92, "dense2": 81})
    assert P.n_pruned_layers(han, 4, NAMES) == 4 and P.configured_k(han, NAMES) == [34, 88, 92, 81]
    masks, (pruned, _) = P.oneshot(han, LENET5, [None] * 4, NAMES)
    assert [round(100 * s) for s in M.mask_sparsity(masks)] == [34, 88, 92, 81]
    partial = prune_cfg(k=50, layer_k={"conv2": 90})
    assert P.n_pruned_layers(partial, 4, NAMES) == 3 and P.configured_k(partial, NAMES) == [50, 90, 50]
    masks, _ = P.oneshot(partial, LENET5, [None] * 4, NAMES)
    assert [round(100 * s) for s in M.mask_sparsity(masks)] == [50, 90, 50, 0]
    assert P.mean_k(partial, 3, NAMES) == pytest.approx(190 / 3)
    assert P.unknown_layer_names(prune_cfg(layer_k={"conv3": 1, "dense1": 2}), NAMES) == ["conv3"]


def test_per_layer_gradual_plan_follows_each_layers_cubic_on_common_steps() -> None:
    plan = S.layer_gradual_plan(1000, 100, 0.0, [90.0, 50.0], 0.7)
    scalar = [S.gradual_plan(1000, 100, 0.0, k, 0.7) for k in (90.0, 50.0)]
    assert [s for s, _ in plan] == [s for s, _ in scalar[0]]
    assert [ks for _, ks in plan] == [[a, b] for (_, a), (_, b) in zip(*scalar, strict=True)]
    assert plan[-1][1] == [90.0, 50.0]
    assert S.layer_gradual_plan(10, 5, 60.0, [40.0], 1.0)[0][1] == [40.0]  # below initial_k: starts at its k


def test_per_layer_iterative_targets_end_at_each_layers_k() -> None:
    targets = S.layer_iterative_targets([90.0, 50.0], 3)
    assert len(targets) == 3 and targets[-1] == [90.0, 50.0]
    assert [t[0] for t in targets] == S.iterative_targets(90.0, 3)
    assert all(a[i] < b[i] for a, b in zip(targets[:-1], targets[1:], strict=True) for i in range(2))
