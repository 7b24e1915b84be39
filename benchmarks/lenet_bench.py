"""LeNet-300-100 and LeNet-5 at Han et al.'s per-layer budgets: the exported sparse model against dense numpy.

Usage: python benchmarks/lenet_bench.py [--init trained|random] [--epochs 1] [--repeats 7] [--models lenet300,lenet5]
       [--crossover] [--cache DIR] [--clock wall|cpu]

Weights: ``--init trained`` (default) trains each model with Keras for ``--epochs`` epochs (Adam 1e-3, batch 128,
seed 0, the 60,000 MNIST training images) in a subprocess, so TensorFlow's thread pools never run beside the
timed kernels, and reads the ``.keras`` file back without Keras (src/training/keras_file.read_network);
``--init random``: He-scaled Gaussian weights, biases 0.01. Each weighted layer is then magnitude-pruned to Han et
al.'s budget (LeNet-300-100: fc1 8%, fc2 9%, fc3 26% kept; LeNet-5: conv1 66%, conv2 12%, fc1 8%, fc2 19%), no
retraining (speed does not depend on it; the accuracy column says what one-shot pruning left).

Timed, alternating in one process (src.engine.timing.time_alternating, steady state, medians): the dense numpy
forward pass of the masked net (src/engine/network.forward: im2col + one BLAS matmul per conv layer) against the
exported file's ``load(path).predict`` (src/engine/sparse_model), both on raw uint8 MNIST test images: batch
1000 (the 10,000 images in 10 calls; ms per call) and batch 1 (the first 16 images one per call; us per call).
Ideal = multiply-adds of the dense net / of its kept weights (per example). Per layer (batch 1000, float32
activations of the layer before as input): numpy (matmul, or im2col + matmul, with the pooling after it) against
the sparse kernel of that layer alone (src/engine/net_kernels, conv-csr-numba; the MLP's csr-numba for
LeNet-300-100) and, for conv layers, im2col + the MLP's csr-numba kernel (the alternative design), measured
speedup / ideal per layer. ``--clock cpu`` times each call's CPU time in the calling thread (time.thread_time)
instead of wall time, for a machine other work keeps busy: run it with one thread on each side (NUMBA_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1, checked), so that all work is the calling thread's. ``--crossover``: LeNet-5 with every
layer at one density, dense vs conv-csr-numba (batch 1000) and conv-direct-numba (batch 1): where net_engine's
thresholds come from. Markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cli import BadInput, Parser, fail, name_list  # noqa: E402
from benchmarks.sparse_bench import machine_header, numba_threads  # noqa: E402
from src.engine import sparse_model  # noqa: E402
from src.engine.choice import build_engine  # noqa: E402
from src.engine.compaction import macs  # noqa: E402
from src.engine.net_engine import build_network_engine  # noqa: E402
from src.engine.net_kernels import network_forward, pack  # noqa: E402
from src.engine.network import (  # noqa: E402
    Layer,
    Network,
    forward,
    im2col,
    kernels_of,
    output_shapes,
    weighted,
    with_weights,
)
from src.engine.timing import LATENCY_EXAMPLES, SETTLE_S, in_calls, time_alternating  # noqa: E402

HAN_KEEP = {"lenet300": [0.08, 0.09, 0.26], "lenet5": [0.66, 0.12, 0.08, 0.19]}
TRAIN = """
import sys, numpy as np, keras
L = keras.layers
keras.utils.set_random_seed(0)
name, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if name == "lenet300":
    model = keras.Sequential([keras.Input((28, 28)), L.Flatten(), L.Rescaling(1 / 255), L.Dense(300, activation="relu"),
                              L.Dense(100, activation="relu"), L.Dense(10)])
else:
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Rescaling(1 / 255), L.Conv2D(20, 5, activation="relu"),
                              L.MaxPooling2D(2), L.Conv2D(50, 5, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                              L.Dense(500, activation="relu"), L.Dense(10)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
with np.load("data/mnist.npz") as f:
    x, y = f["x_train"].astype("float32"), f["y_train"]
model.fit(x if name == "lenet300" else x[..., None], y, batch_size=128, epochs=epochs, verbose=0)
model.save(out)
"""


def random_net(name: str, seed: int = 0) -> Network:
    """He-scaled Gaussian weights, biases 0.01: LeNet-300-100 (Flatten, Rescaling first, as the seed MLP) or LeNet-5
    (ReLU after the convolutions)."""
    rng = np.random.default_rng(seed)

    def dense_or_conv(kind: str, lname: str, shape: tuple[int, ...], activation: str) -> Layer:
        w = (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))).astype(np.float32)
        return Layer(kind, lname, w, np.full(shape[-1], 0.01, np.float32), activation)

    if name == "lenet300":
        return [Layer("flatten"), Layer("rescale", scale=1 / 255), dense_or_conv("dense", "fc1", (784, 300), "relu"),
                dense_or_conv("dense", "fc2", (300, 100), "relu"), dense_or_conv("dense", "fc3", (100, 10), "linear")]
    pool = Layer("maxpool2d", pool_size=(2, 2), strides=(2, 2))
    return [Layer("rescale", scale=1 / 255), dense_or_conv("conv2d", "conv1", (5, 5, 1, 20), "relu"), pool,
            dense_or_conv("conv2d", "conv2", (5, 5, 20, 50), "relu"), pool, Layer("flatten"),
            dense_or_conv("dense", "fc1", (800, 500), "relu"), dense_or_conv("dense", "fc2", (500, 10), "linear")]


def trained_net(name: str, epochs: int, cache: Path) -> tuple[Network, tuple[int, ...]]:
    from src.training.keras_file import read_input_shape, read_network

    path = cache / f"{name}-e{epochs}.keras"
    if not path.exists():
        subprocess.run([sys.executable, "-c", TRAIN, name, str(epochs), str(path)], cwd=ROOT, check=True,
                       capture_output=True)
    return read_network(path), read_input_shape(path)


def magnitude_pruned(net: Network, keep: list[float]) -> Network:
    """Each weighted layer with only its ``keep`` fraction of largest-|w| weights (ties by position)."""
    kernels, biases = kernels_of(net)
    pruned = []
    for w, k in zip(kernels, keep, strict=True):
        order = np.argsort(-np.abs(w).ravel(), kind="stable")
        mask = np.zeros(w.size, bool)
        mask[order[:round(k * w.size)]] = True
        pruned.append(np.where(mask.reshape(w.shape), w, 0).astype(np.float32))
    return with_weights(net, pruned, biases)


CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}


def alternate(dense, sparse, data: np.ndarray, batch: int, repeats: int, clock: str = "wall") -> tuple[float, float]:
    """(dense ms, sparse ms) per call of ``batch`` rows, medians of alternating steady-state turns (wall time), or
    of alternating turns each after one untimed pass (``clock="cpu"``: the calling thread's CPU time)."""
    fns = {"dense": in_calls(dense, data, batch), "sparse": in_calls(sparse, data, batch)}
    calls = -(-len(data) // batch)
    if clock == "wall":
        times = time_alternating(fns, repeats=repeats, warmup=2, settle_s=SETTLE_S,
                                 per_round=1 if batch >= 1000 else 5)
        return times["dense"] / calls, times["sparse"] / calls
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()
            for _ in range(1 if batch >= 1000 else 5):
                t0 = CLOCK[clock]()
                fn()
                samples[name].append((CLOCK[clock]() - t0) * 1e3)
    return float(np.median(samples["dense"])) / calls, float(np.median(samples["sparse"])) / calls


def whole_model(name: str, net: Network, shape: tuple[int, ...], pixels: np.ndarray, labels: np.ndarray,
                repeats: int, tmp: Path, clock: str) -> dict:
    path = sparse_model.save_network(tmp / f"{name}.npz", net, shape)
    model = sparse_model.load(path)
    x = pixels.reshape(len(pixels), *shape)
    dense = forward(net, x)
    out = model.predict(x)
    counts = macs(net, output_shapes(net, shape))
    kernels = kernels_of(net)[0]
    row = {"model": name, "kept": sum(np.count_nonzero(w) for w in kernels) / sum(w.size for w in kernels),
           "ideal": sum(d for d, _ in counts) / sum(k for _, k in counts), "bytes": path.stat().st_size,
           "accuracy": float(np.mean(out.argmax(axis=1) == labels)), "err": float(np.abs(out - dense).max())}
    for batch, data in ((1000, x), (1, x[:LATENCY_EXAMPLES])):
        d, s = alternate(lambda z: forward(net, z), model.predict, data, batch, repeats, clock)
        row[batch] = (d, s, model.engine(batch).name)
    return row


def layer_units(net: Network) -> list[tuple[int, int]]:
    """(first, end) layer index of each weighted layer with the max-pooling after it (fused by the kernels)."""
    units = []
    for i in weighted(net):
        end = i + 1
        if end < len(net) and net[end].kind == "maxpool2d":
            end += 1
        units.append((i, end))
    return units


def per_layer(net: Network, shape: tuple[int, ...], pixels: np.ndarray, repeats: int, clock: str) -> list[dict]:
    """Each weighted layer (with its pooling) alone at batch 1000: numpy vs the sparse kernel (and im2col + the
    MLP's csr-numba kernel for conv layers), with the ideal speedup of its multiply-adds."""
    x = pixels[:1000].reshape(1000, *shape)
    shapes = output_shapes(net, shape)
    counts = macs(net, shapes)
    rows = []
    for (i, end), (dense_macs, kept_macs) in zip(layer_units(net), counts, strict=True):
        h = np.ascontiguousarray(forward(net[:i], x)) if i else x.astype(np.float32)
        unit = net[i:end]
        in_shape = h.shape[1:]
        if unit[0].kind == "dense" and h.ndim > 2:
            h, in_shape = h.reshape(len(h), -1), (int(np.prod(h.shape[1:])),)
        layer = unit[0]
        if layer.kind == "dense" and len(net) and all(lay.kind in ("dense", "flatten", "rescale") for lay in net):
            sparse = build_engine([layer.kernel], [layer.bias], 1000, "csr-numba")  # the MLP's own kernel
            name = "csr-numba"
        else:
            sparse = network_forward(pack(unit, in_shape, "nhwc"))
            name = "conv-csr-numba"
        d, s = alternate(lambda z, u=unit: forward(u, z), sparse, h, 1000, repeats, clock)
        row = {"layer": " + ".join(lay.name or lay.kind for lay in unit), "kind": layer.kind,
               "shape": "x".join(str(v) for v in layer.kernel.shape), "dense_macs": dense_macs,
               "kept": kept_macs / dense_macs, "dense": d, "sparse": s, "engine": name,
               "ideal": dense_macs / max(kept_macs, 1)}
        if layer.kind == "conv2d":
            kh, kw, c_in, c_out = layer.kernel.shape
            csr = build_engine([layer.kernel.reshape(kh * kw * c_in, c_out)], [layer.bias], 1000, "csr-numba")
            gh, gw = shapes[i][:2]
            rest = unit[1:]

            def im2col_csr(z, layer=layer, csr=csr, gh=gh, gw=gw, rest=rest):
                out = np.maximum(csr(im2col(z, layer.kernel.shape[:2], layer.strides, layer.padding)), 0)
                return forward(rest, out.reshape(len(z), gh, gw, -1))
            _, row["im2col_csr"] = alternate(lambda z, u=unit: forward(u, z), im2col_csr, h, 1000, repeats, clock)
        rows.append(row)
    return rows


def crossover(pixels: np.ndarray, repeats: int, clock: str) -> list[dict]:
    """LeNet-5 (random weights) with every layer at one density: dense vs each sparse engine, batch 1000 and 1."""
    rows = []
    x = pixels.reshape(len(pixels), 28, 28)
    for keep in (1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1):
        net = magnitude_pruned(random_net("lenet5"), [keep] * 4)
        row = {"keep": keep}
        for batch, engine, data in ((1000, "conv-csr-numba", x), (1, "conv-direct-numba", x[:LATENCY_EXAMPLES])):
            e = build_network_engine(net, (28, 28), batch, engine)
            row[batch] = alternate(lambda z, n=net: forward(n, z), e, data, batch, repeats, clock)
        rows.append(row)
    return rows


def parser() -> Parser:
    """The options, each with what it takes and its default."""
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", choices=("trained", "random"), default="trained", help="weights: trained (Keras, "
                    "--epochs epochs) or random (He-scaled Gaussian) (default %(default)s)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs for --init trained, at least 1 (default "
                    "%(default)s)")
    ap.add_argument("--models", default=",".join(HAN_KEEP), help="comma-separated models, each once, from "
                    f"{', '.join(HAN_KEEP)} (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds of each comparison, at least 1 (default "
                    "%(default)s)")
    ap.add_argument("--crossover", action="store_true", help="add the density crossover table (LeNet-5; off by "
                    "default)")
    ap.add_argument("--cache", type=Path, default=None, help="folder for the trained .keras files, made if missing "
                    "(default: a temporary one)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time or the calling thread's CPU "
                    "time (cpu: run with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1) (default %(default)s)")
    return ap


def settings(args: argparse.Namespace) -> list[str]:
    """The checked models of the parsed ``args``; BadInput (one line naming the option) for a value the benchmark
    cannot run. Reads nothing but the environment and whether --cache and its parents exist."""
    models = name_list("--models", args.models, HAN_KEEP, "model", "lenet300,lenet5")
    if args.repeats < 1:
        raise BadInput(f"--repeats {args.repeats}: give at least 1 timed round")
    if args.epochs < 1:
        raise BadInput(f"--epochs {args.epochs}: give at least 1 training epoch")
    if args.cache is not None:
        path = args.cache.resolve()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise BadInput(f"--cache {args.cache}: {existing} is a file, not a folder: give a folder (made if "
                           "missing) or leave --cache out")
    one_thread = os.environ.get("NUMBA_NUM_THREADS") == os.environ.get("OPENBLAS_NUM_THREADS") == "1"
    if args.clock == "cpu" and not one_thread:
        raise BadInput("--clock cpu times the calling thread: set NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1")
    return models


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        models = settings(args)
    except BadInput as e:
        fail(str(e))
    with np.load(ROOT / "data" / "mnist.npz") as mnist:
        pixels, labels = mnist["x_test"], mnist["y_test"]
    print("\n".join(machine_header()))
    how = (f"trained {args.epochs} epoch(s) (Adam 1e-3, batch 128, seed 0)" if args.init == "trained"
           else "random (He-scaled Gaussian)")
    print(f"- weights: {how}, magnitude-pruned per layer to Han et al.'s budgets; repeats {args.repeats}; clock "
          f"{args.clock}\n")
    rows, layers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        for name in models:
            net, shape = (trained_net(name, args.epochs, cache) if args.init == "trained"
                          else (random_net(name), (28, 28) if name == "lenet300" else (28, 28, 1)))
            net = magnitude_pruned(net, HAN_KEEP[name])
            rows.append(whole_model(name, net, shape, pixels, labels, args.repeats, Path(tmp), args.clock))
            layers[name] = per_layer(net, shape, pixels, args.repeats, args.clock)
    print(f"- {numba_threads()}\n")
    print("| model | weights kept | multiply-adds kept | test acc (one-shot) | batch 1000: dense ms / exported ms = "
          "speedup (engine) | batch 1: dense us / exported us = speedup (engine) | ideal | measured / ideal "
          "(1000) | max abs err | file bytes |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        (d, s, e), (d1, s1, e1) = r[1000], r[1]
        print(f"| {r['model']} | {r['kept']:.1%} | {1 / r['ideal']:.1%} | {r['accuracy']:.2%} | {d:.2f} / {s:.2f} = "
              f"**{d / s:.1f}x** ({e}) | {1e3 * d1:.0f} / {1e3 * s1:.1f} = **{d1 / s1:.1f}x** ({e1}) | "
              f"{r['ideal']:.1f}x | {d / s / r['ideal']:.0%} | {r['err']:.1e} | {r['bytes']:,} |")
    print("\nPer layer, batch 1000 (the layer alone on the activations before it; pooling fused in the sparse "
          "kernel, timed with its layer on both sides):\n")
    print("| model | layer | kernel | multiply-adds (dense, per example) | kept | numpy ms | sparse ms (kernel) | "
          "speedup | ideal | measured / ideal | im2col + csr-numba ms |")
    print("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for name, rs in layers.items():
        for r in rs:
            alt = f"{r['im2col_csr']:.2f}" if "im2col_csr" in r else ""
            print(f"| {name} | {r['layer']} | {r['shape']} | {r['dense_macs']:,} | {r['kept']:.1%} | "
                  f"{r['dense']:.2f} | {r['sparse']:.2f} ({r['engine']}) | {r['dense'] / r['sparse']:.1f}x | "
                  f"{r['ideal']:.1f}x | {r['dense'] / r['sparse'] / r['ideal']:.0%} | {alt} |")
    if args.crossover:
        print("\nCrossover, LeNet-5 (random weights), every layer at one density:\n")
        print("| weights kept | batch 1000: dense ms / conv-csr-numba ms | speedup | batch 1: dense us / "
              "conv-direct-numba us | speedup |")
        print("|---:|---|---:|---|---:|")
        for r in crossover(pixels, args.repeats, args.clock):
            (d, s), (d1, s1) = r[1000], r[1]
            print(f"| {r['keep']:.0%} | {d:.2f} / {s:.2f} | {d / s:.2f}x | {1e3 * d1:.0f} / {1e3 * s1:.0f} | "
                  f"{d1 / s1:.2f}x |")


if __name__ == "__main__":
    main()
