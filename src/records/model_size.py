"""How big a pruned model is on disk, three ways, measured by writing it (bytes).

- ``dense_file_bytes``: the ``.keras`` file as Keras writes it (dense float32 weights, no compression, no
  optimizer state);
- ``gzip_file_bytes``: that file gzip-compressed (level 6, gzip's default), the measure TFMOT's pruning guide
  uses for "how much smaller";
- ``sparse_file_bytes``: the sparse export (src/engine/sparse_model: CSR with 16-bit indices, dead units removed).
"""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path

import numpy as np

from src.engine.sparse_model import to_bytes
from src.training.keras_file import write_like

GZIP_LEVEL = 6


def file_sizes(template: Path, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> dict[str, int]:
    """The three sizes (module docstring) of the network ``kernels``/``biases`` shaped like the ``.keras`` file
    ``template`` (its input scaling and activations)."""
    with tempfile.TemporaryDirectory() as tmp:
        dense = write_like(template, Path(tmp) / "dense.keras", kernels, biases, compress=False).read_bytes()
    return {"dense_file_bytes": len(dense), "gzip_file_bytes": len(zlib.compress(dense, GZIP_LEVEL)),
            "sparse_file_bytes": len(to_bytes(kernels, biases))}
