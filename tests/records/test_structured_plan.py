"""Which groups a structural unit job removes on a Keras model (src/records/structured_prune.GroupPlan): each
criterion ranks by its own statistic, ``prune.layer_k`` sets a family's k by a producer's name."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from src.records.structured_prune import GroupPlan
from tests.zoo import ZOO, mnist


def _prune(**kw) -> SimpleNamespace:
    return SimpleNamespace(**{"method": "unit", "k": 50.0, "layer_k": None, "scope": "layer", "min_keep": 0.01,
                              "seed": 0, "criterion": None, **kw})


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    model = ZOO["resnet"]()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.1, 2.0, layer.gamma.shape))
    x, y = mnist(n_train=64, n_test=0)[:2]
    return model, SimpleNamespace(x_train=x[..., None], y_train=y)


def _removed(model, splits, **kw) -> set[tuple]:
    return {tuple(sorted(g.slices)) for g in GroupPlan(model, _prune(**kw), splits).removed()}


def test_criteria_choose_differently_and_bn_scale_takes_the_smallest_gammas(resnet) -> None:
    model, splits = resnet
    chosen = {c: _removed(model, splits, criterion=c) for c in ("l2", "l1", "bn_scale", "taylor")}
    assert len({frozenset(v) for v in chosen.values()}) == 4
    assert len({len(v) for v in chosen.values()}) == 1
    plan = GroupPlan(model, _prune(criterion="bn_scale"), splits)
    gammas = {layer.name: np.asarray(layer.gamma) for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization)}
    score = lambda g: sum(gammas[n][i] for n, side, i in g.slices if n in gammas)  # noqa: E731
    removed = {id(g) for g in plan.removed()}
    for family in plan.families:
        out = [score(plan.groups[i]) for i in family if id(plan.groups[i]) in removed]
        kept = [score(plan.groups[i]) for i in family if id(plan.groups[i]) not in removed]
        assert max(out) <= min(kept)


def test_random_unit_is_seeded_and_layer_k_names_a_family(resnet) -> None:
    model, splits = resnet
    drawn = {seed: _removed(model, splits, method="random_unit", seed=seed) for seed in (1, 2)}
    assert drawn[1] == _removed(model, splits, method="random_unit", seed=1) and drawn[1] != drawn[2]
    plan = GroupPlan(model, _prune(layer_k={"block1_a_conv": 75.0}), splits)
    stem = plan.names.index("block1_a_conv")
    assert plan.k[stem] == 75.0 and all(k == 50.0 for i, k in enumerate(plan.k) if i != stem)
