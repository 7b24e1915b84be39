"""Config schema (Hydra structured configs) and the semantic checks types cannot express.

The dataclasses are registered in Hydra's ConfigStore as ``base_config``; the YAML files in
``conf/`` fill them in, so a misspelt key or a wrongly typed value (``lr=abc``) fails at compose
time. :func:`validate` then checks ranges and choices, returning one message per problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from src.engine.coding import CODERS, MAX_INDEX_BITS
from src.engine.quantize import MAX_BITS
from src.engine.quantize import METHODS as QUANTIZERS
from src.engine.timing import LEVELS as TIMING_LEVELS

METHODS = ("weight", "unit", "random", "random_unit", "none")
SCOPES = ("layer", "global")
SCHEDULES = ("oneshot", "finetune", "gradual", "iterative")
LR_SCHEDULES = ("constant", "cosine")  # train.lr_schedule
QUANTIZE_METHODS = ("none", *QUANTIZERS)  # quantize.method


@dataclass
class ModelConfig:
    name: str = "mlp"  # mlp | lenet300 | lenet5 | resnet20 | mobilenetv2 (built here) | keras (a user's file)
    input_shape: list[int] = field(default_factory=lambda: [28, 28])
    hidden: list[int] = field(default_factory=lambda: [1000, 1000, 500, 200])  # Dense widths after the convs
    n_classes: int | None = None  # None: from the labels
    use_bias: bool = False
    kernel_initializer: str = "glorot_uniform"
    conv: list[int] = field(default_factory=list)  # filters of each conv block (conv kernel_size, ReLU, max-pool 2)
    kernel_size: int = 5
    path: str | None = None  # keras: the user's .keras model file
    trained: bool = True  # keras: the file is the trained model (nothing is trained); false: train it here
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # resnet20: channels of each stage
    blocks: int = 3  # resnet20: basic blocks per stage (3: ResNet-20)
    alpha: float = 1.0  # mobilenetv2: width multiplier
    size: int = 32  # mobilenetv2: the image is zero-padded to size x size (32 at least)


GRAPH_MODELS = ("resnet20", "mobilenetv2")  # built graphs (src/training/architectures.py): Keras runs them
BUILT_MODELS = ("mlp", "lenet300", "lenet5", *GRAPH_MODELS)
MODELS = (*BUILT_MODELS, "keras")
# what each kind of model reads; the rest of model.* is left out of its identity (train and job hashes)
MODEL_KEYS = {"built": ("name", "input_shape", "hidden", "n_classes", "use_bias", "kernel_initializer"),
              "keras": ("name", "path", "trained"),
              "resnet20": ("name", "input_shape", "n_classes", "widths", "blocks"),
              "mobilenetv2": ("name", "input_shape", "n_classes", "alpha", "size")}
CONV_KEYS = ("conv", "kernel_size")


def model_keys(model: Any) -> tuple[str, ...]:
    """The ``model.*`` settings a model of this kind reads (a built MLP never reads the conv settings, so
    adding them changed no MLP's identity)."""
    if model.name in MODEL_KEYS:
        return MODEL_KEYS[model.name]
    return MODEL_KEYS["built"] + (CONV_KEYS if list(model.conv) else ())


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | sgd
    momentum: float = 0.0  # sgd only


@dataclass
class FinetuneConfig:
    """Retraining with the mask held (every schedule but oneshot): the whole budget of a job."""

    epochs: int = 10  # retraining epochs per job, whatever the schedule (gradual span and rounds fit inside)
    lr: float | None = None  # null: the schedule's default, today the training lr (src/pruning/plan.py)
    batch_size: int = 128
    seed: int = 0


@dataclass
class GradualConfig:
    """Zhu & Gupta (2017) cubic schedule, TFMOT's PolynomialDecay: s = s_f + (s_i - s_f) (1 - p)^3."""

    initial_k: float = 0.0  # percent pruned when retraining starts (s_i)
    frequency: int = 100  # optimizer steps between mask updates
    span: float = 0.7  # fraction of the retraining steps over which k rises to prune.k; then the mask is held


@dataclass
class IterativeConfig:
    """Han et al. (2015) prune-retrain rounds; rewind: lottery-ticket control (Frankle & Carbin 2019)."""

    rounds: int = 5  # each prunes the same fraction of the remaining weights; the last ends exactly at k
    rewind: bool = False  # reset the survivors to their initial values before each round's retraining


@dataclass
class PruneConfig:
    method: str = "weight"  # weight | unit | random | random_unit | none
    k: float = 0.0  # percent of each pruned layer removed, 0..100
    layer_k: Any = None  # per-layer k: a list (one per pruned layer) or by name ({conv2: 88, dense1: 92})
    scope: str = "layer"  # layer: k% of each layer | global: k% of all pruned layers, ranked together
    min_keep: float = 0.01  # global scope: each pruned layer keeps at least this (fraction < 1, or a count)
    prune_last: bool = False  # also prune the final (logits) layer
    embeddings: bool = False  # also prune Embedding layers (graph models: src/training/keras_graph.py)
    schedule: str = "oneshot"  # oneshot | finetune | gradual | iterative
    criterion: str | None = None  # what ranks: unit l2 (null's) | l1 | bn_scale | taylor; weight magnitude (null's)
    seed: int = 0  # random and random_unit: which weights or units are drawn
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    gradual: GradualConfig = field(default_factory=GradualConfig)
    iterative: IterativeConfig = field(default_factory=IterativeConfig)


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
    lr_schedule: str = "constant"  # constant | cosine: lr decays to 0 over all epochs (Loshchilov & Hutter 2017)
    verbose: int = 2  # Keras fit verbosity: 2 = one line per epoch


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns/mlflow.db"  # relative sqlite paths resolve against the launch dir
    artifact_root: str = "mlruns/artifacts"  # for local stores only; a server decides its own
    experiment: str = "prunesweep"
    stale_after_s: float = 900.0  # a RUNNING train run with no heartbeat for this long is dead
    force: bool = False  # re-run jobs that already have a FINISHED prune run
    save_pruned: str = "all"  # model/pruned.keras (+ compact.keras, unit) on prune runs: all | retrained | none
    gzip_size: bool = False  # also log gzip_file_bytes (the dense .keras gzipped: ~1 s per job on the full MLP)


@dataclass
class EvalConfig:
    timing: str = "quick"  # off | quick | full: how dense vs sparse evaluation is timed (src/engine/timing.py)
    engine: str = "auto"  # sparse engine: auto | measure | dense | compact-dense | scatter-numba | csr-numba
    repeats: int = 7  # timing rounds (median reported): all of them (full), at most this many (quick)
    warmup: int = 2  # untimed rounds first (full only)
    settle_s: float = 0.15  # s before each timed turn: sleep (quick) or untimed calls (full), see src/engine/timing.py


@dataclass
class QuantizeConfig:
    """Quantization of the pruned model's kept weights (Deep Compression: Han, Mao & Dally 2016), every Dense and
    Conv2D kernel; method none leaves the float32 weights and today's files."""

    method: str = "none"  # none | linear (uniform levels) | kmeans (shared weights, centroids initialised linearly)
    bits: int | None = None  # bits per kept weight; null: the budget's (budget_bits) if it sets them, else 8
    layer_bits: Any = None  # bits by layer name, e.g. {conv1: 8, dense1: 5}: win over bits and the budget's
    per_channel: bool = False  # linear: levels per output channel instead of per tensor
    index_bits: int | None = None  # width of the relative indices; null: the file format's default
    coder: str = "huffman"  # entropy coder of codes and indices: huffman | lzma | zlib
    budget_bits: Any = None  # set by a budget= preset (Han's bits by layer name): read only when quantize is on


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
    quantize: QuantizeConfig = MISSING
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
        ("quantize", QuantizeConfig),
    ]:
        cs.store(group=group, name=f"base_{group}", node=node)


class ConfigError(ValueError):
    """A config value is out of range; the message names the setting and what is allowed."""


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the first bad setting; return None if all are valid."""
    checks = [
        (cfg.lr > 0, f"lr={cfg.lr} is invalid: the learning rate must be a positive number, e.g. lr=1e-3"),
        (0 <= cfg.prune.k <= 100, f"prune.k={cfg.prune.k} is out of range: k is a percentage in [0, 100]"),
        (cfg.prune.method in METHODS,
         f"prune.method={cfg.prune.method} is unknown: use prune=weight, unit, random, random_unit or none"),
        (cfg.prune.scope in SCOPES, f"prune.scope={cfg.prune.scope} is unknown: use prune.scope=layer or global"),
        (cfg.prune.schedule in SCHEDULES,
         f"prune.schedule={cfg.prune.schedule} is unknown: use oneshot, finetune, gradual or iterative"),
        (cfg.tracking.save_pruned in ("all", "retrained", "none"),
         f"tracking.save_pruned={cfg.tracking.save_pruned} is unknown: use all (default), retrained or none"),
        (cfg.optimizer.name in ("adam", "sgd"),
         f"optimizer.name={cfg.optimizer.name} is unknown: use optimizer=adam or optimizer=sgd"),
        (cfg.train.epochs >= 1, f"train.epochs={cfg.train.epochs} is invalid: train at least 1 epoch"),
        (cfg.train.batch_size >= 1, f"train.batch_size={cfg.train.batch_size} is invalid: must be >= 1"),
        (cfg.train.lr_schedule in LR_SCHEDULES,
         f"train.lr_schedule={cfg.train.lr_schedule} is unknown: use train.lr_schedule=constant or cosine"),
        (cfg.model.name in MODELS,
         f"model.name={cfg.model.name} is unknown: use model=mlp, lenet300, lenet5, resnet20, mobilenetv2 or keras"),
        (cfg.model.name == "keras" or ((len(cfg.model.hidden) >= 1 or len(cfg.model.conv) >= 1)
                                       and all(h >= 1 for h in cfg.model.hidden)),
         f"model.hidden={list(cfg.model.hidden)} is invalid: give at least one hidden layer width >= 1"),
        (cfg.model.name == "keras" or all(f >= 1 for f in cfg.model.conv),
         f"model.conv={list(cfg.model.conv)} is invalid: every conv layer needs >= 1 filter"),
        (cfg.model.name != "resnet20" or (len(cfg.model.widths) >= 1 and all(w >= 1 for w in cfg.model.widths)),
         f"model.widths={list(cfg.model.widths)} is invalid: give one channel count >= 1 per stage, e.g. [16, 32, 64]"),
        (cfg.model.name != "resnet20" or cfg.model.blocks >= 1,
         f"model.blocks={cfg.model.blocks} is invalid: a stage has at least 1 basic block"),
        (cfg.model.name != "mobilenetv2" or cfg.model.alpha > 0,
         f"model.alpha={cfg.model.alpha} is invalid: MobileNetV2's width multiplier is > 0, e.g. 1.0 or 0.35"),
        (cfg.model.name != "mobilenetv2" or cfg.model.size >= 32,
         f"model.size={cfg.model.size} is invalid: MobileNetV2 takes images of at least 32x32 (model.size >= 32)"),
        (cfg.model.kernel_size >= 1, f"model.kernel_size={cfg.model.kernel_size} is invalid: must be >= 1"),
        (cfg.model.name != "keras" or bool(cfg.model.path),
         "model=keras needs model.path=<file>.keras: the Keras 3 model to prune"),
        (cfg.data.source in ("file", "keras"),
         f"data.source={cfg.data.source} is unknown: use 'file' (offline, default) or 'keras' (download)"),
        (cfg.data.train_size is None or cfg.data.train_size >= 10,
         f"data.train_size={cfg.data.train_size} is invalid: use at least 10 examples or null for all"),
        (cfg.data.test_size is None or cfg.data.test_size >= 1,
         f"data.test_size={cfg.data.test_size} is invalid: use at least 1 example or null for all"),
        (0 <= cfg.data.val_fraction < 1,
         f"data.val_fraction={cfg.data.val_fraction} is invalid: use a fraction in [0, 1)"),
    ]
    engines = ("auto", "measure", "dense", "compact-dense", "scatter-numba", "csr-numba")  # src.engine.choice.ENGINES
    checks += [
        (cfg.eval.timing in TIMING_LEVELS,
         f"eval.timing={cfg.eval.timing} is unknown: use eval.timing=off, quick (default) or full"),
        (cfg.eval.engine in engines, f"eval.engine={cfg.eval.engine} is unknown: use one of {', '.join(engines)}"),
        (cfg.eval.repeats >= 1, f"eval.repeats={cfg.eval.repeats} is invalid: time at least 1 round"),
        (cfg.eval.warmup >= 0, f"eval.warmup={cfg.eval.warmup} is invalid: use 0 or more warm-up rounds"),
        (cfg.eval.settle_s >= 0, f"eval.settle_s={cfg.eval.settle_s} is invalid: use 0 or more seconds"),
    ]
    prune, ft = cfg.prune, cfg.prune.finetune
    checks += [
        (prune.min_keep >= 0 and (prune.min_keep < 1 or float(prune.min_keep).is_integer()),
         f"prune.min_keep={prune.min_keep} is invalid: a fraction in [0, 1) or a whole number of weights/units"),
        (ft.epochs >= 1 or prune.schedule == "oneshot",
         f"prune.finetune.epochs={ft.epochs} is invalid: retrain at least 1 epoch (or use prune.schedule=oneshot)"),
        (ft.epochs >= 0, f"prune.finetune.epochs={ft.epochs} is invalid: use 0 or more epochs"),
        (ft.lr is None or ft.lr > 0,
         f"prune.finetune.lr={ft.lr} is invalid: a positive number, or null for the schedule's default"),
        (ft.batch_size >= 1, f"prune.finetune.batch_size={ft.batch_size} is invalid: must be >= 1"),
        (0 <= prune.gradual.initial_k <= prune.k or prune.schedule != "gradual",
         f"prune.gradual.initial_k={prune.gradual.initial_k} is invalid: a percentage in [0, prune.k={prune.k}]"),
        (prune.gradual.frequency >= 1, f"prune.gradual.frequency={prune.gradual.frequency} is invalid: >= 1 step"),
        (0 < prune.gradual.span <= 1, f"prune.gradual.span={prune.gradual.span} is invalid: a fraction in (0, 1]"),
        (prune.iterative.rounds >= 1, f"prune.iterative.rounds={prune.iterative.rounds} is invalid: >= 1 round"),
        (prune.iterative.rounds <= max(ft.epochs, 1) or prune.schedule != "iterative",
         f"prune.iterative.rounds={prune.iterative.rounds} is more than prune.finetune.epochs={ft.epochs}: "
         "every round needs at least one epoch"),
        (_criterion_ok(prune), f"prune.criterion={prune.criterion} does not rank {prune.method} pruning: use "
                               f"{_criteria_for(prune.method)}"),
        (prune.scope == "layer" or prune.layer_k is None,
         "prune.layer_k sets k layer by layer: it needs prune.scope=layer"),
        (prune.scope == "layer" or prune.method in ("weight", "unit"),
         f"prune.scope=global ranks by magnitude: use it with prune=weight or unit, not {prune.method}"),
    ]
    if prune.scope == "global" and prune.min_keep >= 1 and cfg.model.name == "mlp" and cfg.model.n_classes:
        n_layers = len(cfg.model.hidden) + 1
        widths = [*cfg.model.hidden, cfg.model.n_classes]
        fan_in = [math.prod(cfg.model.input_shape), *cfg.model.hidden]
        n_pruned = n_layers if prune.prune_last else n_layers - 1
        items = [widths[i] if prune.method == "unit" else widths[i] * fan_in[i] for i in range(n_pruned)]
        checks.append((prune.min_keep <= min(items),
                       f"prune.min_keep={prune.min_keep:g} is larger than a pruned layer ({min(items)} "
                       f"{'units' if prune.method == 'unit' else 'weights'}): keep at most that many, or a fraction"))
    layer_k = cfg.prune.layer_k
    if isinstance(layer_k, Mapping):
        checks.append((all(_is_percent(v) for v in layer_k.values()),
                       f"prune.layer_k={dict(layer_k)} is out of range: each k is a percentage in [0, 100]"))
    elif layer_k is not None:
        checks.append((isinstance(layer_k, Sequence) and not isinstance(layer_k, str)
                       and all(_is_percent(v) for v in layer_k),
                       f"prune.layer_k={layer_k} is invalid: give a list of percentages in [0, 100], one per pruned "
                       "layer, or percentages by layer name, e.g. prune.layer_k={dense1: 92, dense2: 91}"))
        if cfg.model.name == "mlp" and isinstance(layer_k, Sequence):
            n_pruned = len(cfg.model.hidden) + (1 if cfg.prune.prune_last else 0)
            checks.append((len(layer_k) == n_pruned,
                           f"prune.layer_k has {len(layer_k)} values: give one per pruned layer ({n_pruned})"))
    checks += _quantize_checks(cfg.quantize)
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _quantize_checks(q: Any) -> list[tuple[bool, str]]:
    """(ok, message) of the ``quantize.*`` settings (the layer names are src/cli/model_checks's)."""
    layer_bits = q.layer_bits
    return [
        (q.method in QUANTIZE_METHODS,
         f"quantize.method={q.method} is unknown: use quantize=none (default), {' or '.join(QUANTIZERS)}"),
        (q.coder in CODERS, f"quantize.coder={q.coder} is unknown: use quantize.coder={', '.join(CODERS)}"),
        (q.bits is None or _is_bits(q.bits),
         f"quantize.bits={q.bits} is out of range: bits per weight are a whole number in [1, {MAX_BITS}], "
         "e.g. quantize.bits=5 (or null: the budget's, else 8)"),
        (layer_bits is None or (isinstance(layer_bits, Mapping) and all(_is_bits(v) for v in layer_bits.values())),
         f"quantize.layer_bits={_plain(layer_bits)} is invalid: give whole numbers in [1, {MAX_BITS}] by layer name, "
         "e.g. quantize.layer_bits={conv1: 8, dense1: 5}"),
        (q.index_bits is None or _is_bits(q.index_bits, MAX_INDEX_BITS),
         f"quantize.index_bits={q.index_bits} is out of range: a whole number in [1, {MAX_INDEX_BITS}], e.g. "
         "quantize.index_bits=5 (or null: the file format's default)"),
        (q.method != "none" or (layer_bits is None and q.bits is None),
         f"quantize.{'bits' if layer_bits is None else 'layer_bits'} is set but quantize=none quantizes nothing: "
         "choose quantize=kmeans or linear with it"),
    ]


def _plain(value: Any) -> Any:
    """A config node as plain Python, for messages."""
    return dict(value) if isinstance(value, Mapping) else value


def _is_bits(value: Any, most: int = MAX_BITS) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most


def _criteria_for(method: str) -> str:
    from src.pruning.importance import UNIT_CRITERIA, WEIGHT_CRITERIA

    names = {"unit": UNIT_CRITERIA, "weight": WEIGHT_CRITERIA}.get(method, ())
    return (f"one of {', '.join(names)} (or null: {names[0]})" if names else
            "null: the random and none methods rank by nothing")


def _criterion_ok(prune: Any) -> bool:
    from src.pruning.importance import UNIT_CRITERIA, WEIGHT_CRITERIA

    allowed = {"unit": UNIT_CRITERIA, "weight": WEIGHT_CRITERIA}.get(prune.method, ())
    return prune.criterion is None or prune.criterion in allowed


def _is_percent(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100
