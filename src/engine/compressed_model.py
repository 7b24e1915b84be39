"""Sparse model file version 3: a pruned network with its kept weights shared (src/engine/quantize), their positions
as relative indices and both streams entropy-coded (src/engine/coding): Deep Compression's pipeline (Han, Mao &
Dally 2016) for any Network the engine runs.

    net_q, data = compress_network(net, (28, 28), Compression(bits=6))   # net_q: what the file decodes to
    save_compressed("lenet300-q6.npz", net, (28, 28), Compression(bits=6))
    src.engine.sparse_model.load("lenet300-q6.npz").predict(pixels)      # the quantized model's logits

Format (``format`` = ``prunesweep-sparse-q/3``), a NumPy ``.npz`` archive without pickles, of three members (each
member costs ~250 bytes of zip and .npy headers, so the streams share one):
- ``header``: JSON (UTF-8 bytes, uint8): ``input_shape`` (one example), ``coder`` (src/engine/coding.CODERS) and
  ``layers``: one object per layer as in version 2 (src/engine/layer_json), a weighted layer's also with
  ``quantized``: ``bits`` and ``method`` (as asked), ``per_channel``, ``levels`` (codebook entries stored, per
  channel when per_channel), ``value_bytes`` (2 or 4 per codebook entry), ``index_bits``, ``kept`` (nonzero
  weights), ``entries`` (relative index entries, fillers included) and ``bytes``: the sizes of its four segments
  of ``payload``;
- ``payload``: uint8, per weighted layer in order: the codebook (little-endian float16 when every value is one, as
  src/engine/quantize makes them up to 8 bits, else float32; ``levels`` or ``(channels, levels)``: only the shared
  values some weight uses), the bias (float32), the coded codes (one per kept weight) and the coded relative
  indices of the kept positions, both unit by unit as versions 1 and 2 store CSR rows: the kernel reshaped to
  (rows, units) (a conv's rows are kh * kw * c_in, Keras's order) and transposed. (Neighbouring inputs of one
  unit, e.g. pixels, are kept or pruned together more often than one input's units: 4% fewer index bits than the
  kernel's own order on a trained LeNet-300-100's first layer.)
The format and header members are deflated (zip level 9), the payload stored as it is; zip times are fixed, so
the same network gives the same bytes. Decoding happens once, at load; the decoded kernels are float32 with exact
zeros, and ``compress_network`` returns them bit for bit.

Before coding, every weighted layer is quantized as given (``Compression``), then dead units and filters are removed
(src/engine/compaction: a unit whose weights all share the value 0.0 is dead too).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.engine import coding, layer_json
from src.engine.compaction import compact_network
from src.engine.network import KINDS, WEIGHTED, Network, output_shapes, weighted, with_weights
from src.engine.quantize import MAX_BITS, check, dequantize, quantize

FORMAT_V3 = "prunesweep-sparse-q/3"
SEGMENTS = ("codebook", "bias", "codes", "indices")


@dataclass(frozen=True)
class Compression:
    """How a network's kept weights are stored in a version 3 file. ``layer_bits`` (by Layer.name) override
    ``bits``; ``index_bits`` None is Han et al.'s: 8 for conv2d layers, 5 for dense. ValueError (one line) for
    a bad setting."""

    method: str = "kmeans"
    bits: int = 8
    layer_bits: dict[str, int] = field(default_factory=dict)
    per_channel: bool = False
    index_bits: int | None = None
    coder: str = "huffman"

    def __post_init__(self) -> None:
        check(self.bits, self.method)
        for name, bits in self.layer_bits.items():
            if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
                raise ValueError(f"quantize.layer_bits.{name}={bits!r}: give a whole number of bits from 1 to "
                                 f"{MAX_BITS}")
        if self.index_bits is not None:
            coding.check_index_bits(self.index_bits)
        coding.check_coder(self.coder)

    def layer_settings(self, layer_kind: str, name: str) -> tuple[int, int]:
        """(bits, index_bits) of a weighted layer."""
        index_bits = self.index_bits if self.index_bits is not None else 8 if layer_kind == "conv2d" else 5
        return self.layer_bits.get(name, self.bits), index_bits


def _check_names(net: Network, compression: Compression) -> None:
    names = [net[i].name for i in weighted(net)]
    unknown = sorted(set(compression.layer_bits) - set(names))
    if unknown:
        raise ValueError(f"quantize.layer_bits names {', '.join(map(repr, unknown))}, which the model does not "
                         f"have: its weighted layers are {', '.join(names)}")


def _used(codebook: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The codebook cut to the entries some code uses (columns when per channel), and the codes renumbered."""
    used, codes = np.unique(codes, return_inverse=True)
    codebook = codebook[..., used]
    half = codebook.astype("<f2")
    exact = np.array_equal(half.astype(np.float32), codebook)  # NaN-free: the codebook holds finite weights
    return np.ascontiguousarray(half if exact else codebook.astype("<f4")), codes.ravel()


def _archive(header: dict, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # the layout np.savez writes (np.load reads it)
        text = json.dumps(header, separators=(",", ":")).encode()
        for name, array, packed in (("format", np.array(FORMAT_V3), True),
                                    ("header", np.frombuffer(text, np.uint8), True),
                                    ("payload", np.frombuffer(payload, np.uint8), False)):
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))  # the same bytes every time
            archive.writestr(info, member.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED if packed else zipfile.ZIP_STORED, compresslevel=9)
    return buffer.getvalue()


def to_bytes(net: Network, input_shape: tuple[int, ...], compression: Compression) -> bytes:
    """The version 3 file of ``net`` (module docstring). ValueError for a layer_bits name the net lacks or a net
    that does not fit ``input_shape``."""
    _check_names(net, compression)
    kernels = []
    for i in weighted(net):
        bits, _ = compression.layer_settings(net[i].kind, net[i].name)
        codebook, codes = quantize(net[i].kernel, bits, compression.method, compression.per_channel)
        kernels.append(dequantize(net[i].kernel != 0, codebook, codes))
    net = compact_network(with_weights(net, kernels, [net[i].bias for i in weighted(net)]))
    output_shapes(net, input_shape)
    described, payload = [], []
    for layer in net:
        described.append(layer_json.describe(layer))
        if layer.kind not in WEIGHTED:
            continue
        bits, index_bits = compression.layer_settings(layer.kind, layer.name)
        flat = np.asarray(layer.kernel, np.float32).reshape(-1, layer.kernel.shape[-1])  # (rows, units)
        codebook, codes = _used(*quantize(flat, bits, "kmeans", compression.per_channel))  # exact: already shared
        by_unit = np.zeros(flat.shape, np.int64)
        by_unit[flat != 0] = codes
        codes = by_unit.T[flat.T != 0]  # unit by unit, as the positions
        positions = np.flatnonzero(flat.T)
        entries = coding.relative_indices(positions, index_bits)
        segments = [codebook.tobytes(), b"" if layer.bias is None else np.asarray(layer.bias, "<f4").tobytes(),
                    coding.encode(codes, codebook.shape[-1], compression.coder),
                    coding.encode(entries, 1 << index_bits, compression.coder)]
        described[-1]["quantized"] = {"bits": bits, "method": compression.method,
                                      "per_channel": compression.per_channel, "levels": codebook.shape[-1],
                                      "value_bytes": codebook.itemsize,
                                      "index_bits": index_bits, "kept": len(positions), "entries": len(entries),
                                      "bytes": [len(s) for s in segments]}
        payload += segments
    header = {"input_shape": [int(v) for v in input_shape], "coder": compression.coder, "layers": described}
    return _archive(header, b"".join(payload))


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is {value!r}, not a count")
    return value


def _decode_layer(described: dict, payload: memoryview, at: int, coder: str) -> tuple[np.ndarray, np.ndarray | None,
                                                                                     int]:
    """(kernel, bias, the payload offset after the layer) of a weighted layer's object. ValueError if damaged."""
    shape = layer_json.weighted_shape(described)
    q = described["quantized"]
    levels, kept, entries = (_whole(q[k], f"its {k}") for k in ("levels", "kept", "entries"))
    index_bits, sizes = _whole(q["index_bits"], "its index_bits"), [_whole(n, "a segment size") for n in q["bytes"]]
    coding.check_index_bits(index_bits)
    channels, itemsize = shape[-1] if q["per_channel"] else 1, q["value_bytes"]
    if itemsize not in (2, 4):
        raise ValueError(f"its codebook has {itemsize!r} bytes per value, not 2 or 4")
    stated = [itemsize * channels * levels, 4 * shape[-1] if described["bias"] else 0]
    if len(sizes) != len(SEGMENTS) or sizes[:2] != stated or at + sum(sizes) > len(payload) \
            or (levels < 1 and kept) or kept > math.prod(shape) or entries < kept:
        raise ValueError(f"its sizes {sizes} or counts (levels {levels}, kept {kept}, entries {entries}) do not fit "
                         f"its shape {shape}")
    parts, offsets = [], np.cumsum([at, *sizes])
    for start, end in zip(offsets[:-1], offsets[1:], strict=True):
        parts.append(payload[start:end])
    codebook = np.frombuffer(parts[0], f"<f{itemsize}").astype(np.float32)
    codebook = codebook.reshape(channels, levels) if q["per_channel"] else codebook
    bias = np.frombuffer(parts[1], "<f4").astype(np.float32) if described["bias"] else None
    codes = coding.decode(bytes(parts[2]), kept, levels, coder)
    positions = coding.positions_from_relative(coding.decode(bytes(parts[3]), entries, 1 << index_bits, coder),
                                               index_bits, kept, math.prod(shape))
    rows = math.prod(shape[:-1])
    by_unit = np.zeros(rows * shape[-1], np.float32)
    by_unit[positions] = codebook[positions // rows, codes] if q["per_channel"] else codebook[codes]
    kernel = np.ascontiguousarray(by_unit.reshape(shape[-1], rows).T).reshape(shape)
    return kernel, bias, int(offsets[-1])


def read(f: np.lib.npyio.NpzFile) -> tuple[Network, tuple[int, ...]]:
    """(net, input shape) of an open version 3 archive. ValueError / KeyError / TypeError (one line) when any part
    is missing, inconsistent or damaged."""
    try:
        header = json.loads(np.asarray(f["header"], np.uint8).tobytes())
    except ValueError as e:
        raise ValueError(f"its header is not JSON ({e})") from None
    payload = memoryview(np.ascontiguousarray(f["payload"], np.uint8)).cast("B")
    coder = header["coder"]
    coding.check_coder(coder)
    input_shape = tuple(int(v) for v in header["input_shape"])
    net, at = [], 0
    for i, described in enumerate(header["layers"]):
        if described["kind"] not in KINDS:
            raise ValueError(f"layer {i} has the unknown kind {described['kind']!r}")
        if described["kind"] not in WEIGHTED:
            net.append(layer_json.build(described))
            continue
        try:
            kernel, bias, at = _decode_layer(described, payload, at, coder)
        except ValueError as e:
            raise ValueError(f"layer {i} ({described.get('name', '')}): {e}") from None
        net.append(layer_json.build(described, kernel, bias))
    if at != len(payload):
        raise ValueError(f"the payload has {len(payload) - at} bytes no layer uses")
    output_shapes(net, input_shape)
    return net, input_shape


def compress_network(net: Network, input_shape: tuple[int, ...], compression: Compression) -> tuple[Network, bytes]:
    """(the network as the file decodes to: shared weights, zeros kept, dead units gone; the file's bytes)."""
    data = to_bytes(net, input_shape, compression)
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return read(f)[0], data


def save_compressed(path: Path | str, net: Network, input_shape: tuple[int, ...], compression: Compression) -> Path:
    """Write :func:`to_bytes` to ``path``; return it."""
    path = Path(path)
    path.write_bytes(to_bytes(net, input_shape, compression))
    return path


def describe(net: Network, compression: Compression, file_bytes: bytes) -> dict[str, float]:
    """What a version 3 file of ``net`` (the network before compression) measures: ``kept_weights``,
    ``bits_per_weight`` (coded codes per kept weight), ``bits_per_index`` (coded relative indices, fillers
    included, per kept weight), ``codebook_bytes``, ``bias_bytes``, ``overhead_bytes`` (header, zip and .npy
    framing), ``file_bytes`` and ``ratio_float32`` (4 bytes per weight of ``net``, Han et al.'s base, over the
    file's bytes). ValueError when the file was written with another coder than ``compression``'s."""
    with np.load(io.BytesIO(file_bytes), allow_pickle=False) as f:
        header = json.loads(np.asarray(f["header"], np.uint8).tobytes())
    if header["coder"] != compression.coder:
        raise ValueError(f"the file is coded with {header['coder']}, not {compression.coder}")
    sizes = np.array([d["quantized"]["bytes"] for d in header["layers"] if "quantized" in d]).reshape(-1, 4)
    kept = sum(d["quantized"]["kept"] for d in header["layers"] if "quantized" in d)
    weights = sum(net[i].kernel.size for i in weighted(net))
    return {"kept_weights": float(kept), "bits_per_weight": float(8 * sizes[:, 2].sum() / max(kept, 1)),
            "bits_per_index": float(8 * sizes[:, 3].sum() / max(kept, 1)), "codebook_bytes": float(sizes[:, 0].sum()),
            "bias_bytes": float(sizes[:, 1].sum()), "overhead_bytes": float(len(file_bytes) - sizes.sum()),
            "file_bytes": float(len(file_bytes)), "ratio_float32": 4 * weights / len(file_bytes)}
