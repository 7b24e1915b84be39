"""A job's and a training's identity (the hashes that find cached models and finished jobs in the store) do not
move when settings are added: the values below are what the release before LeNet and user models computed, so a
user's cached 50-epoch models and finished study jobs are still found."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from src.cli.config import register_configs
from src.job import job_payload, train_run_name, training_payload
from src.pruning import plan as P
from src.store.train_cache import config_hash
from tests.conftest import PROJECT

PINNED = [  # overrides, job hash, train hash (data fingerprint "fp")
    ([], "26399cdc4d81753b", "0a2fafdae37aa44e"),
    (["prune=unit", "prune.k=90", "lr=1e-5", "train.epochs=50", "train.seed=2"], "224f5db87e4793f1",
     "749d2bcb70695a13"),
    (["prune.schedule=gradual", "prune.k=99", "prune.finetune.lr=1e-3"], "ee60c0f44fb789f4", "0a2fafdae37aa44e"),
    (["prune.schedule=finetune", "prune.k=90", "prune.finetune.lr=1e-3"], "499819f622c8b375", "0a2fafdae37aa44e"),
    (["prune.layer_k=[90,80,70,60]"], "6bb70a8044b70444", "0a2fafdae37aa44e"),
]


def compose_cfg(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("overrides, job_hash, train_hash", PINNED)
def test_mlp_identities_are_those_of_the_previous_release(overrides, job_hash, train_hash) -> None:
    cfg = compose_cfg(overrides)
    assert config_hash(job_payload(cfg)) == job_hash
    assert config_hash(training_payload(cfg, "fp")) == train_hash


def test_settings_that_change_a_job_change_its_identity() -> None:
    base = config_hash(job_payload(compose_cfg([])))
    assert config_hash(job_payload(compose_cfg(["model=lenet5"]))) != base
    assert config_hash(job_payload(compose_cfg(["prune.layer_k={dense1: 90}"]))) != base
    same = [config_hash(job_payload(compose_cfg([f"prune.layer_k=[{v},80,70,60]"]))) for v in ("90", "90.0")]
    assert same[0] == same[1]


def test_a_cosine_training_is_another_model_and_an_explicit_constant_one_is_the_same() -> None:
    base = config_hash(training_payload(compose_cfg([]), "fp"))
    assert config_hash(training_payload(compose_cfg(["train.lr_schedule=constant"]), "fp")) == base
    cosine = compose_cfg(["train.lr_schedule=cosine"])
    assert config_hash(training_payload(cosine, "fp")) != base
    assert config_hash(job_payload(cosine)) != config_hash(job_payload(compose_cfg([])))
    assert train_run_name(cosine) == "train-lr0.001-adam-e10-cosine-s0"


def test_a_users_trained_file_is_named_as_a_file_not_as_a_training() -> None:
    assert train_run_name(compose_cfg(["model=keras", "model.path=/models/mine.keras"])) == "trained-file-mine"
    assert train_run_name(compose_cfg(["model=keras", "model.path=/models/mine.keras", "model.trained=false"])) \
        == "train-lr0.001-adam-e10-s0"  # trained here from the file's architecture


@pytest.mark.parametrize("schedule", ["finetune", "gradual", "iterative"])
def test_the_default_retraining_lr_is_the_training_lr_and_the_same_job_as_setting_it(schedule) -> None:
    default = compose_cfg([f"prune.schedule={schedule}", "prune.k=99", "lr=1e-3"])
    explicit = compose_cfg([f"prune.schedule={schedule}", "prune.k=99", "lr=1e-3", "prune.finetune.lr=1e-3"])
    tenth = compose_cfg([f"prune.schedule={schedule}", "prune.k=99", "lr=1e-3", "prune.finetune.lr=1e-4"])
    assert config_hash(job_payload(default)) == config_hash(job_payload(explicit))  # finished 1e-3 jobs are found
    assert config_hash(job_payload(default)) != config_hash(job_payload(tenth))
    assert P.retrain_lr(schedule, 1e-5, None) == 1e-5 and P.retrain_lr(schedule, 1e-3, 5e-4) == 5e-4


def test_the_criterion_is_in_a_jobs_identity_only_when_it_is_not_the_methods_default() -> None:
    """Jobs cached before prune.criterion existed are still found (magnitude, l2 by name or null are one job); another
    criterion is another job."""
    for method, default, other in (("weight", "magnitude", "taylor"), ("unit", "l2", "bn_scale")):
        null = config_hash(job_payload(compose_cfg([f"prune={method}"])))
        assert config_hash(job_payload(compose_cfg([f"prune={method}", f"prune.criterion={default}"]))) == null
        assert config_hash(job_payload(compose_cfg([f"prune={method}", f"prune.criterion={other}"]))) != null


def test_a_graph_files_unit_job_is_not_the_per_layer_job_of_before(tmp_path) -> None:
    """A unit job on a model only Keras runs removes dependency groups since issue 28: its identity differs from the
    same settings' before (so a per-layer run cached then is not taken for it); a chain file's does not."""
    import keras

    from tests.zoo import ZOO, save

    graph = save(ZOO["resnet"](), tmp_path / "resnet.keras")
    chain = save(ZOO["mobile_seq"](), tmp_path / "seq.keras")  # Sequential, but with layers the chain reader lacks
    mlp = save(keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)]),
               tmp_path / "mlp.keras")
    payload = lambda path, method: job_payload(compose_cfg(["model=keras", f"model.path={path}", f"prune={method}"]))  # noqa: E731
    assert payload(graph, "unit")["prune.unit"] == "groups" and payload(chain, "unit")["prune.unit"] == "groups"
    assert "prune.unit" not in payload(mlp, "unit") and "prune.unit" not in payload(graph, "weight")


def test_quantize_none_keeps_the_identities_of_before_and_a_budgets_bits_enter_only_with_quantization() -> None:
    """The Han budgets carry Deep Compression's bits (quantize.budget_bits), yet their unquantized jobs are the ones
    finished before quantization existed (hashes computed by the release before it)."""
    assert config_hash(job_payload(compose_cfg(["budget=han_lenet5"]))) == "b7c60e2f596e803e"
    assert config_hash(job_payload(compose_cfg(["experiment=han", "budget=han_lenet300"]))) == "472bd575728c4b34"
    assert config_hash(job_payload(compose_cfg(["budget=han_lenet5", "quantize=none"]))) == "b7c60e2f596e803e"


def test_a_quantized_job_is_identified_by_the_bits_each_layer_gets() -> None:
    from src.job import twin_hash, weights_hash

    hashes = {name: config_hash(job_payload(compose_cfg(["budget=han_lenet300", *overrides])))
              for name, overrides in {"none": [], "budget": ["quantize=kmeans"],
                                      "six": ["quantize=kmeans", "quantize.bits=6"],
                                      "four": ["quantize=kmeans", "quantize.bits=4"],
                                      "linear": ["quantize=linear"],
                                      "by_name": ["quantize=kmeans", "quantize.layer_bits={dense1: 6, dense2: 6}"],
                                      "dense3": ["quantize=kmeans", "quantize.layer_bits={dense3: 4}"]}.items()}
    assert hashes["budget"] == hashes["six"] == hashes["by_name"]  # all three give each layer 6 bits
    assert len({hashes[n] for n in ("none", "budget", "four", "linear", "dense3")}) == 5
    assert twin_hash(compose_cfg(["budget=han_lenet300", "quantize=kmeans", "quantize.bits=4"])) == hashes["none"]
    weights = {weights_hash(compose_cfg(["budget=han_lenet300", *overrides]))
               for overrides in ([], ["quantize=kmeans", "quantize.bits=4"], ["eval.timing=off", "eval.repeats=3"])}
    assert len(weights) == 1  # quantizing and timing do not change the weights
    assert weights_hash(compose_cfg(["budget=han_lenet5"])) not in weights


def test_bits_per_layer_take_layer_bits_then_the_command_lines_bits_then_the_budgets_then_8() -> None:
    from src.cli.quantize_settings import bits_by_layer

    names = ["conv1", "conv2", "dense1", "dense2"]
    assert bits_by_layer(compose_cfg(["budget=han_lenet5", "quantize=kmeans"]).quantize, names) == \
        {"conv1": 8, "conv2": 8, "dense1": 5, "dense2": 5}
    assert bits_by_layer(compose_cfg(["budget=han_lenet5", "quantize=kmeans", "quantize.bits=4"]).quantize,
                         names) == dict.fromkeys(names, 4)
    assert bits_by_layer(compose_cfg(["budget=han_lenet5", "quantize=kmeans", "quantize.bits=4",
                                      "quantize.layer_bits={conv1: 7}"]).quantize, names) == \
        {"conv1": 7, "conv2": 4, "dense1": 4, "dense2": 4}
    assert bits_by_layer(compose_cfg(["model=lenet5", "quantize=linear"]).quantize, names) == dict.fromkeys(names, 8)
