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

Weight pruning ranks the entries of each tensor by a score of the same shape (:func:`weight_scores`):

| criterion | an entry's score | from |
|---|---|---|
| ``magnitude`` (default) | abs(w) | Han et al. 2015 |
| ``taylor`` | abs(w * dL/dw) on a training batch | ShrinkBench's MagGrad (Blalock et al. 2020) |
| ``activation`` | abs(w) * the L2 norm of its input feature over a batch | ShrinkBench's MagAct; Wanda |

A tensor whose input is not known (a recurrent kernel, a nested layer) is scored by abs(w) under ``activation``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from src.pruning.groups import Group

UNIT_CRITERIA = ("l2", "l1", "bn_scale", "taylor")
WEIGHT_CRITERIA = ("magnitude", "taylor", "activation")
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


def weight_scores(arrays: Sequence[np.ndarray], criterion: str, grads: Sequence[np.ndarray | None] | None = None,
                  input_norms: Sequence[tuple[int, np.ndarray] | None] | None = None) -> list[np.ndarray]:
    """One non-negative score per entry of each tensor (higher: kept longer). ``grads``: dL/dw per tensor (taylor);
    ``input_norms``: per tensor (axis, norm of each input feature along it) or None (activation)."""
    if criterion not in WEIGHT_CRITERIA:
        raise ValueError(f"unknown weight criterion {criterion!r}: use one of {', '.join(WEIGHT_CRITERIA)}")
    out = []
    for i, a in enumerate(arrays):
        score = np.abs(np.asarray(a, dtype=np.float32))
        if criterion == "taylor" and grads is not None and grads[i] is not None:
            score = score * np.abs(np.asarray(grads[i], dtype=np.float32))
        elif criterion == "activation" and input_norms is not None and input_norms[i] is not None:
            axis, norms = input_norms[i]
            shape = [1] * a.ndim
            shape[axis] = -1
            score = score * np.asarray(norms, dtype=np.float32).reshape(shape)
        out.append(score)
    return out
