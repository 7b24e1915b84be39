"""Weight sharing (src/engine/quantize): linear levels and k-means codebooks on hand-made arrays, pruned zeros kept,
at most 2**bits shared values, k-means no worse than linear, idempotence, per-channel codebooks, bad settings."""

from __future__ import annotations

import numpy as np
import pytest

from src.engine.quantize import dequantize, half_precision, quantize, quantized_kernel

HALF = 2.0 ** -11  # the rounding of shared values to float16 (up to 8 bits)


def pruned_gaussian(shape: tuple[int, ...], keep: float, seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return np.where(np.abs(w) >= np.quantile(np.abs(w), 1 - keep), w, 0).astype(np.float32)


def test_linear_levels_are_uniform_between_min_and_max_and_zeros_stay_uncoded() -> None:
    w = np.array([[0.0, 1.0, 1.1], [1.6, 0.0, 2.0], [1.45, 1.9, 0.0]], np.float32)
    codebook, codes = quantize(w, 2, "linear")
    assert np.allclose(codebook, [1.0, 4 / 3, 5 / 3, 2.0], rtol=HALF, atol=0)
    assert codes.dtype == np.uint8 and codes.tolist() == [0, 0, 2, 3, 1, 3]  # the 6 nonzeros in C order
    q = quantized_kernel(w, 2, "linear")
    assert q.dtype == np.float32 and (q[w == 0] == 0).all() and (q[w != 0] != 0).all()
    assert q[0, 2] == 1.0 and np.isclose(q[2, 0], 4 / 3, rtol=HALF, atol=0)


def test_kmeans_finds_the_means_of_separated_clusters() -> None:
    w = np.array([0, -1.2, -1.0, -0.8, 0, 0, 2.9, 3.0, 3.1, 3.2, 0], np.float32)
    codebook, codes = quantize(w, 1, "kmeans")
    assert np.allclose(codebook, [-1.0, 3.05], rtol=HALF, atol=0) and codes.tolist() == [0, 0, 0, 1, 1, 1, 1]
    expected = np.where(w < 0, -1.0, np.where(w > 0, 3.05, 0))
    assert np.allclose(dequantize(w != 0, codebook, codes), expected, rtol=HALF, atol=0)


@pytest.mark.parametrize("method", ["linear", "kmeans"])
@pytest.mark.parametrize("bits", [1, 3, 5, 8, 9])
def test_at_most_2_to_the_bits_shared_values_and_the_same_mask(method: str, bits: int) -> None:
    w = pruned_gaussian((60, 50), keep=0.3, seed=bits)
    q = quantized_kernel(w, bits, method)
    assert ((q != 0) == (w != 0)).all()
    assert len(np.unique(q[q != 0])) <= 2 ** bits
    codebook, codes = quantize(w, bits, method)
    assert codebook.shape == (2 ** bits,) and codebook.dtype == np.float32
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16) and len(codes) == np.count_nonzero(w)
    assert np.array_equal(quantize(w, bits, method)[1], codes)  # deterministic


@pytest.mark.parametrize("bits", [2, 4, 6])
def test_kmeans_error_is_at_most_linear_error_on_a_gaussian_tensor(bits: int) -> None:
    w = np.random.default_rng(bits).standard_normal((100, 80)).astype(np.float32)
    errors = {m: float(np.square(quantized_kernel(w, bits, m) - w).sum()) for m in ("linear", "kmeans")}
    assert errors["kmeans"] < errors["linear"]


@pytest.mark.parametrize("method", ["linear", "kmeans"])
def test_quantizing_a_quantized_kernel_changes_nothing(method: str) -> None:
    q = quantized_kernel(pruned_gaussian((40, 30), 0.5), 4, method)
    assert np.array_equal(quantized_kernel(q, 4, method), q)
    assert np.array_equal(quantized_kernel(q, 4, method, per_channel=True), q)


def test_per_channel_codebooks_have_one_row_per_output_channel() -> None:
    w = pruned_gaussian((5, 5, 3, 8), 0.6) * np.arange(1, 9, dtype=np.float32)  # channel c scaled by c + 1
    codebook, codes = quantize(w, 3, "linear", per_channel=True)
    assert codebook.shape == (8, 8)
    q = dequantize(w != 0, codebook, codes)
    for c in range(8):
        kept = w[..., c][w[..., c] != 0]
        assert np.isclose(codebook[c].min(), kept.min(), rtol=HALF, atol=0)
        assert np.isclose(codebook[c].max(), kept.max(), rtol=HALF, atol=0)
        assert set(np.unique(q[..., c][w[..., c] != 0])) <= set(codebook[c])
    error = {pc: np.abs(quantized_kernel(w, 3, "linear", per_channel=pc) - w).max() for pc in (False, True)}
    assert error[True] < error[False]


@pytest.mark.parametrize("method", ["linear", "kmeans"])
def test_shared_values_up_to_8_bits_are_float16_values(method: str) -> None:
    w = pruned_gaussian((200, 100), 0.5)
    w = np.where(w != 0, 0.2 + 0.05 * w, 0).astype(np.float32)  # every level in float16's normal range
    for bits in (2, 8):
        codebook = quantize(w, bits, method)[0]
        assert np.array_equal(codebook.astype(np.float16).astype(np.float32), codebook)
    codebook = quantize(w, 9, method)[0]  # finer levels than float16 resolves comfortably: float32 as computed
    assert not np.array_equal(codebook.astype(np.float16).astype(np.float32), codebook)
    assert np.array_equal(half_precision(np.float32([1e-9, 7e4, 0.1])), np.float32([1e-9, 7e4, np.float16(0.1)]))


def test_an_all_zero_kernel_has_no_codes() -> None:
    codebook, codes = quantize(np.zeros((4, 3), np.float32), 3)
    assert len(codes) == 0 and codebook.shape == (8,)
    assert not quantized_kernel(np.zeros((4, 3), np.float32), 3).any()


@pytest.mark.parametrize("bits, method, match", [(0, "kmeans", "quantize.bits=0"), (17, "linear", "1 to 16"),
                                                 (2.5, "linear", "whole number"), (4, "lloyd", "'lloyd' is unknown")])
def test_bad_settings_get_one_line_errors(bits, method, match) -> None:
    with pytest.raises(ValueError, match=match) as info:
        quantize(np.ones((2, 2), np.float32), bits, method)
    assert "\n" not in str(info.value)
