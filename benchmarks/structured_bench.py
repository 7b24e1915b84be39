"""What removing whole dependency groups buys in Keras itself: parameters, multiply-adds and inference time of the
compact model (src/training/compact) against the original, both run by Keras on this CPU.

Usage:
    python benchmarks/structured_bench.py [--models resnet20,mobilenetv2] [--fraction 0.5] [--rounds 5]
        [--batches 1,256]

For each model (untrained weights: time and size do not depend on the values), ``--fraction`` of the groups of each
family (src/pruning/groups: channels coupled through residual adds, concatenations, depthwise convs) is removed, the
ones with the smallest L2 norm of their producers' kernel slices; the masked model and the compact model must agree
(max abs difference printed). Both models are timed with their compiled ``predict_on_batch`` alternately in one
process, ``--rounds`` rounds of ABBA per batch size, median of each side; the ratio is original / compact.
Models: ``resnet20`` (He et al.'s CIFAR ResNet-20: three stages of 16/32/64 channels, BN, residual adds, on 28x28),
``mobilenetv2`` (keras.applications MobileNetV2, alpha 1.0, 32x32 input). Output: Markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from src.pruning.groups import Group, groups  # noqa: E402
from src.training.channel_graph import channel_graph  # noqa: E402
from src.training.compact import compact, mask  # noqa: E402

L = keras.layers


def resnet20(input_shape=(28, 28, 1), classes: int = 10) -> keras.Model:
    """He et al. (2016)'s CIFAR ResNet-20: a 3x3 conv (16), three stages of three basic blocks (16, 32, 64 channels;
    the first block of stages 2 and 3 strided, with a 1x1 projection shortcut), global pooling, Dense."""
    def block(x, filters: int, stride: int, name: str):
        y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
        y = L.ReLU(name=f"{name}_relu1")(L.BatchNormalization(name=f"{name}_bn1")(y))
        y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = L.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            x = L.BatchNormalization(name=f"{name}_proj_bn")(x)
        return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([x, y]))

    inputs = keras.Input(input_shape, name="pixels")
    x = L.Rescaling(1 / 255, name="rescale")(inputs)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(
        L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)))
    for stage, filters in enumerate((16, 32, 64), start=1):
        for i in range(3):
            x = block(x, filters, 2 if stage > 1 and i == 0 else 1, f"s{stage}b{i + 1}")
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(classes, name="logits")(x), name="resnet20")


def mobilenetv2(classes: int = 10) -> keras.Model:
    inputs = keras.Input((32, 32, 3), name="pixels")
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=1.0, weights=None, include_top=False,
                                              name="mobilenetv2")
    x = L.GlobalAveragePooling2D(name="pool")(backbone(L.Rescaling(1 / 255, name="rescale")(inputs)))
    return keras.Model(inputs, L.Dense(classes, name="logits")(x), name="mobilenetv2_32")


MODELS = {"resnet20": resnet20, "mobilenetv2": mobilenetv2}


def macs(model: keras.Model) -> int:
    """Multiply-adds of one example: Dense in*out, convolutions output positions x kernel size, depthwise and
    separable convs their own parts (nested models walked into)."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        kind = type(layer).__name__
        if kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
        elif kind in ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D"):
            total += int(np.prod(layer.output.shape[1:-1])) * int(np.prod(layer.kernel.shape))
        elif kind in ("SeparableConv1D", "SeparableConv2D"):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.depthwise_kernel.shape) + np.prod(layer.pointwise_kernel.shape))
    return total


def smallest_fraction(model: keras.Model, found: list[Group], fraction: float) -> list[Group]:
    """``fraction`` of each family's groups (round, ties by position), those whose producers' output slices have the
    smallest L2 norm."""
    kernels = {p: layer for p, layer in _paths(model)}
    families: dict[tuple[str, ...], list[Group]] = {}
    for g in found:
        if g.prunable:
            families.setdefault(tuple(sorted({n for n, _ in g.producers()})), []).append(g)
    chosen = []
    for members in families.values():
        norms = [np.sqrt(sum(float(np.sum(np.take(_out_kernel(kernels[n]), [c], axis=-1) ** 2))
                             for n, c in g.producers())) for g in members]
        order = np.argsort(norms, kind="stable")
        chosen += [members[i] for i in order[:int(np.floor(fraction * len(members) + 0.5))]]
    return chosen


def _paths(model, prefix: str = ""):
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _paths(layer, f"{path}/")
        else:
            yield path, layer


def _out_kernel(layer) -> np.ndarray:
    return np.asarray(layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel)


def time_pair(a: keras.Model, b: keras.Model, x: np.ndarray, rounds: int) -> tuple[float, float]:
    """Median ms of ``a.predict_on_batch(x)`` and ``b``'s, alternated ABBA over ``rounds`` rounds (3 calls each)."""
    for model in (a, b):
        model.predict_on_batch(x)  # trace and warm up
    times = {id(a): [], id(b): []}
    for r in range(rounds):
        for model in ((a, b, b, a) if r % 2 == 0 else (b, a, a, b)):
            start = time.perf_counter()
            for _ in range(3):
                model.predict_on_batch(x)
            times[id(model)].append(1000 * (time.perf_counter() - start) / 3)
    return statistics.median(times[id(a)]), statistics.median(times[id(b)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20,mobilenetv2")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,256")
    args = parser.parse_args(argv)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}; load average {os.getloadavg()[0]:.1f}; Keras {keras.__version__}; {args.fraction:.0%} of "
          "each group family removed\n")
    print("| model | groups (prunable) | params kept | MACs kept | max abs diff | "
          + " | ".join(f"batch {b}: original / compact ms (x)" for b in args.batches.split(",")) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(args.batches.split(",")))
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        model = MODELS[name]()
        nodes, outputs = channel_graph(model)
        found = groups(nodes, outputs)
        removed = smallest_fraction(model, found, args.fraction)
        smaller = compact(model, removed)
        masked = keras.models.clone_model(model)
        masked.set_weights(model.get_weights())
        mask(masked, removed)
        rng = np.random.default_rng(0)
        x1 = rng.integers(0, 256, (8, *model.input_shape[1:])).astype("float32")
        diff = float(np.abs(np.asarray(smaller(x1)) - np.asarray(masked(x1))).max())
        cells = []
        for batch in (int(b) for b in args.batches.split(",")):
            x = rng.integers(0, 256, (batch, *model.input_shape[1:])).astype("float32")
            before, after = time_pair(model, smaller, x, args.rounds)
            cells.append(f"{before:.2f} / {after:.2f} ({before / after:.2f}x)")
        print(f"| {name} | {len(found)} ({sum(g.prunable for g in found)}) | "
              f"{smaller.count_params() / model.count_params():.1%} | {macs(smaller) / macs(model):.1%} | "
              f"{diff:.1e} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
