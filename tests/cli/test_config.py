"""Every config group composes against the schema; semantic checks name the bad setting."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from src.cli.config import ConfigError, register_configs, validate

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


NEEDS = {"model=keras": ["model.path=mine.keras"]}  # an option that takes a required setting with it


@pytest.mark.parametrize("group", ["model", "optimizer", "prune", "data", "train", "tracking", "experiment", "budget"])
def test_every_option_of_every_group_composes_and_validates(group):
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = _compose([f"{group}={option}", *NEEDS.get(f"{group}={option}", [])])
        validate(cfg)
    if group == "budget":  # Han et al.'s budgets name the layers of the models they select
        from src.cli.model_checks import weighted_layer_names

        for option in options:
            cfg = _compose([f"budget={option}"])
            names = weighted_layer_names(cfg.model)
            assert set(cfg.prune.layer_k or {}) <= set(names), option


def test_defaults_are_the_study_model():
    cfg = _compose()
    assert list(cfg.model.hidden) == [1000, 1000, 500, 200] and cfg.model.use_bias is False
    assert cfg.prune.prune_last is False and cfg.prune.scope == "layer"
    assert cfg.lr == pytest.approx(1e-3) and cfg.data.train_size is None


def test_top_level_lr_and_method_overrides():
    cfg = _compose(["lr=1e-5", "prune=unit", "prune.k=90"])
    assert cfg.lr == pytest.approx(1e-5) and cfg.prune.method == "unit" and cfg.prune.k == 90


def test_seed_experiment_holds_the_classic_grid():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=seed"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert str(params["prune.k"]) == "0,25,50,60,70,80,90,95,97,99"
    assert str(params.prune) == "weight,unit" and str(params.lr) == "1e-5,1e-3"


@pytest.mark.parametrize("override", ["lr=abc", "train.epochs=two", "model.nonexistent=1"])
def test_schema_rejects_wrong_types_and_unknown_keys(override):
    with pytest.raises((ValidationError, ConfigCompositionException)):
        _compose([override])


@pytest.mark.parametrize("override, setting", [
    ("prune.k=150", "prune.k"), ("prune.k=-5", "prune.k"), ("lr=-0.1", "lr"), ("lr=0", "lr"),
    ("train.epochs=0", "train.epochs"), ("model.hidden=[]", "model.hidden"),
    ("prune.method=magic", "prune.method"), ("optimizer.name=rmsprop", "optimizer.name"),
    ("prune.layer_k=[10,20]", "prune.layer_k"), ("prune.layer_k=[10,20,30,101]", "prune.layer_k"),
    ("eval.engine=cusparse", "eval.engine"), ("eval.repeats=0", "eval.repeats"), ("eval.warmup=-1", "eval.warmup"),
    ("eval.settle_s=-0.1", "eval.settle_s"),
])
def test_validate_names_the_bad_setting(override, setting):
    with pytest.raises(ConfigError, match=rf"^{setting}"):
        validate(_compose([override]))


def test_eval_settings_match_the_engine_module() -> None:
    """config.py repeats these (validating a config must not import numba): keep them equal."""
    from src.cli.config import EvalConfig
    from src.engine.choice import ENGINES
    from src.engine.timing import SETTLE_S
    for engine in ENGINES:
        validate(_compose([f"eval.engine={engine}"]))
    assert EvalConfig().settle_s == SETTLE_S
