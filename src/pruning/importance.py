"""Importance criteria: how a unit job ranks dependency groups (src/pruning/groups), as pure functions of per-slice
statistics (src/training/channel_stats computes them from a Keras model).

| criterion | a group's score | from |
|---|---|---|
| ``l2`` (default) | sqrt(sum of its producers' squared kernel entries) | today's unit rule, per group |
| ``l1`` | sum of its producers' absolute kernel entries | Li et al. 2017 |
| ``bn_scale`` | sum of the |gamma| of its BatchNormalizations | network slimming, Liu et al. 2017 |
| ``taylor`` | sum over all its slices of (w * dL/dw)^2 on a training batch | Molchanov et al. 2019 |

A group with no statistic under its criterion (``bn_scale`` where no BatchNormalization follows) has no score (NaN):
it is not ranked, and kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from src.pruning.groups import Group

UNIT_CRITERIA = ("l2", "l1", "bn_scale", "taylor")
WEIGHT_CRITERIA = ("magnitude",)
DEFAULT_CRITERION = {"unit": "l2", "weight": "magnitude"}


def group_scores(groups: Sequence[Group], stats: Mapping[tuple[str, str, int], float], criterion: str
                 ) -> np.ndarray:
    """One score per group (higher: more important), NaN where none of its slices has a statistic."""
    if criterion not in UNIT_CRITERIA:
        raise ValueError(f"unknown unit criterion {criterion!r}: use one of {', '.join(UNIT_CRITERIA)}")
    scores = np.full(len(groups), np.nan)
    for i, g in enumerate(groups):
        found = [stats[s] for s in g.slices if s in stats]
        if found:
            total = float(np.sum(found))
            scores[i] = np.sqrt(total) if criterion == "l2" else total
    return scores
