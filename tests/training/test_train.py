"""Training's learning-rate schedule: ``train.lr_schedule=cosine`` decays the rate to 0 over the whole training."""

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from src.records.train_run import cosine_steps
from src.training.data import Splits
from src.training.model import build_mlp, compile_model
from src.training.train import fit


def tiny_splits(n: int = 100) -> Splits:
    rng = np.random.default_rng(0)
    x = rng.random((n, 4, 4), dtype=np.float32)
    y = rng.integers(0, 3, n)
    return Splits(x, y, x[:10], y[:10], x[:10], y[:10], "fp")


def learning_rate(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


@pytest.mark.parametrize("schedule, start, end", [("constant", 1e-2, 1e-2), ("cosine", 1e-2, 0.0)])
def test_the_learning_rate_follows_the_schedule_over_the_whole_training(schedule, start, end) -> None:
    splits = tiny_splits()
    cfg = OmegaConf.create({"train": {"lr_schedule": schedule, "epochs": 3, "batch_size": 32}})
    steps = cosine_steps(cfg, splits)
    assert steps == (3 * 4 if schedule == "cosine" else 0)  # 100 images in batches of 32: 4 steps an epoch
    keras.utils.set_random_seed(0)
    model = compile_model(build_mlp([4, 4], [8], 3, True), "adam", 1e-2, cosine_steps=steps)
    assert learning_rate(model) == pytest.approx(start)
    rates = []
    fit(model, splits, 3, 32, 0, lambda epoch, logs: rates.append(learning_rate(model)))
    assert rates[-1] == pytest.approx(end, abs=1e-9)
    if schedule == "cosine":  # half-way through (epoch 1.5 of 3) a cosine is at half the rate: after epoch 1 above it
        assert start > rates[0] > start / 2 > rates[1] > rates[2]
