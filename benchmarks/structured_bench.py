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
from typing import TYPE_CHECKING

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cli import BadInput, Parser, fail, name_list, number_list  # noqa: E402

if TYPE_CHECKING:  # Keras is imported only once the options are checked (its import takes seconds and logs)
    import keras

    from src.pruning.groups import Group

Build = tuple[str, tuple]  # a function of src.training.architectures and its arguments
MODELS: dict[str, Build] = {"resnet20": ("resnet20", ([28, 28], 10, [16, 32, 64], 3)),
                            "mobilenetv2": ("mobilenetv2", ([28, 28], 10, 1.0, 32))}
REFERENCES: dict[str, tuple[str, Build]] = {
    "mobilenetv2": ("Keras's MobileNetV2 alpha 0.5", ("mobilenetv2", ([28, 28], 10, 0.5, 32)))}


def build(spec: Build) -> keras.Model:
    """The untrained model of ``spec`` (MODELS, REFERENCES)."""
    from src.training import architectures

    name, args = spec
    return getattr(architectures, name)(*args)


def smallest_fraction(model: keras.Model, fraction: float) -> tuple[list[Group], list[Group]]:
    """(all groups, ``fraction`` of each family's groups removed by the default criterion, l2)."""
    from src.records.structured_prune import GroupPlan

    plan = GroupPlan(model, SimpleNamespace(method="unit", k=100 * fraction, layer_k=None, scope="layer",
                                            min_keep=0.01, seed=0, criterion=None), None)
    return plan.groups, plan.removed()


def parser() -> Parser:
    """The options, each with what it takes and its default."""
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated models, each once, from "
                    f"{', '.join(MODELS)} (default %(default)s)")
    ap.add_argument("--fraction", type=float, default=0.5, help="share of each group family removed, from 0 up to "
                    "but not including 1 (0: nothing removed, the original rebuilt as a control; a family always "
                    "keeps at least one group; default %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="ABBA timing rounds per batch size, at least 1 (default "
                    "%(default)s)")
    ap.add_argument("--batches", default="1,256", help="comma-separated batch sizes, at least 1 (default "
                    "%(default)s)")
    ap.add_argument("--reference", action="store_true", help="also time Keras's own alpha 0.5 MobileNetV2 against "
                    "the original (a row of its own; off by default)")
    return ap


def settings(args: argparse.Namespace) -> dict:
    """The checked settings of the parsed ``args``: models, batches; BadInput (one line naming the option) for a
    value the benchmark cannot run. Imports and builds nothing."""
    models = name_list("--models", args.models, MODELS, "model", "resnet20,mobilenetv2")
    batches = number_list("--batches", args.batches, int, 1, None, "a batch size: give whole numbers of at least 1, "
                          "e.g. --batches 1,256")
    if not 0 <= args.fraction < 1:
        raise BadInput(f"--fraction {args.fraction:g}: give a fraction from 0 up to but not including 1, e.g. "
                       "--fraction 0.5 (each family keeps at least one group, so no fraction removes all)")
    if args.rounds < 1:
        raise BadInput(f"--rounds {args.rounds}: give at least 1 timing round")
    return {"models": models, "batches": batches}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        checked = settings(args)
    except BadInput as e:
        fail(str(e))
    run(checked["models"], checked["batches"], args.fraction, args.rounds, args.reference)


def run(models: list[str], batches: list[int], fraction: float, rounds: int, reference: bool) -> None:
    """The Markdown table: one row per model (and per reference with ``reference``), one cell per batch size."""
    import keras

    from src.training.compact import compact, mask
    from src.training.model_cost import macs

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}; load average {os.getloadavg()[0]:.1f}; Keras {keras.__version__}; {fraction:.0%} of "
          "each group family removed\n")
    print("| model | groups (prunable) | params kept | MACs kept | max abs diff | "
          + " | ".join(f"batch {b}: original / compact ms (x)" for b in batches) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(batches))
    for name in models:
        keras.utils.set_random_seed(0)
        model = build(MODELS[name])
        found, removed = smallest_fraction(model, fraction)
        smaller = compact(model, removed)
        masked = keras.models.clone_model(model)
        masked.set_weights(model.get_weights())
        mask(masked, removed)
        rng = np.random.default_rng(0)
        x1 = rng.integers(0, 256, (8, *model.input_shape[1:])).astype("float32")
        diff = float(np.abs(np.asarray(smaller(x1)) - np.asarray(masked(x1))).max())
        print(f"| {name} | {len(found)} ({sum(g.prunable for g in found)}) | "
              f"{smaller.count_params() / model.count_params():.1%} | {macs(smaller) / macs(model):.1%} | "
              f"{diff:.1e} | " + " | ".join(timed_cells(model, smaller, batches, rounds, rng)) + " |", flush=True)
        if reference and name in REFERENCES:
            label, spec = REFERENCES[name]
            narrow = build(spec)
            print(f"| {label} (reference) | | {narrow.count_params() / model.count_params():.1%} | "
                  f"{macs(narrow) / macs(model):.1%} | | "
                  + " | ".join(timed_cells(model, narrow, batches, rounds, rng)) + " |", flush=True)


def timed_cells(model: keras.Model, smaller: keras.Model, batches: list[int], rounds: int, rng: np.random.Generator
                ) -> list[str]:
    """One table cell per batch size: original / smaller ms per batch and their ratio (time_pair)."""
    from src.training.keras_timing import time_pair

    cells = []
    for batch in batches:
        x = rng.integers(0, 256, (batch, *model.input_shape[1:])).astype("float32")
        before, after = time_pair(model, smaller, x, rounds)
        cells.append(f"{before:.2f} / {after:.2f} ({before / after:.2f}x)")
    return cells


if __name__ == "__main__":
    main()
