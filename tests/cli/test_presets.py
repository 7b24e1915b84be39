"""The presets in conf/experiment/ launch the grids the README states: each preset composed with Hydra's compose API,
its ``hydra.sweeper.params`` expanded into jobs exactly as Hydra's basic sweeper expands them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from src.cli.config import register_configs, validate

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()
# README: smoke "6 prune jobs", frontier "(54 jobs)", han "(12 jobs)", seed "6 trainings ... and 120 prune jobs";
# deep_compression: 2 models x 3 seeds, its bits curve 2 x 5 widths x 3 seeds
README_JOBS = {"smoke": 6, "frontier": 54, "han": 12, "seed": 120, "structured": 6, "deep_compression": 6,
               "deep_compression_bits": 30}


def sweeper_jobs(preset: str) -> list[list[str]]:
    """The override lists ``python -m src.run -m experiment=<preset>`` launches: BasicSweeper.sweep parses its
    ``params`` as ``key=value`` overrides and takes their product (split_arguments, one batch)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return batch


def composed_jobs(preset: str) -> list[DictConfig]:
    """Each job's config as the launcher composes it (the preset, then the job's sweep overrides)."""
    jobs = sweeper_jobs(preset)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return [compose(config_name="config", overrides=[f"experiment={preset}", *job]) for job in jobs]


@pytest.mark.parametrize("preset", sorted(README_JOBS))
def test_preset_grid_has_the_number_of_jobs_the_readme_states(preset: str) -> None:
    """The sweeper launches as many jobs as the README says the preset runs, all of them different."""
    jobs = sweeper_jobs(preset)
    assert len(jobs) == README_JOBS[preset]
    assert len({tuple(sorted(job)) for job in jobs}) == len(jobs)


@pytest.mark.parametrize("preset, trainings", [("smoke", 1), ("han", 6), ("structured", 6), ("deep_compression", 6),
                                               ("deep_compression_bits", 6)])
def test_preset_jobs_validate_and_none_is_skipped_as_another_jobs_duplicate(preset: str, trainings: int) -> None:
    """Every job of the preset passes the config checks, has its own job hash (a job whose hash another job has would
    be skipped as finished, leaving fewer prune runs than the README promises) and the preset trains as many models as
    the README says (smoke: one; han: LeNet-300-100 and LeNet-5 at 3 seeds, "6 trainings")."""
    from src.job import job_payload, training_payload
    from src.store.train_cache import config_hash

    configs = composed_jobs(preset)
    for cfg in configs:
        validate(cfg)
    assert len({config_hash(job_payload(cfg)) for cfg in configs}) == README_JOBS[preset]
    assert len({config_hash(training_payload(cfg, "mnist")) for cfg in configs}) == trainings


@pytest.mark.parametrize("preset, bits", [("deep_compression", None), ("deep_compression_bits", (8, 6, 5, 4, 3))])
def test_deep_compression_quantizes_the_prune_jobs_of_experiment_han(preset: str, bits: tuple | None) -> None:
    """Every job quantizes by k-means the pruning of one of experiment=han's jobs (its unquantized twin, src/job.
    twin_hash, is that job's identity, and both have the same weights_hash: a store that ran han reuses the prune runs),
    both LeNets at 3 seeds; at the
    budget's bits by layer (Deep Compression's: LeNet-300-100 6, LeNet-5 conv 8, fc 5) or, for the bits curve, at
    each width in every layer."""
    from src.cli.model_checks import weighted_layer_names
    from src.cli.quantize_settings import bits_by_layer
    from src.job import job_payload, twin_hash, weights_hash
    from src.store.train_cache import config_hash

    han_jobs = composed_jobs("han")
    han = {config_hash(job_payload(cfg)) for cfg in han_jobs}
    configs = composed_jobs(preset)
    assert {twin_hash(cfg) for cfg in configs} <= han
    assert {weights_hash(cfg) for cfg in configs} <= {weights_hash(cfg) for cfg in han_jobs}
    assert len({weights_hash(cfg) for cfg in configs}) == 6
    widths = set()
    for cfg in configs:
        assert cfg.quantize.method == "kmeans"
        layer_bits = bits_by_layer(cfg.quantize, weighted_layer_names(cfg.model))
        if bits is None:
            assert layer_bits == {"lenet300": {"dense1": 6, "dense2": 6, "dense3": 6},
                                  "lenet5": {"conv1": 8, "conv2": 8, "dense1": 5, "dense2": 5}}[cfg.model.name]
        widths |= {tuple(set(layer_bits.values()))}
    assert bits is None or widths == {(b,) for b in bits}
