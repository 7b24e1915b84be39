"""Weight sharing for a pruned kernel (Deep Compression, Han, Mao & Dally 2016): each kept (nonzero) weight is
replaced by one of at most 2**bits shared values, a codebook per tensor or per output channel.

Contracts:
- Only the nonzero entries of ``w`` are coded, in C order; pruned zeros are not coded and stay exact zeros.
- ``kmeans``: 1-D k-means (Lloyd) on the kept weights with 2**bits centroids initialised linearly between their
  min and max (Han et al. found linear initialisation best: it keeps centroids for the rare large weights);
  iterated until no centroid moves (at most ``MAX_ITERATIONS``); a centroid that loses all its weights stays
  where it is. ``linear``: 2**bits uniform levels between min and max, each weight rounded to the nearest.
- ``per_channel``: one codebook per output channel (the kernel's last axis), shape ``(channels, levels)``.
- When a tensor (or channel) has at most 2**bits distinct kept values, they are its codebook exactly, so
  quantizing a quantized kernel changes nothing (a kernel whose shared values were fine-tuned keeps them).
- Up to 8 bits, the shared values are rounded to the nearest float16 value (relative change <= 2**-11: under 1/100
  of a level's step at 8 bits for any range; values outside float16's normal range are left as they are), so a
  file stores such a codebook in 2 bytes per entry without loss (src/engine/compressed_model).
- Deterministic: the same ``w`` gives the same codebook and codes. Codebooks float32; codes the smallest
  unsigned dtype that holds them (uint8 up to 8 bits, uint16 up to 16).
"""

from __future__ import annotations

import numpy as np

METHODS = ("linear", "kmeans")
MAX_BITS = 16
MAX_ITERATIONS = 300
HALF_LEVELS = 256  # codebooks of up to 8 bits are rounded to float16 values (module docstring)


def check(bits: int, method: str) -> None:
    """Raise ValueError (one line, naming the setting) for bits outside 1..MAX_BITS or an unknown method."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"quantize.bits={bits!r}: give a whole number of bits from 1 to {MAX_BITS}")
    if method not in METHODS:
        raise ValueError(f"quantize method {method!r} is unknown: use one of {', '.join(METHODS)}")


def _linear(values: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    low, high = float(values.min()), float(values.max())
    step = (high - low) / (levels - 1)
    codebook = (low + step * np.arange(levels)).astype(np.float32)
    codes = np.rint((values - low) / step) if step > 0 else np.zeros(len(values))
    return codebook, np.clip(codes, 0, levels - 1).astype(np.int64)


def _kmeans(values: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm in 1-D: assignment by the midpoints between sorted centroids (exact nearest centroid)."""
    x = values.astype(np.float64)
    centroids = np.linspace(x.min(), x.max(), levels)
    codes = np.zeros(len(x), np.int64)
    for _ in range(MAX_ITERATIONS):
        codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, x)
        counts = np.bincount(codes, minlength=levels)
        sums = np.bincount(codes, weights=x, minlength=levels)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.array_equal(moved, centroids):
            break
        centroids = moved  # stays sorted: each mean lies inside its own cell, and cells do not overlap
    return centroids.astype(np.float32), codes


def _share(values: np.ndarray, levels: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(codebook float32 of ``levels`` entries, codes int64) for one group of kept weights."""
    distinct, inverse = np.unique(values, return_inverse=True)
    if len(distinct) <= levels:  # already shared: keep the values exactly
        return np.pad(distinct, (0, levels - len(distinct)), mode="edge").astype(np.float32), inverse.ravel()
    codebook, codes = (_kmeans if method == "kmeans" else _linear)(values, levels)
    return (half_precision(codebook) if levels <= HALF_LEVELS else codebook), codes


def half_precision(codebook: np.ndarray) -> np.ndarray:
    """``codebook`` with each value rounded to the nearest float16 where that is within float16's normal range
    (relative change <= 2**-11), else as it is; float32."""
    with np.errstate(over="ignore"):  # beyond float16's range: inf, left as it is below
        half = codebook.astype(np.float16).astype(np.float32)
    normal = np.isfinite(half) & (np.abs(half) >= np.finfo(np.float16).tiny)
    return np.where(normal, half, codebook).astype(np.float32)


def quantize(w: np.ndarray, bits: int, method: str = "kmeans", per_channel: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """(codebook, codes) of the nonzero entries of ``w`` in C order (module docstring): codebook float32 of
    ``2**bits`` entries, or ``(channels, 2**bits)`` when ``per_channel``; codes uint8/uint16, one per kept weight.
    ValueError for bits outside 1..16 or an unknown method."""
    check(bits, method)
    w = np.asarray(w, np.float32)
    levels = 1 << bits
    kept = w != 0
    values = w[kept]
    dtype = np.uint8 if bits <= 8 else np.uint16
    if not per_channel:
        if not len(values):
            return np.zeros(levels, np.float32), np.zeros(0, dtype)
        codebook, codes = _share(values, levels, method)
        return codebook, codes.astype(dtype)
    channel = np.nonzero(kept)[-1]
    codebook = np.zeros((w.shape[-1], levels), np.float32)
    codes = np.zeros(len(values), np.int64)
    for c in np.unique(channel):
        members = channel == c
        codebook[c], codes[members] = _share(values[members], levels, method)
    return codebook, codes.astype(dtype)


def dequantize(mask: np.ndarray, codebook: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The float32 kernel of ``mask``'s shape whose ``True`` entries (C order) take ``codebook[codes]`` (per channel:
    ``codebook[channel, code]``, the channel being the entry's last-axis index); all others are 0."""
    mask = np.asarray(mask, bool)
    w = np.zeros(mask.shape, np.float32)
    codes = np.asarray(codes, np.int64)
    if codebook.ndim == 2:
        w[mask] = codebook[np.nonzero(mask)[-1], codes]
    else:
        w[mask] = codebook[codes]
    return w


def quantized_kernel(w: np.ndarray, bits: int, method: str = "kmeans", per_channel: bool = False) -> np.ndarray:
    """``w`` (float32, same shape) with every kept weight replaced by its shared value; zeros stay exactly 0."""
    w = np.asarray(w, np.float32)
    codebook, codes = quantize(w, bits, method, per_channel)
    return dequantize(w != 0, codebook, codes)
