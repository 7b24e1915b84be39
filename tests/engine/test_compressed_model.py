"""Sparse model file version 3 (src/engine/compressed_model): round trips on an MLP and a LeNet-5-shaped conv net for
every coder (the returned net is what load decodes, bit for bit; predict matches its numpy forward pass), shared
values per layer as asked, settings refused in one line, truncated or corrupt files refused in one line."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from src.engine.coding import CODERS
from src.engine.compressed_model import FORMAT_V3, Compression, compress_network, describe, save_compressed
from src.engine.network import Layer, forward, kernels_of, with_weights
from src.engine.quantize import quantized_kernel
from src.engine.sparse_model import SparseModelError, load
from tests.conftest import run_without_frameworks
from tests.engine.test_sparse_model import lenet5_net

HAN_LENET5 = Compression(bits=8, layer_bits={"fc1": 5, "fc2": 5})


def mlp_net(seed: int = 0) -> list[Layer]:
    """A 784-60-30-10 MLP on raw pixels, 10-30% of its weights kept, every unit alive."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, keep: float) -> np.ndarray:
        a = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2 / shape[0]))
        a = np.where(rng.random(shape) < keep, a, 0).astype(np.float32)
        a[0] += np.float32(0.05)  # a weight in every column and every row: no unit is dead
        a[:, 0] += np.float32(0.05)
        return a

    return [Layer("flatten"), Layer("rescale", scale=1 / 255),
            Layer("dense", "dense1", w(784, 60, keep=0.1), np.full(60, 0.1, np.float32), "relu"),
            Layer("dense", "dense2", w(60, 30, keep=0.3), np.full(30, 0.1, np.float32), "relu"),
            Layer("dense", "dense3", w(30, 10, keep=0.3), np.zeros(10, np.float32))]


def pixels(n: int = 40, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)


@pytest.mark.parametrize("coder", CODERS)
def test_an_mlp_round_trips_as_the_per_layer_quantized_kernels(coder: str, tmp_path) -> None:
    net = mlp_net()
    compression = Compression(bits=6, coder=coder)
    decoded, data = compress_network(net, (28, 28), compression)
    path = tmp_path / "mlp.npz"
    path.write_bytes(data)
    model = load(path)
    with np.load(path) as f:
        assert str(f["format"]) == FORMAT_V3 and sorted(f.files) == ["format", "header", "payload"]
    for w, q, loaded in zip(kernels_of(net)[0], kernels_of(decoded)[0], model.kernels, strict=True):
        assert np.array_equal(q, quantized_kernel(w, 6, "kmeans")) and np.array_equal(loaded, q)
        assert loaded.dtype == np.float32 and ((loaded != 0) == (w != 0)).all()
    assert all(np.array_equal(a, b) for a, b in zip(kernels_of(net)[1][:2], model.biases[:2], strict=True))
    x = pixels()
    assert np.abs(model.predict(x) - forward(decoded, x)).max() < 1e-5
    assert np.abs(model.predict(x[:1]) - forward(decoded, x[:1])).max() < 1e-5
    assert model.engine(10_000).name == "csr-numba"  # the MLP's own engines


@pytest.mark.parametrize("coder", CODERS)
def test_a_lenet5_shaped_net_round_trips_with_per_layer_bits(coder: str, tmp_path) -> None:
    net = lenet5_net()
    compression = Compression(bits=8, layer_bits={"fc1": 5, "fc2": 5}, coder=coder)
    decoded, data = compress_network(net, (28, 28), compression)
    model = load(save_compressed(tmp_path / "lenet5.npz", net, (28, 28), compression))
    assert (tmp_path / "lenet5.npz").read_bytes() == data
    assert [layer.name for layer in model.net] == [layer.name for layer in net]
    for w, layer, loaded, bits in zip(kernels_of(net)[0], kernels_of(decoded)[0], model.kernels, (8, 8, 5, 5),
                                      strict=True):
        assert np.array_equal(loaded, layer)
        shared = np.unique(loaded[loaded != 0])
        assert 2 ** (bits - 2) < len(shared) <= 2 ** bits
        assert set(shared) <= set(np.unique(quantized_kernel(w, bits))) - {0}  # each layer at its own bits
    assert model.kernels[0].shape == (5, 5, 1, 20) and model.kernels[2].shape[0] == 800
    assert model.kernels[2].shape[1] < 500  # fc1 units fc2 does not read are gone, as in version 2
    x = pixels()
    assert np.abs(model.predict(x) - forward(decoded, x)).max() < 1e-5
    assert np.abs(model.predict(x[:2]) - forward(decoded, x[:2])).max() < 1e-5
    assert np.abs(forward(decoded, x) - forward(net, x)).max() < 0.1 * np.abs(forward(net, x)).max()


def test_per_channel_linear_codebooks_round_trip(tmp_path) -> None:
    compression = Compression(method="linear", bits=3, per_channel=True, index_bits=4)
    decoded, data = compress_network(lenet5_net(), (28, 28), compression)
    model = load(save_compressed(tmp_path / "m.npz", lenet5_net(), (28, 28), compression))
    conv2 = model.kernels[1]
    assert all(len(np.unique(conv2[..., c][conv2[..., c] != 0])) <= 8 for c in range(conv2.shape[-1]))
    assert len(np.unique(conv2[conv2 != 0])) > 8
    x = pixels()
    assert np.abs(model.predict(x) - forward(decoded, x)).max() < 1e-5


def test_codebooks_are_stored_in_2_bytes_when_every_value_is_a_float16_else_in_4(tmp_path) -> None:
    net = mlp_net()
    data = compress_network(net, (28, 28), Compression(bits=6))[1]
    header = json.loads(arrays_of(data)["header"].tobytes())
    assert [d["quantized"]["value_bytes"] for d in header["layers"] if "quantized" in d] == [2, 2, 2]
    kernels, biases = kernels_of(net)
    tuned = kernels[1].copy()  # a layer whose shared values were fine-tuned in float32: kept exactly
    tuned[tuned != 0] = np.float32([0.1234567, -0.7654321])[np.arange(np.count_nonzero(tuned)) % 2]
    net = with_weights(net, [kernels[0], tuned, kernels[2]], biases)
    decoded, data = compress_network(net, (28, 28), Compression(bits=6))
    header = json.loads(arrays_of(data)["header"].tobytes())
    assert [d["quantized"]["value_bytes"] for d in header["layers"] if "quantized" in d] == [2, 4, 2]
    assert np.array_equal(kernels_of(decoded)[0][1], tuned)


def test_describe_counts_what_the_file_holds() -> None:
    net = lenet5_net()
    decoded, data = compress_network(net, (28, 28), HAN_LENET5)
    measured = describe(net, HAN_LENET5, data)
    kept = sum(int(np.count_nonzero(w)) for w in kernels_of(decoded)[0])
    assert measured["kept_weights"] == kept and measured["file_bytes"] == len(data)
    header = json.loads(arrays_of(data)["header"].tobytes())
    coded = np.array([d["quantized"]["bytes"] for d in header["layers"] if "quantized" in d]).sum(axis=0)
    assert measured["bits_per_weight"] == 8 * coded[2] / kept and measured["bits_per_index"] == 8 * coded[3] / kept
    assert 1 < measured["bits_per_weight"] < 8 and 3 < measured["bits_per_index"] < 8
    assert measured["bias_bytes"] == 4 * sum(len(b) for b in kernels_of(decoded)[1] if b is not None)
    assert 0 < measured["overhead_bytes"] < 1500
    assert measured["ratio_float32"] == pytest.approx(4 * sum(w.size for w in kernels_of(net)[0]) / len(data))
    with pytest.raises(ValueError, match="coded with huffman, not lzma"):
        describe(net, Compression(coder="lzma"), data)


@pytest.mark.parametrize("settings, match", [
    ({"bits": 0}, "quantize.bits=0"), ({"method": "kmedians"}, "'kmedians' is unknown"),
    ({"coder": "bz2"}, "quantize.coder='bz2'"), ({"index_bits": 17}, "quantize.index_bits=17"),
    ({"layer_bits": {"conv1": 40}}, "quantize.layer_bits.conv1=40")])
def test_bad_settings_get_one_line_errors(settings, match) -> None:
    with pytest.raises(ValueError, match=match) as info:
        Compression(**settings)
    assert "\n" not in str(info.value)


def test_layer_bits_for_a_layer_the_net_lacks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"names 'dense9'.*its weighted layers are conv1, conv2, fc1, fc2"):
        compress_network(lenet5_net(), (28, 28), Compression(layer_bits={"dense9": 4}))


# ---------------------------------------------------------------- damaged files

def refused(path) -> str:
    with pytest.raises(SparseModelError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize("coder", CODERS)
def test_truncated_and_bit_flipped_files_are_refused_in_one_line(coder: str, tmp_path) -> None:
    data = compress_network(lenet5_net(), (28, 28), Compression(bits=5, coder=coder))[1]
    path = tmp_path / "m.npz"
    for cut in np.linspace(1, len(data) - 1, 25).astype(int):
        path.write_bytes(data[:cut])
        refused(path)
    payload_at = data.index(b"payload.npy") + len("payload.npy") + 128  # past its .npy header
    for position in np.linspace(8 * payload_at, 8 * (len(data) - 200), 25).astype(int):
        damaged = bytearray(data)
        damaged[position // 8] ^= 1 << (position % 8)
        path.write_bytes(bytes(damaged))
        assert "CRC" in refused(path)  # zip's checksum of the member


def arrays_of(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as f:
        return {name: f[name] for name in f.files}


def rewritten(tmp_path, arrays: dict[str, np.ndarray], header: dict | None = None):
    """The arrays as a fresh .npz (valid checksums), with ``header`` as its JSON when given."""
    if header is not None:
        arrays = {**arrays, "header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    path = tmp_path / "rewritten.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("coder", CODERS)
def test_coded_streams_damaged_under_a_valid_checksum_are_refused(coder: str, tmp_path) -> None:
    """Each coded stream of fc1 damaged (a flip in every 4th byte, or cut short with the sizes moved to match):
    the decoder refuses it and the file is refused in one line naming the layer."""
    arrays = arrays_of(compress_network(lenet5_net(), (28, 28), Compression(bits=5, coder=coder))[1])
    header = json.loads(arrays["header"].tobytes())
    sizes = [d["quantized"]["bytes"] for d in header["layers"] if "quantized" in d]
    start = sum(map(sum, sizes[:2]))  # fc1 is the third weighted layer
    for segment in (2, 3):
        at, size = start + sum(sizes[2][:segment]), sizes[2][segment]
        payload = arrays["payload"].copy()
        payload[at:at + size:4] ^= np.uint8(0x5A)
        assert "layer 6 (fc1)" in refused(rewritten(tmp_path, {**arrays, "payload": payload}))
        cut = json.loads(json.dumps(header))
        cut["layers"][6]["quantized"]["bytes"][segment] -= size // 2
        shorter = np.delete(arrays["payload"], np.arange(at + size - size // 2, at + size))
        assert "layer 6 (fc1)" in refused(rewritten(tmp_path, {**arrays, "payload": shorter}, cut))


def test_inconsistent_headers_are_refused_in_one_line(tmp_path) -> None:
    arrays = arrays_of(compress_network(lenet5_net(), (28, 28), HAN_LENET5)[1])
    header = json.loads(arrays["header"].tobytes())
    cases = {"kept": ("kept", 10**9, "do not fit its shape"), "levels": ("levels", 3, "do not fit its shape"),
             "entries": ("entries", -1, "not a count"), "index_bits": ("index_bits", 0, "index_bits=0")}
    for key, value, match in cases.values():
        broken = json.loads(json.dumps(header))
        broken["layers"][3]["quantized"][key] = value
        assert match in refused(rewritten(tmp_path, arrays, broken))
    broken = json.loads(json.dumps(header))
    broken["layers"][6]["shape"] = [799, 500]
    assert "layer 6" in refused(rewritten(tmp_path, arrays, broken))
    broken["layers"][6]["shape"] = [800, 500]
    broken["coder"] = "rar"
    assert "quantize.coder='rar'" in refused(rewritten(tmp_path, arrays, broken))
    longer = np.concatenate([arrays["payload"], np.zeros(3, np.uint8)])
    assert "3 bytes no layer uses" in refused(rewritten(tmp_path, {**arrays, "payload": longer}))
    assert "JSON" in refused(rewritten(tmp_path, {**arrays, "header": arrays["header"][:-5]}))


def test_the_loader_of_a_version_3_file_runs_where_tensorflow_cannot_be_imported(tmp_path) -> None:
    net = lenet5_net()
    decoded = compress_network(net, (28, 28), HAN_LENET5)[0]
    path = save_compressed(tmp_path / "q.npz", net, (28, 28), HAN_LENET5)
    x = pixels(30)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", forward(decoded, x))
    printed = run_without_frameworks(f"""
        import numpy as np
        from src.engine.sparse_model import load
        out = load({str(path)!r}).predict(np.load({str(tmp_path / "x.npy")!r}))
        print(bool(np.abs(out - np.load({str(tmp_path / "expected.npy")!r})).max() < 1e-5))
    """)
    assert printed == ["True"]


def test_the_archive_keeps_its_framing_small() -> None:
    data = compress_network(lenet5_net(), (28, 28), HAN_LENET5)[1]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {i.filename: (i.compress_type, i.compress_size) for i in archive.infolist()}
    assert members["payload.npy"][0] == zipfile.ZIP_STORED and members["header.npy"][0] == zipfile.ZIP_DEFLATED
    assert len(data) - members["payload.npy"][1] < 1200
