"""src/cli/sweep_checks: which jobs of a grid are composed and checked before the first one runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from src.cli.config import ConfigError
from src.cli.sweep_checks import check_every_job, covering_jobs


def test_covering_jobs_hold_every_value_of_the_grid_once():
    grid = [[f"lr={lr}", f"prune.k={k}"] for lr in (1e-5, 1e-3) for k in (0, 50, 90)]
    covering = covering_jobs(grid)
    assert [num for num, _ in covering] == [0, 1, 2, 3]  # k's values in the first three, lr=0.001 in the fourth
    assert {o for _, job in covering for o in job} == {o for job in grid for o in job}


def _config(task: list[str]) -> SimpleNamespace:
    sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None}
    return SimpleNamespace(hydra=SimpleNamespace(sweeper=_Node(sweeper), overrides=SimpleNamespace(task=task)))


class _Node(dict):
    get = dict.get


def _composed(overrides: list[str]) -> SimpleNamespace:
    """A job's config as far as the checks read it: lr and prune.k from its overrides (validate reads more: a
    stand-in that raises ConfigError on a bad lr or k is enough to see which job is named)."""
    values = dict(o.split("=") for o in overrides)
    return SimpleNamespace(lr=float(values.get("lr", 1e-3)), k=float(values.get("prune.k", 0)))


def test_the_first_bad_job_is_named_and_later_ones_are_not_composed(monkeypatch):
    composed = []

    def validate(cfg):
        if not 0 <= cfg.k <= 100:
            raise ConfigError(f"prune.k={cfg.k} is out of range")

    monkeypatch.setattr("src.cli.config.validate", validate)
    config = _config(["lr=1e-5,1e-3", "prune.k=0,150,50"])
    with pytest.raises(ConfigError) as info:
        check_every_job(config, lambda o: composed.append(o) or _composed(o))
    assert str(info.value) == "prune.k=150.0 is out of range (job 1 of 6: lr=1e-05 prune.k=150; no job has run)"
    assert composed == [["lr=1e-05", "prune.k=0"], ["lr=1e-05", "prune.k=150"]]
    composed.clear()
    check_every_job(_config(["lr=1e-5,1e-3", "prune.k=0,50"]), lambda o: composed.append(o) or _composed(o))
    assert len(composed) == 3  # of 4 jobs: the fourth brings no new value
    composed.clear()
    check_every_job(_config(["prune.k=150"]), lambda o: composed.append(o) or _composed(o))
    assert composed == []  # one job: its own preflight checks it
