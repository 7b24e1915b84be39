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
    """Holds one mask per Dense kernel and bias of ``model`` through :class:`MaskConstraint`s (all-keep at
    first). Attach before ``compile``. As a context manager it detaches the constraints on exit."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._variables = [v for layer in weighted_layers(model) for v in (layer.kernel, layer.bias) if v is not None]
        for v in self._variables:
            if v.constraint is not None:
                raise ValueError(f"{v.path} already has a constraint: detach the other MaskedModel first")
            v.constraint = MaskConstraint(keras.Variable(np.ones(v.shape), dtype=v.dtype, trainable=False,
                                                         name=v.path.replace("/", "_") + "_mask"))

    def set_masks(self, kernel_masks: list[np.ndarray], bias_masks: list[np.ndarray] | None = None) -> None:
        """Hold these masks (True = keep; ``bias_masks`` None keeps every bias) and zero the pruned weights now."""
        layers = weighted_layers(self.model)
        if len(kernel_masks) != len(layers) or (bias_masks is not None and len(bias_masks) != len(layers)):
            raise ValueError(f"need one mask per weighted layer ({len(layers)})")
        for i, layer in enumerate(layers):
            self._hold(layer.kernel, kernel_masks[i])
            if layer.bias is not None:
                self._hold(layer.bias, np.ones(layer.bias.shape, bool) if bias_masks is None else bias_masks[i])

    @staticmethod
    def _hold(variable: keras.Variable, mask: np.ndarray) -> None:
        variable.constraint.mask.assign(np.asarray(mask, dtype=variable.dtype))
        variable.assign(variable.constraint(variable))

    def detach(self) -> None:
        """Remove the constraints: the model is plain Keras again (its zeros stay until trained further)."""
        for v in self._variables:
            v.constraint = None

    def __enter__(self) -> MaskedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


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


def _hold(masked: MaskedModel, cfg: RetrainConfig, kernel_masks: list[np.ndarray]) -> None:
    masked.set_masks(kernel_masks, M.bias_masks(kernel_masks) if cfg.mask_biases else None)


def _epoch_logs(model: keras.Model, n_pruned: int, logs: dict) -> dict[str, float]:
    out = {"finetune_loss": float(logs["loss"]), "finetune_accuracy": float(logs["accuracy"]),
           "sparsity": M.sparsity(get_weights(model)[0][:n_pruned])}
    out.update({key: float(logs[key]) for key in ("val_loss", "val_accuracy") if key in logs})
    return out


def _fit(model: keras.Model, splits: Splits, cfg: RetrainConfig, first_epoch: int, epochs: int,
         on_epoch_end: EpochHook | None, callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Train ``epochs`` epochs numbered first_epoch+1.. with a fresh optimizer; report each epoch."""
    compile_model(model, cfg.optimizer_name, cfg.lr, cfg.momentum)
    report = [] if on_epoch_end is None else [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: on_epoch_end(e + 1, _epoch_logs(model, cfg.n_pruned, logs)))]
    validation = (splits.x_val, splits.y_val) if len(splits.x_val) else None
    model.fit(splits.x_train, splits.y_train, validation_data=validation, initial_epoch=first_epoch,
              epochs=first_epoch + epochs, batch_size=cfg.batch_size, shuffle=True, verbose=cfg.verbose,
              callbacks=[*callbacks, *report])


def finetune(model: keras.Model, splits: Splits, cfg: RetrainConfig, kernel_masks: list[np.ndarray],
             on_epoch_end: EpochHook | None = None, callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
    """One-shot pruning with ``kernel_masks`` (one per Dense layer), then ``cfg.epochs`` epochs with them held.

    ``on_epoch_end(epoch, logs)``: epoch 1..cfg.epochs; logs finetune_loss, finetune_accuracy, sparsity
    (fraction of zero weights in the pruned layers) and, with a validation split, val_loss and val_accuracy.
    ``callbacks``: extra Keras callbacks, run after the mask updates of each batch."""
    keras.utils.set_random_seed(cfg.seed)
    with MaskedModel(model) as masked:
        _hold(masked, cfg, kernel_masks)
        _fit(model, splits, cfg, 0, cfg.epochs, on_epoch_end, callbacks)


class _GradualPruner(keras.callbacks.Callback):
    """Re-masks at the planned optimizer steps (step = optimizer steps done since training began). It
    overrides ``on_train_batch_end``, so Keras calls it synchronously between steps (no async dispatch)."""

    def __init__(self, masked: MaskedModel, cfg: RetrainConfig, mask_fn: MaskFn, plan: dict[int, K]) -> None:
        super().__init__()
        self.masked, self.cfg, self.mask_fn, self.plan = masked, cfg, mask_fn, plan
        self.step = 0

    def _update(self) -> None:
        if self.step in self.plan:
            _hold(self.masked, self.cfg, self.mask_fn(get_weights(self.masked.model)[0], self.plan[self.step]))

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
            on_epoch_end: EpochHook | None = None, callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
    """Gradual pruning (Zhu & Gupta 2017) over the budget of ``cfg.epochs`` epochs: the mask is recomputed by
    ``mask_fn`` from the current weights at the steps of :func:`src.pruning.schedules.gradual_plan` (every ``frequency``
    optimizer steps, k rising from ``initial_k`` to ``final_k`` percent along the cubic over the first
    ``span_fraction`` of the steps), then the ``final_k`` mask is held to the end; with one final k per layer,
    each layer follows its own cubic. Logs as :func:`finetune`."""
    total = cfg.epochs * steps_per_epoch(len(splits.x_train), cfg.batch_size)
    plan = dict(S.gradual_plan(total, frequency, initial_k, final_k, span_fraction, power) if np.isscalar(final_k)
                else S.layer_gradual_plan(total, frequency, initial_k, final_k, span_fraction, power))
    keras.utils.set_random_seed(cfg.seed)
    with MaskedModel(model) as masked:
        _fit(model, splits, cfg, 0, cfg.epochs, on_epoch_end, [_GradualPruner(masked, cfg, mask_fn, plan), *callbacks])


def iterative(model: keras.Model, splits: Splits, cfg: RetrainConfig, mask_fn: MaskFn, final_k: K,
              rounds: int, rewind_to: tuple[list[np.ndarray], list[np.ndarray | None]] | None = None,
              on_epoch_end: EpochHook | None = None, callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
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
    with MaskedModel(model) as masked:
        for k, epochs in zip(targets, shares, strict=True):
            kernel_masks = mask_fn(get_weights(model)[0], k)
            if rewind_to is not None:
                set_weights(model, *rewind_to)
            _hold(masked, cfg, kernel_masks)
            if epochs:
                _fit(model, splits, cfg, done, epochs, on_epoch_end, callbacks)
                done += epochs
