"""tests/conftest.cases, which several test files use to run jobs of different settings as one multirun: every case
composes to exactly the config its overrides give on the command line (Hydra's reading of each value kept)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PROJECT, TINY, cases

JOBS = {
    "group_and_words": ["prune=unit", "prune.criterion=bn_scale", "eval.timing=off", "tracking.save_pruned=none"],
    "numbers_and_flags": ["prune=random_unit", "lr=3e-3", "prune.k=90", "model.trained=false", "train.seed=3",
                          "prune.iterative.rewind=true", "prune.min_keep=0.2"],
    "model_and_layer_k": ["model=keras", "model.path=/tmp/a-b/m.keras", "prune=weight",
                          "prune.layer_k={mobilenetv2: 30, mobilenetv2/Conv1/kernel: 80}"],
    "layer_k_list": ["model=lenet300", "prune.layer_k=[90,60]", "prune.schedule=gradual", "eval.timing=quick"],
}


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from src.cli.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=overrides))


@pytest.mark.parametrize("name", JOBS)
def test_a_case_composes_to_its_command_lines_config(tmp_path: Path, name: str) -> None:
    *common, searchpath, _ = cases(tmp_path, TINY, JOBS)
    as_case = compose([*common, searchpath, f"+case={name}"])
    assert as_case == compose([*TINY, *JOBS[name]])
    assert as_case != compose(TINY)


def test_a_setting_both_common_and_in_a_case_is_refused(tmp_path: Path) -> None:
    """The command line would win over the case without a word: refused instead."""
    with pytest.raises(ValueError, match=r"case trained sets \['train.epochs'\]"):
        cases(tmp_path, ["-m", *TINY], {"trained": ["prune=weight", "train.epochs=6"]})
