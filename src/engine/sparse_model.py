"""A pruned MLP as a small file, and the runtime that runs it with numpy and numba alone.

    from src.engine.sparse_model import load
    model = load("weight-k98.npz")           # written by: python -m src.export --run-id RUN_ID --out weight-k98.npz
    logits = model.predict(pixels)           # pixels (N, 28, 28) or (N, 784), raw 0..255 -> logits (N, 10) float32

Importing this module imports numpy, numba and the project's kernels (src/engine), never TensorFlow,
Keras, Hydra or MLflow. ``predict`` takes the batched kernel for N >= SMALL_BATCH rows and the per-example one
below (each chosen by src/engine's measured density rule, dense numpy when the net is barely pruned).

File format (a NumPy ``.npz``, no pickled objects; version 1):
- ``format``: the string ``prunesweep-sparse-mlp/1``; ``input_scale``: float32, multiplies the raw pixels (1/255);
- ``n_layers``; per layer ``i`` (0 = first): ``shape_i`` (fan_in, fan_out) int64, and the kernel as CSR of its
  transpose, one row per output unit: ``indptr_i`` int32 (fan_out + 1), ``indices_i`` uint16 (input unit of
  each stored weight), ``values_i`` float32; or, where that would not be smaller (a layer less than ~1/3
  zeros), as ``kernel_i`` float32 (fan_in, fan_out); ``bias_i`` float32 (fan_out) when the layer has a bias.
- CSR parts are deflated (zip level 1), dense parts stored as they are.
- Dead hidden units are removed before writing (src/engine/dense.compact_units: same logits), so a
  unit-pruned net is stored as its smaller dense-equivalent structure. Hidden layers use ReLU; the last gives
  logits. Sizes: 6 bytes per kept weight (value + 16-bit index) plus 4 per unit.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.engine.choice import SMALL_BATCH, Engine, build_engine
from src.engine.dense import compact_units

FORMAT = "prunesweep-sparse-mlp/1"
PIXEL_SCALE = np.float32(1 / 255)  # the Rescaling layer of the trained Keras model


class SparseModelError(ValueError):
    """A sparse model file that cannot be read; the message is one line naming the file and the problem."""


def to_csr(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int32, indices uint16, values float32): CSR of ``w.T``, one row per output unit (fan_in <= 65536)."""
    wt = np.asarray(w, np.float32).T
    nonzero = wt != 0
    indptr = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
    return indptr, np.nonzero(nonzero)[1].astype(np.uint16), wt[nonzero]


def from_csr(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The dense kernel ``(fan_in, fan_out)`` float32 of :func:`to_csr`'s arrays."""
    w = np.zeros((shape[1], shape[0]), np.float32)
    rows = np.repeat(np.arange(shape[1]), np.diff(indptr))
    w[rows, indices.astype(np.int64)] = values
    return np.ascontiguousarray(w.T)


def to_bytes(kernels: list[np.ndarray], biases: list[np.ndarray | None], input_scale: float = float(PIXEL_SCALE)
             ) -> bytes:
    """The file's bytes for this (pruned) network: dead units removed, each kernel as CSR (module docstring)."""
    if max(w.shape[0] for w in kernels) > 1 << 16:
        raise ValueError("the sparse format stores input indices as uint16: layer widths must be <= 65536")
    kernels, biases = compact_units(kernels, biases)
    arrays: dict[str, np.ndarray] = {"format": np.array(FORMAT), "input_scale": np.float32(input_scale),
                                     "n_layers": np.int64(len(kernels))}
    for i, (w, b) in enumerate(zip(kernels, biases, strict=True)):
        arrays[f"shape_{i}"] = np.array(w.shape, np.int64)
        if 6 * np.count_nonzero(w) + 4 * (w.shape[1] + 1) < 4 * w.size:
            arrays[f"indptr_{i}"], arrays[f"indices_{i}"], arrays[f"values_{i}"] = to_csr(w)
        else:
            arrays[f"kernel_{i}"] = np.asarray(w, np.float32)
        if b is not None:
            arrays[f"bias_{i}"] = np.asarray(b, np.float32)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # the layout np.savez writes (np.load reads it)
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            packed = name.startswith(("indices_", "values_"))  # sparse parts deflate by ~20%, dense floats do not
            archive.writestr(f"{name}.npy", member.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED, compresslevel=1)
    return buffer.getvalue()


def save(path: Path | str, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> Path:
    """Write :func:`to_bytes` to ``path``; return it."""
    path = Path(path)
    path.write_bytes(to_bytes(kernels, biases))
    return path


@dataclass
class SparseModel:
    """A loaded sparse MLP: ``kernels`` (fan_in, fan_out) float32 with exact zeros, ``biases`` (or None)."""

    kernels: list[np.ndarray]
    biases: list[np.ndarray | None]
    input_scale: np.float32 = PIXEL_SCALE
    _engines: dict[bool, Engine] = field(default_factory=dict, repr=False)

    @property
    def n_weights(self) -> int:
        """Stored (nonzero) weights."""
        return sum(int(np.count_nonzero(w)) for w in self.kernels)

    def engine(self, batched: bool) -> Engine:
        """The batched (``batched=True``) or per-example forward pass of raw pixels (it multiplies them by
        ``input_scale`` as it reads them), built on first use."""
        if batched not in self._engines:
            self._engines[batched] = build_engine(self.kernels, self.biases, 10_000 if batched else 1, "auto",
                                                  input_scale=float(self.input_scale))
        return self._engines[batched]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Logits ``(N, n_classes)`` float32 for raw pixels ``(N, 28, 28)`` or ``(N, 784)``, values 0..255."""
        x = np.asarray(pixels)
        fan_in = self.kernels[0].shape[0]
        if x.ndim < 2 or (x.ndim == 2 and x.size == fan_in and x.shape[1] != fan_in):
            raise ValueError(f"pixels must have a batch dimension, got shape {x.shape}: for one image pass "
                             "pixels[None] (shape (1, 28, 28))")
        x = x.reshape(len(x), math.prod(x.shape[1:]))  # uint8 pixels reach the kernels as they are
        if x.shape[1] != fan_in:
            raise ValueError(f"pixels give {x.shape[1]} inputs per example, the model takes {fan_in}")
        if not len(x):
            return np.zeros((0, self.kernels[-1].shape[1]), np.float32)
        return self.engine(len(x) >= SMALL_BATCH)(x)


def _read(path: Path) -> SparseModel:
    with np.load(path, allow_pickle=False) as f:
        if "format" not in f.files or str(f["format"]) != FORMAT:
            raise SparseModelError(f"{path} is not a prunesweep sparse model ({FORMAT}): export one with "
                                   "python -m src.export --run-id RUN_ID --out PATH")
        kernels, biases = [], []
        for i in range(int(f["n_layers"])):
            fan_in, fan_out = (int(v) for v in f[f"shape_{i}"])
            if f"kernel_{i}" in f.files:
                kernel = np.asarray(f[f"kernel_{i}"], np.float32)
                valid = kernel.shape == (fan_in, fan_out)
            else:
                indptr, indices, values = f[f"indptr_{i}"], f[f"indices_{i}"], f[f"values_{i}"]
                valid = (len(indptr) == fan_out + 1 and indptr[0] == 0 and not np.any(np.diff(indptr) < 0)
                         and indptr[-1] == len(indices) == len(values)
                         and not (len(indices) and int(indices.max()) >= fan_in))
                kernel = from_csr(indptr, indices, values, (fan_in, fan_out)) if valid else None
            if not valid or (i and fan_in != kernels[-1].shape[1]):
                raise SparseModelError(f"{path}: layer {i} is inconsistent with its shape {fan_in}x{fan_out}: the "
                                       "file is damaged; export it again")
            kernels.append(kernel)
            bias = f[f"bias_{i}"] if f"bias_{i}" in f.files else None
            if bias is not None and bias.shape != (fan_out,):
                raise SparseModelError(f"{path}: layer {i} has {bias.shape} biases for {fan_out} units: the file "
                                       "is damaged; export it again")
            biases.append(None if bias is None else np.asarray(bias, np.float32))
        return SparseModel(kernels, biases, np.float32(f["input_scale"]))


def load(path: Path | str) -> SparseModel:
    """Read a file written by :func:`save` (or ``python -m src.export``). Raises SparseModelError (one line)
    for a missing, truncated, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a model file" if path.is_dir() else "does not exist"
        raise SparseModelError(f"{path} {what}: export a model with python -m src.export --run-id RUN_ID "
                               f"--out {path if not path.is_dir() else path / 'model.npz'}")
    if not zipfile.is_zipfile(path):
        raise SparseModelError(f"{path} is not a prunesweep sparse model ({FORMAT}, an .npz archive): the file is "
                               "another kind, truncated or damaged; export it again with python -m src.export")
    try:
        return _read(path)
    except SparseModelError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        raise SparseModelError(f"{path} is not a readable sparse model file ({type(e).__name__}: {message}): "
                               "the file is truncated or damaged; export it again") from None
