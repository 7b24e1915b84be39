"""Cost of holding pruning masks: one training epoch of the full MLP on full MNIST, plain vs masked.

    python benchmarks/masked_epoch_bench.py [--repeats 2] [--k 90] [--method weight]

Both models (same initial weights, Adam, batch 128, the project's seeded deterministic training) are traced
first on a few batches; then timed epochs alternate plain, masked, masked, plain, ... (``--repeats`` of each)
so slow drift of the machine hits both sides alike. Prints each epoch's seconds and masked / plain of the
medians. The masked model holds its masks with src.training.retrain.MaskedModel (a constraint per Dense variable).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from src.pruning import masks as M  # noqa: E402
from src.training.data import load_mnist  # noqa: E402
from src.training.model import build_mlp, compile_model, get_weights, set_weights  # noqa: E402
from src.training.retrain import MaskedModel  # noqa: E402
from src.training.train import seed_everything  # noqa: E402

HIDDEN, BATCH = [1000, 1000, 500, 200], 128


def epoch_seconds(model: keras.Model, x, y) -> float:
    start = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=BATCH, shuffle=True, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per model")
    parser.add_argument("--k", type=float, default=90.0, help="percent pruned per hidden layer")
    parser.add_argument("--method", choices=["weight", "unit"], default="weight")
    args = parser.parse_args()

    (x, y, _, _), _ = load_mnist()
    seed_everything(0)
    plain = build_mlp([28, 28], HIDDEN, 10, use_bias=False)
    masked = build_mlp([28, 28], HIDDEN, 10, use_bias=False)
    kernels, biases = get_weights(plain)
    set_weights(masked, kernels, biases)
    MaskedModel(masked).set_masks(M.layer_masks(kernels, args.method, args.k))
    for model in (plain, masked):
        compile_model(model, "adam", 1e-3)
        model.fit(x[:4 * BATCH], y[:4 * BATCH], epochs=1, batch_size=BATCH, verbose=0)  # trace outside timing

    times: dict[str, list[float]] = {"plain": [], "masked": []}
    order = ["plain", "masked", "masked", "plain"] * args.repeats
    for name in order[:2 * args.repeats]:
        times[name].append(epoch_seconds(plain if name == "plain" else masked, x, y))
        print(f"{name:>6} epoch: {times[name][-1]:.2f} s", flush=True)
    ratio = statistics.median(times["masked"]) / statistics.median(times["plain"])
    print(f"machine: {platform.processor() or platform.machine()}, usable cores {len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()}; keras {keras.__version__}; {len(x)} images, batch {BATCH}, "
          f"{args.method} k={args.k:g}")
    print(f"masked / plain epoch time (medians): {ratio:.3f}")


if __name__ == "__main__":
    main()
