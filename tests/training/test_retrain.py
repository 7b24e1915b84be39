"""Retraining with masks held (Keras, tiny MLP on 1200 MNIST images): zeros held at every optimizer step,
the gradual and iterative schedules' sparsity, rewinding, and a plain model afterwards."""

import keras
import numpy as np
import pytest

from src.pruning import masks as M
from src.pruning import schedules as S
from src.training import retrain as R
from src.training.data import load_mnist, make_splits
from src.training.model import build_mlp, get_weights, weighted_layers

BATCH = 64  # 1080 training images -> 17 steps per epoch


@pytest.fixture(scope="module")
def splits():
    arrays, fingerprint = load_mnist()
    return make_splits(arrays, fingerprint, train_size=1200, test_size=100, val_fraction=0.1)


def mlp(use_bias: bool = True) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_mlp([28, 28], [64, 32], 10, use_bias)


def config(**overrides) -> R.RetrainConfig:
    return R.RetrainConfig(**{"epochs": 1, "lr": 1e-3, "batch_size": BATCH, "seed": 0, "n_pruned": 2, **overrides})


def layer_fn(method: str):
    return lambda kernels, k: M.layer_masks(kernels, method, k)


class Probe(keras.callbacks.Callback):
    """Records the Dense kernels and biases after every optimizer step and at the start of every fit."""

    def __init__(self):
        super().__init__()
        self.steps, self.starts = [], []

    def on_train_begin(self, logs=None):
        self.starts.append(get_weights(self.model))

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(get_weights(self.model))


# Hidden units pruned with their bias get no gradient (ReLU'(0) = 0), so the unit case also prunes the logits
# layer, whose pruned columns would regrow without the constraint.
@pytest.mark.parametrize("method, optimizer, prune_last", [("weight", "adam", False), ("unit", "sgd", True)])
def test_finetune_holds_pruned_weights_and_biases_at_exactly_zero_after_every_step(splits, method, optimizer,
                                                                                    prune_last):
    model = mlp(use_bias=True)
    n_weights = len(model.weights)
    before, _ = get_weights(model)
    for layer in weighted_layers(model):  # nonzero biases, so a unit's bias has something to lose
        layer.bias.assign(np.full(layer.bias.shape, 0.1, dtype="float32"))
    masks = M.layer_masks(before, method, 60, prune_last)
    n_pruned = 3 if prune_last else 2
    probe, logs = Probe(), []
    cfg = config(epochs=2, optimizer_name=optimizer, momentum=0.9, mask_biases=method == "unit", n_pruned=n_pruned)
    R.finetune(model, splits, cfg, masks, on_epoch_end=lambda *a: logs.append(a), callbacks=[probe])

    assert len(probe.steps) == 2 * 17
    for kernels, biases in probe.steps:
        for w, b, m in zip(kernels, biases, masks, strict=True):
            assert (w[~m] == 0.0).all()
            assert (b[~m.any(axis=0)] == 0.0).all()
    kernels, biases = get_weights(model)
    assert all((w[m] != w0[m]).mean() > 0.2 for w, w0, m in zip(kernels, before, masks, strict=True))  # trained
    if method == "unit":
        assert all((b[m.any(axis=0)] != 0).all() for b, m in zip(biases, masks, strict=True))  # survivors' biases
    assert [e for e, _ in logs] == [1, 2]
    assert set(logs[0][1]) == {"finetune_loss", "finetune_accuracy", "val_loss", "val_accuracy", "sparsity"}
    assert logs[-1][1]["sparsity"] == pytest.approx(M.sparsity(kernels[:n_pruned]))
    assert all(v.constraint is None for v in model.weights) and len(model.weights) == n_weights  # plain again


def test_gradual_sparsity_follows_the_plan_at_every_step_and_ends_at_k(splits):
    model, probe, logs = mlp(use_bias=False), Probe(), []
    R.gradual(model, splits, config(epochs=2), layer_fn("weight"), final_k=80.0, initial_k=10.0, frequency=5,
              on_epoch_end=lambda *a: logs.append(a), callbacks=[probe])

    plan = S.gradual_plan(34, 5, 10.0, 80.0)  # 2 epochs x 17 steps; updates at 0, 5, 10, 15, 20, 24
    assert [s for s, _ in plan] == [0, 5, 10, 15, 20, 24]
    for step, (kernels, _) in enumerate(probe.steps, start=1):
        k = [k for s, k in plan if s <= step][-1]
        zeros = [int(w.size - np.count_nonzero(w)) for w in kernels]
        assert zeros == [M.n_to_prune(k, w.size) for w in kernels[:2]] + [0], step
    assert probe.steps[23][0][0].size - np.count_nonzero(probe.steps[23][0][0]) == M.n_to_prune(80.0, 784 * 64)
    assert [e for e, _ in logs] == [1, 2]
    final = sum(M.n_to_prune(80.0, w.size) for w in get_weights(model)[0][:2]) / (784 * 64 + 64 * 32)
    assert logs[-1][1]["sparsity"] == final


def test_iterative_rounds_follow_iterative_targets_and_end_exactly_at_k(splits):
    model, logs = mlp(use_bias=False), []
    R.iterative(model, splits, config(epochs=3), layer_fn("unit"), final_k=87.5, rounds=3,
                on_epoch_end=lambda *a: logs.append(a))

    assert [e for e, _ in logs] == [1, 2, 3]  # one epoch per round
    targets = S.iterative_targets(87.5, 3)  # 50, 75, 87.5: halves the remaining units each round
    assert targets == pytest.approx([50.0, 75.0, 87.5])
    for (_, log), k in zip(logs, targets, strict=True):
        pruned = [M.n_to_prune(k, 64) * 784, M.n_to_prune(k, 32) * 64]  # whole columns of 784x64 and 64x32
        assert log["sparsity"] == pytest.approx(sum(pruned) / (784 * 64 + 64 * 32))
    kernels, _ = get_weights(model)
    assert [int((~w.any(axis=0)).sum()) for w in kernels] == [M.n_to_prune(87.5, 64), M.n_to_prune(87.5, 32), 0]


def test_rewind_resets_survivors_to_the_initial_weights_before_each_round(splits):
    model = mlp(use_bias=True)
    rng = np.random.default_rng(0)
    init_kernels, _ = get_weights(model)
    init_biases = [rng.normal(size=layer.bias.shape).astype("float32") for layer in weighted_layers(model)]
    probe = Probe()
    R.iterative(model, splits, config(epochs=2, mask_biases=True), layer_fn("unit"), final_k=75.0, rounds=3,
                rewind_to=(init_kernels, init_biases), callbacks=[probe])  # rounds train 1, 1, 0 epochs

    final = get_weights(model)
    states = [*probe.starts, final]  # weights before rounds 1 and 2 trained, and after round 3 (no training)
    targets = S.iterative_targets(75.0, 3)
    pruned_before = [np.zeros(w.shape[1], dtype=bool) for w in init_kernels]
    for (kernels, biases), k in zip(states, targets, strict=True):
        for i, (w, b, w0, b0) in enumerate(zip(kernels, biases, init_kernels, init_biases, strict=True)):
            dead = ~w.any(axis=0)
            assert dead.sum() == (M.n_to_prune(k, w.shape[1]) if i < 2 else 0)
            assert (dead >= pruned_before[i]).all()  # masks are nested
            np.testing.assert_array_equal(w[:, ~dead], w0[:, ~dead])  # survivors: exactly the initial values
            np.testing.assert_array_equal(b[~dead], b0[~dead])
            assert (b[dead] == 0).all()
            pruned_before[i] = dead


def test_masked_model_is_exclusive_and_saved_model_loads_with_plain_keras(splits, tmp_path):
    model = mlp(use_bias=False)
    masks = M.layer_masks(get_weights(model)[0], "weight", 90)
    with R.MaskedModel(model):
        with pytest.raises(ValueError, match="already has a constraint"):
            R.MaskedModel(model)
    R.finetune(model, splits, config(), masks)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    for w, m in zip(get_weights(loaded)[0], masks, strict=True):
        assert (w[~m] == 0).all()
    x = splits.x_test[:20]
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
