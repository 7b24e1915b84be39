"""Pruning with retraining: Keras 3 training loops that hold pruning masks (fine-tune, gradual, iterative).

How a mask is held: every Dense or Conv2D kernel (and bias) variable gets a :class:`MaskConstraint`. Keras 3's
``BaseOptimizer.apply`` (keras 3.15, used by the TensorFlow train step via ``apply_gradients``) runs
``variable.assign(variable.constraint(variable))`` for each trainable variable right after the gradient
update, inside the compiled train step, so pruned weights are exactly 0.0 after every optimizer step. The
mask lives in a non-trainable ``keras.Variable`` outside the layers: changing it needs no retrace, and it is
never saved with the model. Constraints are read when the train step is traced, so masks are attached
before ``compile`` (which drops the traced step); every loop here compiles a fresh optimizer after that.

The caller supplies the masks (one-shot) or ``mask_fn(kernels, k) -> masks`` (k in percent, or one per pruned layer;
kernels of all weighted layers), e.g. ``lambda kernels, k: masks.layer_masks(kernels, method, k, prune_last)``, so this
module knows nothing of methods and scopes. Each loop detaches the constraints when it ends, leaving a
plain Keras model whose pruned weights are zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from src.pruning import masks as M
from src.pruning import schedules as S
from src.training.data import Splits
from src.training.keras_graph import GraphModel
from src.training.model import compile_model, get_weights, set_weights, weighted_layers

K = float | list[float]  # one k (percent) for every pruned layer, or one per pruned layer
MaskFn = Callable[[list[np.ndarray], K], list[np.ndarray]]
EpochHook = Callable[[int, dict[str, float]], None]


class MaskConstraint(keras.constraints.Constraint):
    """``w -> w * mask``; ``mask`` is a non-trainable variable of ``w``'s shape and dtype (1 keep, 0 prune)."""

    def __init__(self, mask: keras.Variable) -> None:
        self.mask = mask

    def __call__(self, w):
        return keras.ops.multiply(w, self.mask)


class MaskedModel:
    """Holds one mask per Dense/Conv2D kernel and bias of ``model`` through :class:`MaskConstraint`s (all-keep at
    first). Attach before ``compile``. As a context manager it detaches the constraints on exit.

    What the loops use: :meth:`current` (what a mask function ranks: the kernels), :meth:`hold` (masks as a mask
    function returns them; with ``mask_biases`` a fully pruned unit's bias too), :meth:`sparsity` and
    :meth:`restore`. :class:`MaskedGraph` is the same for any model's prunable tensors."""

    def __init__(self, model: keras.Model, mask_biases: bool = False, n_pruned: int | None = None) -> None:
        self.model, self.mask_biases = model, mask_biases
        self.n_pruned = len(weighted_layers(model)) if n_pruned is None else n_pruned
        self._variables = [v for layer in weighted_layers(model) for v in (layer.kernel, layer.bias) if v is not None]
        _attach(self._variables)

    def set_masks(self, kernel_masks: list[np.ndarray], bias_masks: list[np.ndarray] | None = None) -> None:
        """Hold these masks (True = keep; ``bias_masks`` None keeps every bias) and zero the pruned weights now."""
        layers = weighted_layers(self.model)
        if len(kernel_masks) != len(layers) or (bias_masks is not None and len(bias_masks) != len(layers)):
            raise ValueError(f"need one mask per weighted layer ({len(layers)})")
        for i, layer in enumerate(layers):
            _hold_variable(layer.kernel, kernel_masks[i])
            if layer.bias is not None:
                _hold_variable(layer.bias, np.ones(layer.bias.shape, bool) if bias_masks is None else bias_masks[i])

    def current(self) -> list[np.ndarray]:
        return get_weights(self.model)[0]

    def hold(self, kernel_masks: list[np.ndarray]) -> None:
        self.set_masks(kernel_masks, M.bias_masks(kernel_masks) if self.mask_biases else None)

    def sparsity(self) -> float:
        return M.sparsity(self.current()[:self.n_pruned])

    def restore(self, weights: tuple[list[np.ndarray], list[np.ndarray | None]]) -> None:
        set_weights(self.model, *weights)

    def detach(self) -> None:
        """Remove the constraints: the model is plain Keras again (its zeros stay until trained further)."""
        for v in self._variables:
            v.constraint = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


class MaskedGraph(MaskedModel):
    """:class:`MaskedModel` for any model's prunable tensors (src/training/keras_graph): one mask per tensor of
    ``graph`` (biases included: the mask function decides them), ``pruned`` the indices whose sparsity is reported."""

    def __init__(self, graph: GraphModel, pruned: list[int]) -> None:
        self.model, self.graph, self.pruned = graph.model, graph, pruned
        self._variables = list(graph.variables)
        _attach(self._variables)

    def current(self) -> list[np.ndarray]:
        return self.graph.arrays()

    def hold(self, tensor_masks: list[np.ndarray]) -> None:
        for v, m in zip(self._variables, tensor_masks, strict=True):
            _hold_variable(v, m)

    def sparsity(self) -> float:
        arrays = self.current()
        return M.sparsity([arrays[i] for i in self.pruned])

    def restore(self, weights: list[np.ndarray]) -> None:
        self.graph.assign(weights)


class MaskedGroups(MaskedModel):
    """:class:`MaskedModel` over every trainable variable of ``model`` (kernels, biases, BatchNormalization gamma and
    beta...): the masks of whole dependency groups (src/training/compact.variable_masks), so a removed channel stays
    0 in every slice while the model retrains; ``kernels`` (variables) are what :meth:`sparsity` reports on."""

    def __init__(self, model: keras.Model, kernels: list) -> None:
        self.model, self._kernels = model, kernels
        self._variables = list(model.trainable_weights)
        _attach(self._variables)

    def current(self) -> list[np.ndarray]:
        return [np.asarray(v.numpy()) for v in self._variables]

    def hold(self, masks: list[np.ndarray]) -> None:
        for v, m in zip(self._variables, masks, strict=True):
            _hold_variable(v, m)

    def sparsity(self) -> float:
        return M.sparsity([np.asarray(v.numpy()) for v in self._kernels])

    def restore(self, weights: list[np.ndarray]) -> None:
        for v, w in zip(self._variables, weights, strict=True):
            v.assign(w)


def _attach(variables: list) -> None:
    for v in variables:
        if v.constraint is not None:
            raise ValueError(f"{v.path} already has a constraint: detach the other MaskedModel first")
        v.constraint = MaskConstraint(keras.Variable(np.ones(v.shape), dtype=v.dtype, trainable=False,
                                                     name=v.path.replace("/", "_") + "_mask"))


def _hold_variable(variable: keras.Variable, mask: np.ndarray) -> None:
    variable.constraint.mask.assign(np.asarray(mask, dtype=variable.dtype))
    variable.assign(variable.constraint(variable))


@dataclass(frozen=True)
class RetrainConfig:
    """Settings shared by the loops. ``epochs`` is the whole retraining budget; ``n_pruned`` the number of
    leading Dense layers that are pruned (``sparsity`` is reported over them); ``mask_biases`` (unit
    pruning) also zeroes and holds at zero the bias of every unit whose kernel column is fully pruned."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    n_pruned: int
    optimizer_name: str = "adam"
    momentum: float = 0.0
    mask_biases: bool = False
    verbose: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1 for retraining, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def _masked(model: keras.Model, cfg: RetrainConfig, masked: MaskedModel | None) -> MaskedModel:
    """``masked`` (a :class:`MaskedGraph`), or the chain's :class:`MaskedModel` of ``model``."""
    return masked if masked is not None else MaskedModel(model, cfg.mask_biases, cfg.n_pruned)


def _epoch_logs(masked: MaskedModel, logs: dict) -> dict[str, float]:
    return {**_epoch_logs_of(logs), "sparsity": masked.sparsity()}


def _fit(masked: MaskedModel, splits: Splits, cfg: RetrainConfig, first_epoch: int, epochs: int,
         on_epoch_end: EpochHook | None, callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Train ``epochs`` epochs numbered first_epoch+1.. with a fresh optimizer; report each epoch."""
    model = masked.model
    compile_model(model, cfg.optimizer_name, cfg.lr, cfg.momentum)
    report = [] if on_epoch_end is None else [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: on_epoch_end(e + 1, _epoch_logs(masked, logs)))]
    validation = (splits.x_val, splits.y_val) if len(splits.x_val) else None
    model.fit(splits.x_train, splits.y_train, validation_data=validation, initial_epoch=first_epoch,
              epochs=first_epoch + epochs, batch_size=cfg.batch_size, shuffle=True, verbose=cfg.verbose,
              callbacks=[*callbacks, *report])


def finetune(model: keras.Model, splits: Splits, cfg: RetrainConfig, kernel_masks: list[np.ndarray],
             on_epoch_end: EpochHook | None = None, callbacks: Sequence[keras.callbacks.Callback] = (),
             masked: MaskedModel | None = None) -> None:
    """One-shot pruning with ``kernel_masks`` (one per Dense layer, or per tensor of ``masked``, a
    :class:`MaskedGraph`), then ``cfg.epochs`` epochs with them held.

    ``on_epoch_end(epoch, logs)``: epoch 1..cfg.epochs; logs finetune_loss, finetune_accuracy, sparsity
    (fraction of zero weights in the pruned layers) and, with a validation split, val_loss and val_accuracy.
    ``callbacks``: extra Keras callbacks, run after the mask updates of each batch."""
    keras.utils.set_random_seed(cfg.seed)
    with _masked(model, cfg, masked) as held:
        held.hold(kernel_masks)
        _fit(held, splits, cfg, 0, cfg.epochs, on_epoch_end, callbacks)


class _GradualPruner(keras.callbacks.Callback):
    """Re-masks at the planned optimizer steps (step = optimizer steps done since training began). It
    overrides ``on_train_batch_end``, so Keras calls it synchronously between steps (no async dispatch)."""

    def __init__(self, masked: MaskedModel, cfg: RetrainConfig, mask_fn: MaskFn, plan: dict[int, K]) -> None:
        super().__init__()
        self.masked, self.cfg, self.mask_fn, self.plan = masked, cfg, mask_fn, plan
        self.step = 0

    def _update(self) -> None:
        if self.step in self.plan:
            self.masked.hold(self.mask_fn(self.masked.current(), self.plan[self.step]))

    def on_train_begin(self, logs=None) -> None:
        self._update()

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.step += 1
        self._update()


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``model.fit`` (the last batch may be short)."""
    return math.ceil(n_examples / batch_size)


def gradual(model: keras.Model, splits: Splits, cfg: RetrainConfig, mask_fn: MaskFn, final_k: K,
            initial_k: float = 0.0, frequency: int = 100, span_fraction: float = 0.7, power: float = 3,
            on_epoch_end: EpochHook | None = None, callbacks: Sequence[keras.callbacks.Callback] = (),
            masked: MaskedModel | None = None) -> None:
    """Gradual pruning (Zhu & Gupta 2017) over the budget of ``cfg.epochs`` epochs: the mask is recomputed by
    ``mask_fn`` from the current weights at the steps of :func:`src.pruning.schedules.gradual_plan` (every ``frequency``
    optimizer steps, k rising from ``initial_k`` to ``final_k`` percent along the cubic over the first
    ``span_fraction`` of the steps), then the ``final_k`` mask is held to the end; with one final k per layer,
    each layer follows its own cubic. Logs as :func:`finetune`."""
    total = cfg.epochs * steps_per_epoch(len(splits.x_train), cfg.batch_size)
    plan = dict(S.gradual_plan(total, frequency, initial_k, final_k, span_fraction, power) if np.isscalar(final_k)
                else S.layer_gradual_plan(total, frequency, initial_k, final_k, span_fraction, power))
    keras.utils.set_random_seed(cfg.seed)
    with _masked(model, cfg, masked) as held:
        _fit(held, splits, cfg, 0, cfg.epochs, on_epoch_end, [_GradualPruner(held, cfg, mask_fn, plan), *callbacks])


def iterative(model: keras.Model, splits: Splits, cfg: RetrainConfig, mask_fn: MaskFn, final_k: K,
              rounds: int, rewind_to: tuple[list[np.ndarray], list[np.ndarray | None]] | None = None,
              on_epoch_end: EpochHook | None = None, callbacks: Sequence[keras.callbacks.Callback] = (),
              masked: MaskedModel | None = None) -> None:
    """``rounds`` rounds; round r masks with ``mask_fn`` at
    :func:`src.pruning.schedules.iterative_targets` (final_k, rounds)[r] (the last is ``final_k`` exactly) from
    the current weights, then trains its share :func:`src.pruning.schedules.split_epochs` (cfg.epochs, rounds)[r]
    with a fresh optimizer (a round with 0 epochs only prunes). ``rewind_to`` = (kernels, biases) of every Dense
    layer: before each round's training, the surviving weights are reset to these values (lottery-ticket
    rewinding). One final k per layer: each layer's targets follow the same rule. Epochs are numbered across
    rounds; logs as :func:`finetune`."""
    targets = (S.iterative_targets(final_k, rounds) if np.isscalar(final_k)
               else S.layer_iterative_targets(final_k, rounds))
    shares = S.split_epochs(cfg.epochs, rounds)
    keras.utils.set_random_seed(cfg.seed)
    done = 0
    with _masked(model, cfg, masked) as held:
        for k, epochs in zip(targets, shares, strict=True):
            kernel_masks = mask_fn(held.current(), k)
            if rewind_to is not None:
                held.restore(rewind_to)
            held.hold(kernel_masks)
            if epochs:
                _fit(held, splits, cfg, done, epochs, on_epoch_end, callbacks)
                done += epochs


def train_compact(model: keras.Model, splits: Splits, cfg: RetrainConfig, sparsity: float,
                  on_epoch_end: EpochHook | None = None, cosine: bool = False) -> None:
    """Fine-tune a compact model (src/training/compact: the removed channels are gone, so nothing is masked) for
    ``cfg.epochs`` epochs with a fresh optimizer, with ``cosine`` its lr decaying to 0 over them; logs as
    :func:`finetune`, ``sparsity`` the job's (constant)."""
    keras.utils.set_random_seed(cfg.seed)
    steps = cfg.epochs * steps_per_epoch(len(splits.x_train), cfg.batch_size) if cosine else 0
    compile_model(model, cfg.optimizer_name, cfg.lr, cfg.momentum, steps)
    report = [] if on_epoch_end is None else [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: on_epoch_end(e + 1, {**_epoch_logs_of(logs), "sparsity": sparsity}))]
    validation = (splits.x_val, splits.y_val) if len(splits.x_val) else None
    model.fit(splits.x_train, splits.y_train, validation_data=validation, epochs=cfg.epochs,
              batch_size=cfg.batch_size, shuffle=True, verbose=cfg.verbose, callbacks=report)


def _epoch_logs_of(logs: dict) -> dict[str, float]:
    out = {"finetune_loss": float(logs["loss"]), "finetune_accuracy": float(logs["accuracy"])}
    out.update({key: float(logs[key]) for key in ("val_loss", "val_accuracy") if key in logs})
    return out
