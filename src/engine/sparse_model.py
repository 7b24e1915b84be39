"""A pruned network as a small file, and the runtime that runs it with numpy and numba alone.

    from src.engine.sparse_model import load
    model = load("weight-k98.npz")           # written by: python -m src.export --run-id RUN_ID --out weight-k98.npz
    outputs = model.predict(pixels)          # raw inputs as the Keras model takes them, e.g. (N, 28, 28) 0..255
                                             # -> logits (N, 10) float32 (probabilities after a softmax output)

Importing this module imports numpy, numba and the project's kernels (src/engine), never TensorFlow,
Keras, Hydra or MLflow. ``predict`` takes the batched kernel for N >= SMALL_BATCH rows and the per-example one
below, an MLP's chosen per calibrated call size (src/engine/calibration: this CPU's density thresholds; dense numpy
when the net is barely pruned).

Three versions of the format, all NumPy ``.npz`` archives without pickled objects, all read by :func:`load` (version 3,
quantized and entropy-coded, is src/engine/compressed_model's):

Version 1 (``format`` = ``prunesweep-sparse-mlp/1``), written for an MLP (src/engine/network.as_mlp: flatten and
a scale, dense layers, ReLU on all but the last), byte for byte as before version 2 existed:
- ``input_scale``: float32, multiplies the raw inputs (1/255); ``n_layers``; per layer ``i`` (0 = first):
  ``shape_i`` (fan_in, fan_out) int64, and the kernel as CSR of its transpose, one row per output unit:
  ``indptr_i`` int32 (fan_out + 1), ``indices_i`` uint16 (input unit of each stored weight), ``values_i``
  float32; or, where that would not be smaller (a layer less than ~1/3 zeros), as ``kernel_i`` float32
  (fan_in, fan_out); ``bias_i`` float32 (fan_out) when the layer has a bias. Any input shape with fan_in
  values per example is accepted.

Version 2 (``format`` = ``prunesweep-sparse-net/2``), for any other Network (conv, pooling, flatten, dense,
rescale layers; a softmax output):
- ``input_shape`` int64 (one example, e.g. (28, 28) or (32, 32, 3)); ``layers``: a JSON list, one object per
  layer: ``kind`` (src/engine/network.KINDS), ``name``, and per kind ``activation`` / ``strides`` /
  ``padding`` (dense, conv2d), ``pool_size`` / ``strides`` / ``padding`` (maxpool2d), ``scale`` / ``offset``
  (rescale), ``shape`` (the kernel's, Keras layout) and ``bias`` (true / false) for weighted layers;
- per weighted layer ``i`` (its position in ``layers``): the kernel reshaped to (rows, fan_out) (a conv's rows
  are kh * kw * c_in, Keras's order) as CSR of its transpose as in version 1 (``indices_i`` uint16, or uint32
  when rows > 65536), or ``kernel_i`` float32 in the kernel's own shape; ``bias_i``.

In both: CSR parts are deflated (zip level 1), dense parts stored as they are; dead units and filters are removed
before writing (src/engine/dense.compact_units, src/engine/compaction.compact_network: same outputs), so a
unit- or filter-pruned net is stored as its smaller dense-equivalent structure. Sizes: 6 bytes per kept weight
(value + 16-bit index) plus 4 per unit or filter.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.engine import calibration, compressed_model, layer_json
from src.engine.choice import SMALL_BATCH, Engine, build_engine
from src.engine.compaction import compact_network
from src.engine.dense import compact_units
from src.engine.net_engine import build_network_engine
from src.engine.network import KINDS, WEIGHTED, Layer, Network, as_mlp, kernels_of, output_shapes

FORMAT = "prunesweep-sparse-mlp/1"
FORMAT_V2 = "prunesweep-sparse-net/2"
FORMATS = f"{FORMAT}, {FORMAT_V2} or {compressed_model.FORMAT_V3}"
PIXEL_SCALE = np.float32(1 / 255)  # the Rescaling layer of the trained Keras model


class SparseModelError(ValueError):
    """A sparse model file that cannot be read; the message is one line naming the file and the problem."""


def to_csr(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int32, indices uint16 (uint32 past 65536 rows), values float32): CSR of ``w.T``, one row per
    output unit, for a 2-D kernel ``(fan_in, fan_out)``."""
    wt = np.asarray(w, np.float32).T
    nonzero = wt != 0
    indptr = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
    index_type = np.uint16 if wt.shape[1] <= 1 << 16 else np.uint32
    return indptr, np.nonzero(nonzero)[1].astype(index_type), wt[nonzero]


def from_csr(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The dense kernel ``(fan_in, fan_out)`` float32 of :func:`to_csr`'s arrays."""
    w = np.zeros((shape[1], shape[0]), np.float32)
    rows = np.repeat(np.arange(shape[1]), np.diff(indptr))
    w[rows, indices.astype(np.int64)] = values
    return np.ascontiguousarray(w.T)


def _csr_pays(w: np.ndarray) -> bool:
    """Whether CSR (6 bytes per nonzero + 4 per output) is smaller than the float32 kernel."""
    return 6 * np.count_nonzero(w) + 4 * (w.shape[1] + 1) < 4 * w.size


def _archive(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # the layout np.savez writes (np.load reads it)
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            packed = name.startswith(("indices_", "values_"))  # sparse parts deflate by ~20%, dense floats do not
            archive.writestr(f"{name}.npy", member.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED, compresslevel=1)
    return buffer.getvalue()


def to_bytes(kernels: list[np.ndarray], biases: list[np.ndarray | None], input_scale: float = float(PIXEL_SCALE)
             ) -> bytes:
    """Version 1 bytes for this (pruned) MLP: dead units removed, each kernel as CSR (module docstring)."""
    if max(w.shape[0] for w in kernels) > 1 << 16:
        raise ValueError("the sparse format stores input indices as uint16: layer widths must be <= 65536")
    kernels, biases = compact_units(kernels, biases)
    arrays: dict[str, np.ndarray] = {"format": np.array(FORMAT), "input_scale": np.float32(input_scale),
                                     "n_layers": np.int64(len(kernels))}
    for i, (w, b) in enumerate(zip(kernels, biases, strict=True)):
        arrays[f"shape_{i}"] = np.array(w.shape, np.int64)
        if _csr_pays(w):
            arrays[f"indptr_{i}"], arrays[f"indices_{i}"], arrays[f"values_{i}"] = to_csr(w)
        else:
            arrays[f"kernel_{i}"] = np.asarray(w, np.float32)
        if b is not None:
            arrays[f"bias_{i}"] = np.asarray(b, np.float32)
    return _archive(arrays)


def network_to_bytes(net: Network, input_shape: tuple[int, ...]) -> bytes:
    """The file's bytes for this (pruned) network on inputs of ``input_shape`` (one example): version 1 for an
    MLP (as_mlp), version 2 otherwise; dead units and filters removed. ValueError if a kernel does not fit."""
    mlp = as_mlp(net)
    if mlp is not None:
        return to_bytes(mlp[0], mlp[1], mlp[2])
    net = compact_network(net)
    output_shapes(net, input_shape)
    arrays: dict[str, np.ndarray] = {"format": np.array(FORMAT_V2),
                                     "input_shape": np.array(input_shape, np.int64),
                                     "layers": np.array(json.dumps([layer_json.describe(layer) for layer in net]))}
    for i, layer in enumerate(net):
        if layer.kind not in WEIGHTED:
            continue
        w = np.asarray(layer.kernel, np.float32)
        flat = w.reshape(-1, w.shape[-1])
        if _csr_pays(flat):
            arrays[f"indptr_{i}"], arrays[f"indices_{i}"], arrays[f"values_{i}"] = to_csr(flat)
        else:
            arrays[f"kernel_{i}"] = w
        if layer.bias is not None:
            arrays[f"bias_{i}"] = np.asarray(layer.bias, np.float32)
    return _archive(arrays)


def save(path: Path | str, kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> Path:
    """Write :func:`to_bytes` (an MLP on raw pixels, version 1) to ``path``; return it."""
    path = Path(path)
    path.write_bytes(to_bytes(kernels, biases))
    return path


def save_network(path: Path | str, net: Network, input_shape: tuple[int, ...]) -> Path:
    """Write :func:`network_to_bytes` to ``path``; return it."""
    path = Path(path)
    path.write_bytes(network_to_bytes(net, input_shape))
    return path


def mlp_network(kernels: list[np.ndarray], biases: list[np.ndarray | None], input_scale: float) -> Network:
    """A version 1 file's MLP as a Network: flatten, rescale, dense layers (ReLU on all but the last)."""
    last = len(kernels) - 1
    return [Layer("flatten"), Layer("rescale", scale=float(input_scale)),
            *[Layer("dense", f"dense_{i}", w, b, "relu" if i < last else "linear")
              for i, (w, b) in enumerate(zip(kernels, biases, strict=True))]]


@dataclass
class SparseModel:
    """A loaded sparse network: ``net`` (src/engine/network, kernels float32 with exact zeros) and the
    ``input_shape`` of one example (None: a version 1 MLP, which takes any shape of fan_in values; ``net`` must
    then be an MLP, as ``mlp_network`` builds)."""

    net: Network
    input_shape: tuple[int, ...] | None = None
    _engines: dict[int, Engine] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._mlp = as_mlp(self.net)  # once: predict's per-call overhead stays what version 1's was
        self._kernels, self._biases = kernels_of(self.net)

    @property
    def kernels(self) -> list[np.ndarray]:
        return self._kernels

    @property
    def biases(self) -> list[np.ndarray | None]:
        return self._biases

    @property
    def input_scale(self) -> np.float32:
        """What an MLP multiplies its raw inputs by (1 for other nets, whose rescale layers do it)."""
        return np.float32(self._mlp[2] if self._mlp is not None else 1.0)

    @property
    def n_weights(self) -> int:
        """Stored (nonzero) weights."""
        return sum(int(np.count_nonzero(w)) for w in self.kernels)

    def engine(self, batch_size: int) -> Engine:
        """The forward pass of raw inputs for calls of ``batch_size`` rows, built on first use: an MLP's from
        src/engine/choice, one per calibrated size class (a batch of calibration.BATCHES, or the span up to the next:
        it multiplies the inputs by ``input_scale`` as it reads them), any other net's from src/engine/net_engine,
        one per-example and one batched."""
        if self._mlp is not None:
            below = max(b for b in calibration.BATCHES if b <= max(batch_size, 1))
            key = below if batch_size <= below or below == max(calibration.BATCHES) else below + 1
        else:
            key = 10_000 if batch_size >= SMALL_BATCH else 1
        if key not in self._engines:
            mlp = self._mlp
            self._engines[key] = (
                build_engine(mlp[0], mlp[1], key, "auto", input_scale=float(np.float32(mlp[2])))
                if mlp is not None else build_network_engine(self.net, self.input_shape, key, "auto"))
        return self._engines[key]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Outputs ``(N, n_out)`` float32 (logits; probabilities after a softmax output) for raw inputs ``(N,
        *input_shape)`` (``(N, 28, 28)`` or ``(N, 784)`` for a version 1 MLP on MNIST), values as the Keras model
        takes them (0..255 pixels)."""
        x = np.asarray(pixels)
        if self._mlp is not None:  # an MLP (version 1, or a version 3 file's): its own engines, any input shape
            return self._predict_mlp(x)
        shape = tuple(self.input_shape)
        accepted = {shape, shape[:2] if len(shape) == 3 and shape[2] == 1 else shape}  # a channel of 1 may go
        if len(shape) == 2:
            accepted.add((*shape, 1))
        if x.shape in accepted:
            raise ValueError(f"inputs must have a batch dimension, got shape {x.shape}: for one example pass "
                             f"x[None] (shape {(1, *x.shape)})")
        if x.ndim < 2 or x.shape[1:] not in accepted:
            raise ValueError(f"inputs of shape {x.shape[1:]} per example, the model takes {shape}")
        if not len(x):
            return np.zeros((0, *output_shapes(self.net, shape)[-1]), np.float32)
        return self.engine(len(x))(x.reshape(len(x), *shape))

    def _predict_mlp(self, x: np.ndarray) -> np.ndarray:
        fan_in = self._kernels[0].shape[0]
        if x.ndim < 2 or (x.ndim == 2 and x.size == fan_in and x.shape[1] != fan_in):
            raise ValueError(f"pixels must have a batch dimension, got shape {x.shape}: for one image pass "
                             "pixels[None] (shape (1, 28, 28))")
        x = x.reshape(len(x), math.prod(x.shape[1:]))  # uint8 pixels reach the kernels as they are
        if x.shape[1] != fan_in:
            raise ValueError(f"pixels give {x.shape[1]} inputs per example, the model takes {fan_in}")
        if not len(x):
            return np.zeros((0, self._kernels[-1].shape[1]), np.float32)
        return self.engine(len(x))(x)


def _damaged(path: Path, what: str) -> SparseModelError:
    return SparseModelError(f"{path}: {what}: the file is damaged; export it again")


def _kernel(f: np.lib.npyio.NpzFile, path: Path, i: int, fan_in: int, fan_out: int) -> np.ndarray:
    """Layer ``i``'s (fan_in, fan_out) kernel from its CSR or dense arrays, checked against its shape."""
    if f"kernel_{i}" in f.files:
        kernel = np.asarray(f[f"kernel_{i}"], np.float32)
        valid = kernel.reshape(-1, kernel.shape[-1]).shape == (fan_in, fan_out) if kernel.ndim else False
        kernel = kernel.reshape(fan_in, fan_out) if valid else None
    else:
        indptr, indices, values = f[f"indptr_{i}"], f[f"indices_{i}"], f[f"values_{i}"]
        valid = (len(indptr) == fan_out + 1 and indptr[0] == 0 and not np.any(np.diff(indptr) < 0)
                 and indptr[-1] == len(indices) == len(values)
                 and not (len(indices) and (int(indices.max()) >= fan_in or int(indices.min()) < 0)))
        kernel = from_csr(indptr, indices, values, (fan_in, fan_out)) if valid else None
    if not valid:
        raise _damaged(path, f"layer {i} is inconsistent with its shape {fan_in}x{fan_out}")
    return kernel


def _bias(f: np.lib.npyio.NpzFile, path: Path, i: int, fan_out: int) -> np.ndarray | None:
    bias = f[f"bias_{i}"] if f"bias_{i}" in f.files else None
    if bias is not None and bias.shape != (fan_out,):
        raise _damaged(path, f"layer {i} has {bias.shape} biases for {fan_out} units")
    return None if bias is None else np.asarray(bias, np.float32)


def _read_v1(f: np.lib.npyio.NpzFile, path: Path) -> SparseModel:
    kernels, biases = [], []
    n_layers, scale = int(f["n_layers"]), float(np.float32(f["input_scale"]))
    if n_layers < 1:
        raise _damaged(path, f"it has {n_layers} layers")
    if not np.isfinite(scale):
        raise _damaged(path, f"its input_scale is {scale}")
    for i in range(n_layers):
        fan_in, fan_out = (int(v) for v in f[f"shape_{i}"])
        kernel = _kernel(f, path, i, fan_in, fan_out)
        if i and fan_in != kernels[-1].shape[1]:
            raise _damaged(path, f"layer {i} is inconsistent with its shape {fan_in}x{fan_out}")
        kernels.append(kernel)
        biases.append(_bias(f, path, i, fan_out))
    return SparseModel(mlp_network(kernels, biases, scale))


def _layer(f: np.lib.npyio.NpzFile, path: Path, i: int, described: dict) -> Layer:
    if described["kind"] not in KINDS:
        raise _damaged(path, f"layer {i} has the unknown kind {described['kind']!r}")
    if described["kind"] not in WEIGHTED:
        return layer_json.build(described)
    shape = tuple(int(v) for v in described["shape"])
    kernel = _kernel(f, path, i, math.prod(shape[:-1]), shape[-1]).reshape(shape)
    return layer_json.build(described, kernel, _bias(f, path, i, shape[-1]) if described["bias"] else None)


def _read_v2(f: np.lib.npyio.NpzFile, path: Path) -> SparseModel:
    input_shape = tuple(int(v) for v in f["input_shape"])
    net = [_layer(f, path, i, d) for i, d in enumerate(json.loads(str(f["layers"])))]
    try:
        output_shapes(net, input_shape)
    except ValueError as e:
        raise _damaged(path, str(e)) from None
    return SparseModel(net, input_shape)


def _read(path: Path) -> SparseModel:
    with np.load(path, allow_pickle=False) as f:
        version = str(f["format"]) if "format" in f.files else None
        if version == FORMAT:
            return _read_v1(f, path)
        if version == FORMAT_V2:
            return _read_v2(f, path)
        if version == compressed_model.FORMAT_V3:
            try:
                return SparseModel(*compressed_model.read(f))
            except ValueError as e:
                raise _damaged(path, " ".join(str(e).split())) from None
        raise SparseModelError(f"{path} is not a prunesweep sparse model ({FORMATS}): export one with "
                               "python -m src.export --run-id RUN_ID --out PATH")


def load(path: Path | str) -> SparseModel:
    """Read a file written by :func:`save`, :func:`save_network`, src/engine/compressed_model.save_compressed or
    ``python -m src.export`` (any version).
    Raises SparseModelError (one line) for a missing, truncated, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a model file" if path.is_dir() else "does not exist"
        raise SparseModelError(f"{path} {what}: export a model with python -m src.export --run-id RUN_ID "
                               f"--out {path if not path.is_dir() else path / 'model.npz'}")
    if not zipfile.is_zipfile(path):
        raise SparseModelError(f"{path} is not a prunesweep sparse model ({FORMATS}, an .npz archive): the file "
                               "is another kind, truncated or damaged; export it again with python -m src.export")
    try:
        return _read(path)
    except SparseModelError:
        raise
    except (OSError, ValueError, KeyError, EOFError, TypeError, MemoryError, zipfile.BadZipFile) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        raise SparseModelError(f"{path} is not a readable sparse model file ({type(e).__name__}: {message}): "
                               "the file is truncated or damaged; export it again") from None
