"""Every job of a multirun checked before the first one runs.

Hydra composes a batch's jobs before launching it, so a value of the wrong type or an unknown option fails the
sweep at once (src/cli/errors.py). A value of the right type but out of range (``prune.k=50,150``) passed that and
failed only its own job, after the jobs before it had trained. :func:`check_every_job` composes the jobs that
hold every value of the grid and runs :func:`src.cli.config.validate` on each (ranges and names: no data read, no
store reached), from the sweep callback's ``on_multirun_start``, before any job starts.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def job_overrides(config: DictConfig) -> list[list[str]] | None:
    """The override list of each job the basic sweeper will launch (its params, then the command line's sweeps, the
    later winning per key), in launch order; None for another sweeper (an Optuna search samples its trials)."""
    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def covering_jobs(jobs: list[list[str]]) -> list[tuple[int, list[str]]]:
    """(number, overrides) of the jobs that bring an override no earlier job had: every value of every swept key
    appears in one of them (a grid of 180 jobs over lr x seed x method x k: ~17 jobs to compose, not 180; Hydra
    takes ~0.15 s a composition here)."""
    seen: set[str] = set()
    covering = []
    for num, overrides in enumerate(jobs):
        if not seen.issuperset(overrides):
            covering.append((num, overrides))
            seen.update(overrides)
    return covering


def check_every_job(config: DictConfig, compose: Any = None) -> None:
    """Raise ConfigError (one line: the setting, the fix, the job) for the first job of the multirun whose settings
    :func:`src.cli.config.validate` refuses, among the jobs that together hold every value of the grid
    (:func:`covering_jobs`: most checks read one key; a bad combination that only another job holds is still
    refused by that job's own preflight, src/run.py). ``compose(overrides) -> DictConfig``: Hydra's own by
    default."""
    from src.cli.config import ConfigError, validate

    try:
        jobs = job_overrides(config)
    except Exception:  # noqa: BLE001 - overrides Hydra cannot parse: its own error line comes next
        return
    if not jobs or len(jobs) < 2:  # one job: run.py's preflight checks it before it does anything
        return
    if compose is None:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()

        def compose(overrides: list[str]) -> DictConfig:
            return loader.load_sweep_config(master_config=config, sweep_overrides=overrides)

    for num, overrides in covering_jobs(jobs):
        try:
            job = compose(overrides)
        except Exception:  # noqa: BLE001 - a composition error: Hydra's sweeper reports it next, before any job
            return
        try:
            validate(job)
        except ConfigError as e:
            raise ConfigError(f"{e} (job {num} of {len(jobs)}: {' '.join(overrides)}; no job has run)") from None
