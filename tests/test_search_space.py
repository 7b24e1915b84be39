"""The Optuna sweeper's search space: per-layer k by name for any model (``prune.layer_k.*``), sent as one dict."""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution

from hydra_plugins.prunesweep_optuna_sweeper._study import job_overrides, search_space

LENET5 = ["conv1", "conv2", "dense1"]


def test_star_expands_to_one_parameter_per_pruned_layer_and_a_named_value_fixes_one() -> None:
    space, fixed = search_space({"prune": "choice(weight, unit)", "prune.layer_k.*": "interval(0, 99)"},
                                ["prune.layer_k.conv1=10", "lr=1e-3"], LENET5)
    assert set(space) == {"prune", "prune.layer_k.conv1", "prune.layer_k.conv2", "prune.layer_k.dense1"}
    assert isinstance(space["prune.layer_k.conv2"], FloatDistribution) and space["prune.layer_k.conv2"].high == 99
    assert space["prune.layer_k.conv1"] == CategoricalDistribution([10])  # fixed: one choice of the dict
    assert fixed == ["lr=1e-3"]


def test_named_layers_go_to_the_job_as_one_dict_override_and_indices_as_one_list() -> None:
    overrides = job_overrides({"prune": "unit", "prune.layer_k.conv1": 10, "prune.layer_k.dense1": 92.5})
    assert overrides == ["prune=unit", "prune.layer_k={conv1: 10, dense1: 92.5}"]
    assert job_overrides({"prune.layer_k.1": 5, "prune.layer_k.0": 7}) == ["prune.layer_k=[7,5]"]
