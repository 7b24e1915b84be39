"""How big a pruned model is on disk, in bytes of a real serialisation, each measured where it is cheap:

- ``dense_file_bytes``: the ``.keras`` file as Keras writes it (dense float32 weights, no compression, no optimizer
  state). Its size depends on the architecture alone (layer shapes, the template's config), not on the values, so
  it is measured by writing the file once per model file and layer shapes in a process, and reused;
- ``sparse_file_bytes``: the sparse export (src/engine/sparse_model: CSR with 16-bit indices, dead units removed,
  sparse parts deflated), whose size depends on the values: written (in memory) for every run;
- ``gzip_file_bytes``: the dense file gzip-compressed (level 6, gzip's default), the measure TFMOT's pruning guide
  uses for "how much smaller"; ~1 s per run on the 2.4 M-weight MLP, so prune runs log it only with
  ``tracking.gzip_size=true``.
"""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path

import numpy as np

from src.engine.network import with_weights
from src.engine.sparse_model import network_to_bytes, to_bytes
from src.training.keras_file import UnsupportedLayer, read_input_shape, read_network, write_like

GZIP_LEVEL = 6
_DENSE_BYTES: dict[tuple, int] = {}  # (model file, layer shapes, which layers have biases) -> dense_file_bytes


def dense_file(template: Path, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> bytes:
    """The uncompressed ``.keras`` file of ``kernels``/``biases`` shaped like the ``.keras`` file ``template`` (its
    input scaling and activations)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_like(template, Path(tmp) / "dense.keras", kernels, biases, compress=False).read_bytes()


def dense_file_bytes(template: Path, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> int:
    """``len(dense_file(...))``, written once per template and layer shapes in this process."""
    key = (str(Path(template).resolve()), tuple(w.shape for w in kernels), tuple(b is not None for b in biases))
    if key not in _DENSE_BYTES:
        _DENSE_BYTES[key] = len(dense_file(template, kernels, biases))
    return _DENSE_BYTES[key]


def run_sizes(template: Path, kernels: list[np.ndarray], biases: list[np.ndarray | None], gzip: bool = False
              ) -> dict[str, int]:
    """The sizes a prune run logs (module docstring): dense and sparse, and gzip when ``gzip``."""
    sizes = {"dense_file_bytes": dense_file_bytes(template, kernels, biases),
             "sparse_file_bytes": len(to_bytes(kernels, biases))}
    if gzip:
        sizes["gzip_file_bytes"] = len(zlib.compress(dense_file(template, kernels, biases), GZIP_LEVEL))
    return sizes


def network_sizes(template: Path, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> dict[str, int]:
    """The sizes of a net other than an MLP: dense_file_bytes as :func:`run_sizes`, and sparse_file_bytes of
    the file version 2 (src/engine/sparse_model.network_to_bytes) when the engine can express the net."""
    sizes = {"dense_file_bytes": dense_file_bytes(template, kernels, biases)}
    try:
        net = with_weights(read_network(template), kernels, biases)
    except UnsupportedLayer:
        return sizes
    return sizes | {"sparse_file_bytes": len(network_to_bytes(net, read_input_shape(template)))}


def file_sizes(template: Path, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> dict[str, int]:
    """All three sizes (module docstring) of the network ``kernels``/``biases`` shaped like ``template``."""
    return run_sizes(template, kernels, biases, gzip=True)
