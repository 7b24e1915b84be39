"""Seeded training of the MLP with Keras, reporting each epoch to a callback."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from src.training.data import Splits


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit(
    model: keras.Model, splits: Splits, epochs: int, batch_size: int, verbose: int,
    on_epoch_end: Callable[[int, dict[str, float]], None],
) -> None:
    """Train ``model`` (compiled) in place; ``on_epoch_end(epoch, logs)`` gets epoch 1..epochs and
    Keras's logs (loss, accuracy, val_loss, val_accuracy when a validation split exists)."""
    validation = (splits.x_val, splits.y_val) if len(splits.x_val) else None
    model.fit(
        splits.x_train, splits.y_train, validation_data=validation, epochs=epochs,
        batch_size=batch_size, shuffle=True, verbose=verbose,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch_end(e + 1, logs))],
    )
