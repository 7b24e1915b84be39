"""Config schema (Hydra structured configs) and the semantic checks types cannot express.

The dataclasses are registered in Hydra's ConfigStore as ``base_config``; the YAML files in
``conf/`` fill them in, so a misspelt key or a wrongly typed value (``lr=abc``) fails at compose
time. :func:`validate` then checks ranges and choices, returning one message per problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from src.timing import LEVELS as TIMING_LEVELS


@dataclass
class ModelConfig:
    name: str = "mlp"
    input_shape: list[int] = field(default_factory=lambda: [28, 28])
    hidden: list[int] = field(default_factory=lambda: [1000, 1000, 500, 200])
    n_classes: int = 10
    use_bias: bool = False
    kernel_initializer: str = "glorot_uniform"


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | sgd
    momentum: float = 0.0  # sgd only


@dataclass
class PruneConfig:
    method: str = "weight"  # weight | unit | none
    k: float = 0.0  # percent of each pruned layer removed, 0..100
    layer_k: list[float] | None = None  # per-layer k, overrides k layer by layer
    scope: str = "layer"  # masks are computed per layer
    prune_last: bool = False  # also prune the final (logits) layer


@dataclass
class DataConfig:
    source: str = "file"  # file: load `path` offline | keras: keras.datasets.mnist downloader
    path: str | None = None  # None = the copy shipped in data/mnist.npz
    train_size: int | None = None  # first N training examples (None = all 60,000)
    test_size: int | None = None  # first N test examples (None = all 10,000)
    val_fraction: float = 0.1  # last fraction of the training examples held out for validation


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    verbose: int = 2  # Keras fit verbosity: 2 = one line per epoch


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"  # relative sqlite paths resolve against the launch dir
    artifact_root: str = "mlruns/artifacts"  # for local stores only; a server decides its own
    experiment: str = "prunesweep"
    stale_after_s: float = 900.0  # a RUNNING train run with no heartbeat for this long is dead
    force: bool = False  # re-run jobs that already have a FINISHED prune run


@dataclass
class EvalConfig:
    timing: str = "quick"  # off | quick | full: how dense vs sparse evaluation is timed (src/timing.py)
    engine: str = "auto"  # sparse engine: auto | measure | dense | compact-dense | scatter-numba | csr-numba
    repeats: int = 7  # timing rounds (median reported): all of them (full), at most this many (quick)
    warmup: int = 2  # untimed rounds first (full only)
    settle_s: float = 0.15  # s before each timed turn: sleep (quick) or untimed calls (full), see src/timing.py


@dataclass
class Config:
    lr: float = 1e-3
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    prune: PruneConfig = MISSING
    data: DataConfig = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    run_tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags on the prune run (e.g. by a sweeper)


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can extend it (``defaults: [base_config, ...]``)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, node in [
        ("model", ModelConfig),
        ("optimizer", OptimizerConfig),
        ("prune", PruneConfig),
        ("data", DataConfig),
        ("train", TrainConfig),
        ("tracking", TrackingConfig),
    ]:
        cs.store(group=group, name=f"base_{group}", node=node)


class ConfigError(ValueError):
    """A config value is out of range; the message names the setting and what is allowed."""


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the first bad setting; return None if all are valid."""
    checks = [
        (cfg.lr > 0, f"lr={cfg.lr} is invalid: the learning rate must be a positive number, e.g. lr=1e-3"),
        (0 <= cfg.prune.k <= 100, f"prune.k={cfg.prune.k} is out of range: k is a percentage in [0, 100]"),
        (cfg.prune.method in ("weight", "unit", "none"),
         f"prune.method={cfg.prune.method} is unknown: use prune=weight, prune=unit or prune=none"),
        (cfg.prune.scope == "layer", f"prune.scope={cfg.prune.scope} is not supported: only 'layer'"),
        (cfg.optimizer.name in ("adam", "sgd"),
         f"optimizer.name={cfg.optimizer.name} is unknown: use optimizer=adam or optimizer=sgd"),
        (cfg.train.epochs >= 1, f"train.epochs={cfg.train.epochs} is invalid: train at least 1 epoch"),
        (cfg.train.batch_size >= 1, f"train.batch_size={cfg.train.batch_size} is invalid: must be >= 1"),
        (len(cfg.model.hidden) >= 1 and all(h >= 1 for h in cfg.model.hidden),
         f"model.hidden={list(cfg.model.hidden)} is invalid: give at least one hidden layer width >= 1"),
        (cfg.data.source in ("file", "keras"),
         f"data.source={cfg.data.source} is unknown: use 'file' (offline, default) or 'keras' (download)"),
        (cfg.data.train_size is None or cfg.data.train_size >= 10,
         f"data.train_size={cfg.data.train_size} is invalid: use at least 10 examples or null for all"),
        (cfg.data.test_size is None or cfg.data.test_size >= 1,
         f"data.test_size={cfg.data.test_size} is invalid: use at least 1 example or null for all"),
        (0 <= cfg.data.val_fraction < 1,
         f"data.val_fraction={cfg.data.val_fraction} is invalid: use a fraction in [0, 1)"),
    ]
    engines = ("auto", "measure", "dense", "compact-dense", "scatter-numba", "csr-numba")  # sparse_engine.ENGINES
    checks += [
        (cfg.eval.timing in TIMING_LEVELS,
         f"eval.timing={cfg.eval.timing} is unknown: use eval.timing=off, quick (default) or full"),
        (cfg.eval.engine in engines, f"eval.engine={cfg.eval.engine} is unknown: use one of {', '.join(engines)}"),
        (cfg.eval.repeats >= 1, f"eval.repeats={cfg.eval.repeats} is invalid: time at least 1 round"),
        (cfg.eval.warmup >= 0, f"eval.warmup={cfg.eval.warmup} is invalid: use 0 or more warm-up rounds"),
        (cfg.eval.settle_s >= 0, f"eval.settle_s={cfg.eval.settle_s} is invalid: use 0 or more seconds"),
    ]
    if cfg.prune.layer_k is not None:
        n_pruned = len(cfg.model.hidden) + (1 if cfg.prune.prune_last else 0)
        checks += [
            (len(cfg.prune.layer_k) == n_pruned,
             f"prune.layer_k has {len(cfg.prune.layer_k)} values: give one per pruned layer ({n_pruned})"),
            (all(0 <= v <= 100 for v in cfg.prune.layer_k),
             f"prune.layer_k={list(cfg.prune.layer_k)} is out of range: each k is a percentage in [0, 100]"),
        ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
