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
Models: ``model=resnet20`` and ``model=mobilenetv2`` of src/training/architectures (He et al.'s CIFAR ResNet-20 on
28x28; keras.applications MobileNetV2, alpha 1.0, on MNIST padded to 32x32). ``--reference`` adds, for MobileNetV2,
Keras's own half-width model (alpha 0.5, every layer's channels halved by keras.applications) timed against the same
original: what a natively narrow model of about the compact one's size gains on this CPU. Output: Markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from src.pruning.groups import Group  # noqa: E402
from src.records.structured_prune import GroupPlan  # noqa: E402
from src.training.architectures import mobilenetv2, resnet20  # noqa: E402
from src.training.compact import compact, mask  # noqa: E402
from src.training.keras_timing import time_pair  # noqa: E402
from src.training.model_cost import macs  # noqa: E402

MODELS = {"resnet20": lambda: resnet20([28, 28], 10, [16, 32, 64], 3),
          "mobilenetv2": lambda: mobilenetv2([28, 28], 10, 1.0, 32)}
REFERENCES = {"mobilenetv2": ("Keras's MobileNetV2 alpha 0.5", lambda: mobilenetv2([28, 28], 10, 0.5, 32))}


def smallest_fraction(model: keras.Model, fraction: float) -> tuple[list[Group], list[Group]]:
    """(all groups, ``fraction`` of each family's groups removed by the default criterion, l2)."""
    plan = GroupPlan(model, SimpleNamespace(method="unit", k=100 * fraction, layer_k=None, scope="layer",
                                            min_keep=0.01, seed=0, criterion=None), None)
    return plan.groups, plan.removed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20,mobilenetv2")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--reference", action="store_true",
                        help="also time Keras's own alpha 0.5 MobileNetV2 against the original (a row of its own)")
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
        found, removed = smallest_fraction(model, args.fraction)
        smaller = compact(model, removed)
        masked = keras.models.clone_model(model)
        masked.set_weights(model.get_weights())
        mask(masked, removed)
        rng = np.random.default_rng(0)
        x1 = rng.integers(0, 256, (8, *model.input_shape[1:])).astype("float32")
        diff = float(np.abs(np.asarray(smaller(x1)) - np.asarray(masked(x1))).max())
        print(f"| {name} | {len(found)} ({sum(g.prunable for g in found)}) | "
              f"{smaller.count_params() / model.count_params():.1%} | {macs(smaller) / macs(model):.1%} | "
              f"{diff:.1e} | " + " | ".join(timed_cells(model, smaller, args, rng)) + " |", flush=True)
        if args.reference and name in REFERENCES:
            label, build = REFERENCES[name]
            narrow = build()
            print(f"| {label} (reference) | | {narrow.count_params() / model.count_params():.1%} | "
                  f"{macs(narrow) / macs(model):.1%} | | " + " | ".join(timed_cells(model, narrow, args, rng)) + " |",
                  flush=True)


def timed_cells(model: keras.Model, smaller: keras.Model, args: argparse.Namespace, rng: np.random.Generator
                ) -> list[str]:
    """One table cell per ``--batches`` entry: original / smaller ms per batch and their ratio (time_pair)."""
    cells = []
    for batch in (int(b) for b in args.batches.split(",")):
        x = rng.integers(0, 256, (batch, *model.input_shape[1:])).astype("float32")
        before, after = time_pair(model, smaller, x, args.rounds)
        cells.append(f"{before:.2f} / {after:.2f} ({before / after:.2f}x)")
    return cells


if __name__ == "__main__":
    main()
