"""What a job's ``prune`` config removes: its masks (method, scope, random baseline) and the pruned weights.

Pure numpy on top of src/pruning/masks.py; shared by the one-shot path (src/job.py) and the retraining loops
(src/records/retrain_run.py), so both prune exactly alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from src.pruning import masks as M
from src.pruning import tensors as T
from src.pruning.importance import DEFAULT_CRITERION

RANDOM_METHODS = {"random": "weight", "random_unit": "unit"}  # random baseline -> the method whose counts it uses
UNIT_METHODS = ("unit", "random_unit")  # methods that delete whole units (their biases go too)

# prune.finetune.lr=null: the retraining lr as a fraction of the training lr, per schedule, chosen on the
# validation split (benchmarks/RESULTS.md "Retraining lr defaults"): at training lr 1e-3, retraining at 1e-3
# validated better than at 1e-4 in 9 of 10 comparisons over the schedules, the MLP (weight k=98, unit k=90) and
# LeNet-300-100 and LeNet-5 at Han et al.'s budgets (unit gradual preferred 1e-4, by 0.13 points). Until then every
# schedule took a tenth (Han et al. 2015); a schedule whose
# fraction differs from that counts the resolved lr in its jobs' identity (the job of an explicit prune.finetune.lr).
RETRAIN_LR_FRACTION = {"finetune": 1.0, "gradual": 1.0, "iterative": 1.0}
LEGACY_RETRAIN_LR_FRACTION = 0.1

MaskFn = Callable[[list[np.ndarray], float | list[float]], list[np.ndarray]]


def unused_settings(schedule: str, method: str, scope: str) -> tuple[str, ...]:
    """Prefixes of the ``prune.*`` settings that a job with this schedule, method and scope does not read:
    they are left out of its identity (job_hash) and of the settings a report compares."""
    return tuple(name for name, used in (("prune.finetune.", schedule != "oneshot"),
                                         ("prune.gradual.", schedule == "gradual"),
                                         ("prune.iterative.", schedule == "iterative"),
                                         ("prune.seed", method in RANDOM_METHODS),
                                         ("prune.criterion", method in ("weight", "unit")),
                                         ("prune.min_keep", scope == "global")) if not used)


def criterion(prune: Any) -> str:
    """The job's importance criterion: ``prune.criterion``, or when it is null its method's default (unit: l2,
    weight: magnitude; the random methods rank by none)."""
    given = getattr(prune, "criterion", None)
    return given if given is not None else DEFAULT_CRITERION.get(prune.method.removeprefix("random_"), "none")


def custom_criterion(prune: Any) -> bool:
    """Whether a weight or unit job ranks by a criterion other than its method's default (magnitude, l2)."""
    return prune.method in DEFAULT_CRITERION and criterion(prune) != DEFAULT_CRITERION[prune.method]


def retrain_lr(schedule: str, lr: float, finetune_lr: float | None) -> float:
    """The retraining learning rate: ``prune.finetune.lr``, or when it is null the schedule's fraction
    (RETRAIN_LR_FRACTION) of the training ``lr``."""
    return float(finetune_lr) if finetune_lr is not None else float(lr) * RETRAIN_LR_FRACTION[schedule]


def normalized_layer_k(prune: Any) -> list[float] | dict[str, float] | None:
    """``prune.layer_k`` with float values (``90`` and ``90.0`` are one setting: one job identity, one param)."""
    by_name = layer_k_by_name(prune)
    if by_name is not None:
        return by_name
    return None if prune.layer_k is None else [float(v) for v in prune.layer_k]


def layer_k_by_name(prune: Any) -> dict[str, float] | None:
    """``prune.layer_k`` when it names layers (``{conv2: 88, dense1: 92}``), else None."""
    layer_k = prune.layer_k
    return {str(n): float(v) for n, v in layer_k.items()} if isinstance(layer_k, Mapping) else None


def n_pruned_layers(prune: Any, n_layers: int, names: Sequence[str] = ()) -> int:
    """How many leading weighted layers are pruned: all but the logits layer, which is pruned with
    ``prune.prune_last`` or when ``prune.layer_k`` names it."""
    by_name = layer_k_by_name(prune)
    last_named = bool(by_name) and len(names) == n_layers and names[-1] in by_name
    return n_layers if prune.prune_last or last_named else n_layers - 1


def mean_k(prune: Any, n_pruned: int, names: Sequence[str] = ()) -> float:
    """The k (percent) a chart can place a run at: ``prune.k``, or the mean of the per-layer k over the
    ``n_pruned`` pruned layers."""
    if prune.layer_k is not None:
        ks = configured_k(prune, names)
        ks = ks[:n_pruned] if isinstance(ks, list) else [ks]
        return float(sum(ks) / max(len(ks), 1))
    return float(prune.k)


def mask_fn(prune: Any, n_layers: int, names: Sequence[str] = ()) -> MaskFn:
    """``masks(kernels, k)`` for ``prune``'s method and scope; k is one percentage, or one per pruned layer
    (layer scope). Random methods draw with ``prune.seed``, the same draw for the same k."""
    n = n_pruned_layers(prune, n_layers, names)
    if prune.method in RANDOM_METHODS:
        level = RANDOM_METHODS[prune.method]
        return lambda kernels, k: M.random_masks(kernels, level, k, n, prune.seed)
    return lambda kernels, k: M.layer_masks(kernels, prune.method, k, n == n_layers, scope=prune.scope,
                                            min_keep=prune.min_keep)


def configured_k(prune: Any, names: Sequence[str] = ()) -> float | list[float]:
    """``prune.k``, or one k per pruned layer: ``prune.layer_k`` as a list, or by name over ``names`` (the
    weighted layers, in order), where a layer it does not name gets ``prune.k``."""
    by_name = layer_k_by_name(prune)
    if by_name is not None:
        n = n_pruned_layers(prune, len(names), names)
        return [by_name.get(name, float(prune.k)) for name in names[:n]]
    return [float(v) for v in prune.layer_k] if prune.layer_k is not None else float(prune.k)


def unknown_layer_names(prune: Any, names: Sequence[str]) -> list[str]:
    """The names ``prune.layer_k`` gives that are not weighted (prunable) layers of the model."""
    by_name = layer_k_by_name(prune) or {}
    return [name for name in by_name if name not in names]


def apply(prune: Any, kernels: list[np.ndarray], biases: list[np.ndarray | None], masks: list[np.ndarray]
          ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Zero the masked weights; methods that delete units zero those units' biases too."""
    return M.apply_masks(kernels, biases, masks, "unit" if prune.method in UNIT_METHODS else "weight")


def oneshot(prune: Any, kernels: list[np.ndarray], biases: list[np.ndarray | None], names: Sequence[str] = ()
            ) -> tuple[list[np.ndarray], tuple[list[np.ndarray], list[np.ndarray | None]]]:
    """(masks, (pruned kernels, pruned biases)) of one-shot pruning as configured; ``names``: the weighted
    layers' names, in order (needed when ``prune.layer_k`` names layers)."""
    masks = mask_fn(prune, len(kernels), names)(kernels, configured_k(prune, names))
    return masks, apply(prune, kernels, biases, masks)


# Graph models (any Keras model: src/pruning/tensors.py records). An item is a ranked tensor (weight methods) or a
# unit layer (unit methods); the unit layers producing the model's outputs are left whole unless prune.prune_last or
# prune.layer_k names them. prune.layer_k names layers, tensors or nested models (the longest name wins).


def graph_items(prune: Any, tensors: Sequence[T.Tensor], outputs: Sequence[str]) -> list[str]:
    """The items the job prunes, in model order."""
    level = RANDOM_METHODS.get(prune.method, prune.method)
    if level == "none":
        return []
    named = layer_k_by_name(prune) or {}
    by_item = {t.name: t.layer for t in tensors}
    return [item for item in T.items(tensors, level)
            if prune.prune_last or by_item.get(item, item) not in outputs or T.item_of(item, named) is not None]


def graph_k(prune: Any, tensors: Sequence[T.Tensor], outputs: Sequence[str]) -> dict[str, float]:
    """Percent per pruned item: its ``prune.layer_k`` entry (longest matching name) or ``prune.k``."""
    named = layer_k_by_name(prune) or {}
    return {item: named[key] if (key := T.item_of(item, named)) is not None else float(prune.k)
            for item in graph_items(prune, tensors, outputs)}


def graph_configured_k(prune: Any, tensors: Sequence[T.Tensor], outputs: Sequence[str]) -> float | list[float]:
    """``prune.k``, or with ``prune.layer_k`` one k per pruned item (the schedules' per-layer form)."""
    ks = graph_k(prune, tensors, outputs)
    return float(prune.k) if prune.layer_k is None else list(ks.values())


def graph_mask_fn(prune: Any, tensors: Sequence[T.Tensor], outputs: Sequence[str]) -> MaskFn:
    """``masks(arrays, k)`` for a graph model: ``arrays`` of every tensor, ``k`` one percentage or one per pruned
    item (:func:`graph_items`); one mask per tensor."""
    items = graph_items(prune, tensors, outputs)
    level = RANDOM_METHODS.get(prune.method, prune.method)
    seed = prune.seed if prune.method in RANDOM_METHODS else None

    def masks(arrays: list[np.ndarray], k: float | list[float]) -> list[np.ndarray]:
        ks = [float(k)] * len(items) if np.isscalar(k) else [float(v) for v in k]
        if level == "none":
            return [np.ones(a.shape, bool) for a in arrays]
        return T.masks(arrays, tensors, level, dict(zip(items, ks, strict=True)), prune.scope, prune.min_keep, seed)
    return masks


def graph_pruned_tensors(prune: Any, tensors: Sequence[T.Tensor], outputs: Sequence[str]) -> list[int]:
    """Indices of the ranked tensors the job prunes (what its sparsity is measured over)."""
    items = set(graph_items(prune, tensors, outputs))
    return [i for i, t in enumerate(tensors) if t.ranked and (t.name in items or t.layer in items)]


def unknown_graph_names(prune: Any, tensors: Sequence[T.Tensor]) -> list[str]:
    """The ``prune.layer_k`` names that cover no prunable tensor (or, for unit methods, name a tensor, not a layer)."""
    named = layer_k_by_name(prune) or {}
    unit = RANDOM_METHODS.get(prune.method, prune.method) == "unit"
    candidates = T.unit_layers(tensors) if unit else [t.name for t in tensors if t.ranked]
    return [key for key in named if not any(T.item_of(c, {key: 0.0}) for c in candidates)]
