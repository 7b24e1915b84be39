"""File sizes of a pruned model under Deep Compression's pipeline (src/engine/compressed_model, file version 3) against
the dense ``.keras`` file and the sparse file version 1/2, one row per coder, with MNIST test accuracy.

Usage: python benchmarks/compression_bench.py MODEL.keras|MODEL.npz [--bits 8] [--layer-bits conv1=8,dense1=5]
       [--method kmeans|linear] [--per-channel] [--index-bits N] [--prune conv1=34,conv2=88] [--coders huffman,lzma]

MODEL: a pruned ``.keras`` file (e.g. a prune run's artifact ``model/pruned.keras``) or a sparse model file
(``python -m src.export``). ``--prune`` magnitude-prunes each named layer to that percent first (per layer, as
``prune.layer_k``: for a dense model or a stand-in). Rows: the ``.keras`` file as Keras writes the dense model
(uncompressed, no optimizer: src/records/model_size.dense_file_bytes; ``.keras`` input only), the sparse file
(version 1 for an MLP, 2 otherwise), and version 3 with each coder: bytes, how many times smaller than the ``.keras``
file and than 4 bytes per weight (Han et al.'s base), coded bits per kept weight and per kept weight's index, test
accuracy on MNIST's 10,000 test images (28 x 28 models), CPU seconds to write and to load (decode) the file.
Markdown on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sparse_bench import machine_header  # noqa: E402
from src.engine import sparse_model  # noqa: E402
from src.engine.coding import CODERS  # noqa: E402
from src.engine.compressed_model import Compression, compress_network, describe  # noqa: E402
from src.engine.network import Network, forward, kernels_of, weighted, with_weights  # noqa: E402


def settings(text: str) -> dict[str, int]:
    """``name=value,...`` as {name: int}."""
    pairs = [item.split("=") for item in text.split(",") if item]
    return {name.strip(): int(value) for name, value in pairs}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--layer-bits", type=settings, default={})
    parser.add_argument("--method", default="kmeans")
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--index-bits", type=int, default=None)
    parser.add_argument("--prune", type=settings, default={}, help="percent pruned per layer, by name")
    parser.add_argument("--coders", default=",".join(CODERS))
    return parser.parse_args(argv)


def read_model(path: Path) -> tuple[Network, tuple[int, ...], int | None]:
    """(net, input shape, dense .keras bytes or None) of a .keras or sparse model file."""
    if path.suffix == ".keras":
        from src.records.model_size import dense_file_bytes
        from src.training.keras_file import read_input_shape, read_network

        net = read_network(path)
        return net, read_input_shape(path), dense_file_bytes(path, *kernels_of(net))
    model = sparse_model.load(path)
    return model.net, model.input_shape or (28, 28), None


def magnitude_pruned(net: Network, percent: dict[str, int]) -> Network:
    kernels = []
    for i in weighted(net):
        w = net[i].kernel
        if net[i].name in percent:
            w = np.where(np.abs(w) > np.quantile(np.abs(w), percent[net[i].name] / 100), w, 0).astype(np.float32)
        kernels.append(w)
    return with_weights(net, kernels, kernels_of(net)[1])


def accuracy(net: Network, x: np.ndarray | None, y: np.ndarray | None) -> str:
    return "-" if x is None else f"{100 * float(np.mean(forward(net, x).argmax(axis=1) == y)):.2f}%"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    net, input_shape, keras_bytes = read_model(args.model)
    net = magnitude_pruned(net, args.prune)
    weights = sum(net[i].kernel.size for i in weighted(net))
    kept = sum(int(np.count_nonzero(net[i].kernel)) for i in weighted(net))
    x = y = None
    if tuple(input_shape) in ((28, 28), (28, 28, 1), (784,)):
        with np.load(ROOT / "data" / "mnist.npz") as f:
            x, y = f["x_test"].reshape(-1, *input_shape), f["y_test"]

    def ratios(size: int) -> str:
        return (f"{keras_bytes / size:.1f}x" if keras_bytes else "-") + f", {4 * weights / size:.1f}x"

    print(f"# {args.model}: {kept:,} of {weights:,} weights kept ({100 * kept / weights:.1f}%)\n")
    print("\n".join(machine_header()) + "\n")
    print("| file | bytes | smaller than .keras, than 4 B/weight | bits/weight | bits/index | test accuracy | "
          "write, load CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    if keras_bytes:
        print(f"| .keras (dense, as Keras writes it) | {keras_bytes:,} | 1.0x, {4 * weights / keras_bytes:.1f}x"
              f" | 32 | - | {accuracy(net, x, y)} | - |")
    v2 = sparse_model.network_to_bytes(net, tuple(input_shape))
    print(f"| sparse v1/v2 (float32 + 16-bit index) | {len(v2):,} | {ratios(len(v2))} | 32 | 16 | "
          f"{accuracy(net, x, y)} | - |")
    layer_bits = ", ".join(f"{k} {v}" for k, v in args.layer_bits.items())
    for coder in args.coders.split(","):
        compression = Compression(args.method, args.bits, args.layer_bits, args.per_channel, args.index_bits, coder)
        start = time.process_time()
        decoded, data = compress_network(net, tuple(input_shape), compression)
        written = time.process_time() - start
        path = Path("/tmp") / f"compression_bench_{coder}.npz"
        path.write_bytes(data)
        start = time.process_time()
        sparse_model.load(path)
        loaded = time.process_time() - start
        m = describe(net, compression, data)
        print(f"| v3 {args.method} {args.bits} bits{' (' + layer_bits + ')' if layer_bits else ''}"
              f"{' per channel' if args.per_channel else ''}, {coder} | {len(data):,} | {ratios(len(data))} | "
              f"{m['bits_per_weight']:.2f} | {m['bits_per_index']:.2f} | {accuracy(decoded, x, y)} | "
              f"{written:.2f}, {loaded:.2f} |")
        if coder == "huffman":
            print(f"|   of which: codebooks {m['codebook_bytes']:,.0f} B, biases {m['bias_bytes']:,.0f} B, header and "
                  f"framing {m['overhead_bytes']:,.0f} B |||||||")


if __name__ == "__main__":
    main()
