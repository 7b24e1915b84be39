"""Evaluate and time a pruned model the way its layers allow: numpy for the nets the engine covers, Keras for
the rest.

- An MLP (flatten, rescale, dense chain): src/engine/dense.forward_dense on the model's own preprocessing and
  src/engine/evaluation.time_evaluation, exactly as the classic study measured it.
- Any other net of rescale, flatten, dense, conv2d and maxpool2d layers: src/engine/network.forward and the
  engine's network timing.
- A net the sparse kernels cannot run (src/engine/net_engine.not_covered): numpy evaluates it, timing is its
  dense forward pass alone, and ``eval.engine_used`` says ``dense (unsupported: <why>)``.
A model with a layer src/engine/network does not express never comes here: src/records/graph_prune runs it in Keras.
Times in ms, accuracies 0..1, losses in nats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.engine.dense import forward_dense
from src.engine.evaluation import accuracy_and_loss, time_evaluation, time_network_evaluation
from src.engine.net_engine import not_covered
from src.engine.network import Network, as_mlp, forward, with_weights
from src.engine.timing import Idle
from src.training.data import Splits, as_inputs
from src.training.keras_file import read_input_shape, read_network

Weights = tuple[list[np.ndarray], list[np.ndarray | None]]


@dataclass(frozen=True)
class Evaluator:
    """How a trained model file is evaluated: ``net`` (its layers as src/engine/network expresses them), and why
    the sparse kernels cannot run it (``unsupported``, None when they can)."""

    model_path: Path
    net: Network
    unsupported: str | None

    @property
    def is_mlp(self) -> bool:
        return as_mlp(self.net) is not None

    def logits(self, pruned: Weights, pixels: np.ndarray) -> np.ndarray:
        """The pruned model's logits for raw ``pixels``."""
        if self.is_mlp:
            return forward_dense(*pruned, as_inputs(pixels))
        return forward(with_weights(self.net, *pruned), pixels)

    def scores(self, pruned: Weights, splits: Splits) -> tuple[dict[str, float], np.ndarray]:
        """(test accuracy and loss and validation accuracy (NaN without a validation split), test logits)."""
        logits = self.logits(pruned, splits.x_test)
        test_accuracy, test_loss = accuracy_and_loss(logits, splits.y_test)
        val_accuracy = (accuracy_and_loss(self.logits(pruned, splits.x_val), splits.y_val)[0]
                        if len(splits.x_val) else float("nan"))
        return {"test_accuracy": test_accuracy, "test_loss": test_loss, "val_accuracy": val_accuracy}, logits

    def timing(self, pruned: Weights, splits: Splits, eval_cfg: Any, test_logits: np.ndarray,
               idle: Idle | None = None) -> tuple[dict[str, float], dict[str, str]]:
        """(timing metrics, {eval.engine_used, eval.latency_engine_used}) at ``eval.timing``; ``idle``: how the
        quick protocol lets the cores settle (src/engine/timing.IdleWork)."""
        e = eval_cfg
        if self.unsupported is not None:
            engine = f"dense (unsupported: {self.unsupported})"
            dense_ms = median_ms(lambda: self.logits(pruned, splits.x_test), e.repeats)
            return {"dense_eval_ms": dense_ms}, {"eval.engine_used": engine, "eval.latency_engine_used": engine}
        if self.is_mlp:
            timed = time_evaluation(*pruned, as_inputs(splits.x_test), e.timing, e.engine, e.repeats, e.warmup,
                                    e.settle_s, test_logits, idle)
        else:
            timed = time_network_evaluation(with_weights(self.net, *pruned), splits.x_test, e.timing, e.engine,
                                            e.repeats, e.warmup, e.settle_s, test_logits, idle)
        return timed.metrics, {"eval.engine_used": timed.engine, "eval.latency_engine_used": timed.latency_engine}


def evaluator(model_path: Path) -> Evaluator:
    """The :class:`Evaluator` of a trained model file the engine expresses (its layers read without Keras)."""
    net = read_network(model_path)
    reason = None if as_mlp(net) is not None else not_covered(net, read_input_shape(model_path))
    return Evaluator(model_path, net, reason)


def median_ms(run, repeats: int) -> float:
    """Median ms of ``run()`` over ``repeats`` calls, after one untimed call."""
    run()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))
