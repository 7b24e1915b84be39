"""File sizes of a pruned model under Deep Compression's pipeline (src/engine/compressed_model, file version 3) against
the dense ``.keras`` file, Keras's own int8 quantization and the sparse file version 1/2, one row per coder, with
MNIST test accuracy.

Usage: python benchmarks/compression_bench.py MODEL.keras|MODEL.npz [--bits 8] [--layer-bits conv1=8,dense1=5]
       [--method kmeans|linear] [--per-channel] [--index-bits N] [--prune conv1=34,conv2=88] [--coders huffman,lzma]
       python benchmarks/compression_bench.py --run-id ID [--store sqlite:///mlruns/mlflow.db] [options as above]

MODEL: a pruned ``.keras`` file (e.g. a prune run's artifact ``model/pruned.keras``, or that of prune run ``--run-id``
in MLflow store ``--store``, copied to a temporary folder) or a sparse model file (``python -m src.export``).
The baseline a Keras user has (``.keras`` input): Keras's ``model.quantize("int8")`` on the same model, in a
subprocess (TensorFlow's threads stay out of the timed process): which layers it quantized (Dense, EinsumDense and
Embedding only: int8 kernels with a float32 scale per output unit, each layer's input quantized per row at run time;
Conv2D stays float32), the bytes of the file ``model.save`` writes (uncompressed zip, as for the ``.keras`` row) and of
that file deflated (zlib level 6, as ``gzip_file_bytes``: what zipping it for download gives), and the test accuracy
of the saved file loaded back. ``--prune`` magnitude-prunes each named layer to that percent first (per layer, as
``prune.layer_k``: for a dense model or a stand-in). Rows: the ``.keras`` file as Keras writes the dense model
(uncompressed, no optimizer: src/records/model_size.dense_file_bytes; ``.keras`` input only), the sparse file
(version 1 for an MLP, 2 otherwise), and version 3 with each coder: bytes, how many times smaller than the ``.keras``
file and than 4 bytes per weight (Han et al.'s base), coded bits per kept weight and per kept weight's index, test
accuracy on MNIST's 10,000 test images (28 x 28 models), CPU seconds to write and to load (decode) the file.
Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sparse_bench import machine_header  # noqa: E402
from src.engine import sparse_model  # noqa: E402
from src.engine.coding import CODERS  # noqa: E402
from src.engine.compressed_model import Compression, compress_network, describe  # noqa: E402
from src.engine.network import Network, forward, kernels_of, weighted, with_weights  # noqa: E402
from src.records.model_size import GZIP_LEVEL  # noqa: E402
from src.store.train_cache import PRUNED_ARTIFACT  # noqa: E402

KERAS_INT8 = """
import json, os, sys, warnings, zlib
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
source, out, data, level = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = keras.models.load_model(source, compile=False)
weighted = [layer for layer in model.layers if layer.weights]
with np.load(data) as f:
    x, y = f["x_test"].astype("float32"), f["y_test"]
x = x.reshape(-1, *model.input_shape[1:])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "Layer Conv2D does not have a quantize method": counted below
    model.quantize("int8")
layers = {}
for layer in weighted:
    done, total = layers.get(type(layer).__name__, (0, 0))
    layers[type(layer).__name__] = (done + (getattr(layer, "quantization_mode", None) == "int8"), total + 1)
path = os.path.join(out, "int8.keras")
model.save(path)
saved = keras.models.load_model(path, compile=False)
accuracy = float(np.mean(saved.predict(x, batch_size=1000, verbose=0).argmax(axis=1) == y))
with open(path, "rb") as f:
    deflated = len(zlib.compress(f.read(), level))
print(json.dumps({"layers": layers, "bytes": os.path.getsize(path), "deflated": deflated, "accuracy": accuracy,
                  "keras": keras.__version__}))
"""


def settings(text: str) -> dict[str, int]:
    """``name=value,...`` as {name: int}."""
    pairs = [item.split("=") for item in text.split(",") if item]
    return {name.strip(): int(value) for name, value in pairs}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, nargs="?", help="a .keras or sparse model file (or give --run-id)")
    parser.add_argument("--run-id", help=f"a prune run whose {PRUNED_ARTIFACT} to measure")
    parser.add_argument("--store", default="sqlite:///mlruns/mlflow.db", help="MLflow store of --run-id")
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--layer-bits", type=settings, default={})
    parser.add_argument("--method", default="kmeans")
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--index-bits", type=int, default=None)
    parser.add_argument("--prune", type=settings, default={}, help="percent pruned per layer, by name")
    parser.add_argument("--coders", default=",".join(CODERS))
    args = parser.parse_args(argv)
    if (args.model is None) == (args.run_id is None):
        parser.error("give one model: a file, or a prune run's --run-id")
    return args


def run_model(store: str, run_id: str, folder: Path) -> Path:
    """The prune run's pruned model, downloaded into ``folder``."""
    from mlflow.tracking import MlflowClient

    return Path(MlflowClient(store).download_artifacts(run_id, PRUNED_ARTIFACT, str(folder)))


def keras_int8(path: Path, folder: Path) -> dict:
    """Keras's ``model.quantize("int8")`` of the ``.keras`` file ``path`` in a subprocess (module docstring):
    ``layers`` {class name: (quantized, total)} of the weighted layers, ``bytes`` and ``deflated`` bytes of the saved
    file, ``accuracy`` (0..1) of the saved file on MNIST's test images, and the ``keras`` version."""
    done = subprocess.run([sys.executable, "-c", KERAS_INT8, str(path), str(folder),
                           str(ROOT / "data" / "mnist.npz"), str(GZIP_LEVEL)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def keras_int8_rows(int8: dict, ratios) -> list[str]:
    """The Markdown rows of :func:`keras_int8`'s result."""
    quantized = ", ".join(f"{done} of {total} {kind}" for kind, (done, total) in int8["layers"].items())
    accuracy = f"{100 * int8['accuracy']:.2f}%"
    size, deflated = int8["bytes"], int8["deflated"]
    return [f"| Keras int8 (model.quantize; quantized: {quantized}) | {size:,} | {ratios(size)} | "
            f"8 (float32 where not quantized) | - (dense) | {accuracy} | - |",
            f"| Keras int8, file deflated (zlib {GZIP_LEVEL}) | {deflated:,} | {ratios(deflated)} | - | - | {accuracy} "
            "| - |"]


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
    with tempfile.TemporaryDirectory() as tmp:
        report(args, args.model or run_model(args.store, args.run_id, Path(tmp)), Path(tmp))


def report(args: argparse.Namespace, model_path: Path, tmp: Path) -> None:
    """Print the table for the model file ``model_path``; ``tmp``: a folder for the files written."""
    net, input_shape, keras_bytes = read_model(model_path)
    net = magnitude_pruned(net, args.prune)
    weights = sum(net[i].kernel.size for i in weighted(net))
    kept = sum(int(np.count_nonzero(net[i].kernel)) for i in weighted(net))
    x = y = None
    if tuple(input_shape) in ((28, 28), (28, 28, 1), (784,)):
        with np.load(ROOT / "data" / "mnist.npz") as f:
            x, y = f["x_test"].reshape(-1, *input_shape), f["y_test"]

    def ratios(size: int) -> str:
        return (f"{keras_bytes / size:.1f}x" if keras_bytes else "-") + f", {4 * weights / size:.1f}x"

    int8 = keras_int8(model_path, tmp) if model_path.suffix == ".keras" and x is not None else None
    source = f"prune run {args.run_id}" if args.run_id else str(model_path)
    print(f"# {source}: {kept:,} of {weights:,} weights kept ({100 * kept / weights:.1f}%)\n")
    print("\n".join([*machine_header(), *([f"- Keras {int8['keras']} (the int8 rows)"] if int8 else [])]) + "\n")
    print("| file | bytes | smaller than .keras, than 4 B/weight | bits/weight | bits/index | test accuracy | "
          "write, load CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    if keras_bytes:
        print(f"| .keras (dense, as Keras writes it) | {keras_bytes:,} | 1.0x, {4 * weights / keras_bytes:.1f}x"
              f" | 32 | - | {accuracy(net, x, y)} | - |")
    given = model_path.stat().st_size
    if keras_bytes and given != keras_bytes:
        print(f"| the file given (.keras{', weights deflated' if given < keras_bytes else ''}) | {given:,} | "
              f"{ratios(given)} | 32 | - | {accuracy(net, x, y)} | - |")
    for row in keras_int8_rows(int8, ratios) if int8 else []:
        print(row)
    v2 = sparse_model.network_to_bytes(net, tuple(input_shape))
    print(f"| sparse v1/v2 (float32 + 16-bit index) | {len(v2):,} | {ratios(len(v2))} | 32 | 16 | "
          f"{accuracy(net, x, y)} | - |")
    layer_bits = ", ".join(f"{k} {v}" for k, v in args.layer_bits.items())
    every_layer = {net[i].name for i in weighted(net)} <= set(args.layer_bits)  # then --bits is not used
    bits = f"bits {layer_bits}" if every_layer else f"{args.bits} bits{' (' + layer_bits + ')' if layer_bits else ''}"
    for coder in args.coders.split(","):
        compression = Compression(args.method, args.bits, args.layer_bits, args.per_channel, args.index_bits, coder)
        start = time.process_time()
        decoded, data = compress_network(net, tuple(input_shape), compression)
        written = time.process_time() - start
        path = tmp / f"compression_bench_{coder}.npz"
        path.write_bytes(data)
        start = time.process_time()
        sparse_model.load(path)
        loaded = time.process_time() - start
        m = describe(net, compression, data)
        print(f"| v3 {args.method} {bits}"
              f"{' per channel' if args.per_channel else ''}, {coder} | {len(data):,} | {ratios(len(data))} | "
              f"{m['bits_per_weight']:.2f} | {m['bits_per_index']:.2f} | {accuracy(decoded, x, y)} | "
              f"{written:.2f}, {loaded:.2f} |")
        if coder == "huffman":
            print(f"|   of which: codebooks {m['codebook_bytes']:,.0f} B, biases {m['bias_bytes']:,.0f} B, header and "
                  f"framing {m['overhead_bytes']:,.0f} B |||||||")


if __name__ == "__main__":
    main()
