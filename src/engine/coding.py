"""Relative indices and entropy coding of the symbol streams of a compressed kernel (Deep Compression's last two
stages), and their decoders (numpy, and numba for Huffman's bit loop).

Relative indices (``index_bits`` = b, M = 2**b): the kept positions p_0 < p_1 < ... of a flattened kernel are
stored as one entry per gap, ``p_k - p_(k-1) - 1`` (p_(-1) = -1), when it is below M - 1. A longer gap first takes
filler entries of value M - 1, each advancing M - 1 positions WITHOUT a weight, so the code stream holds exactly
one code per kept weight (Han et al.'s filler is a zero weight that also costs a code; this one costs an index
entry only) and decoding reproduces exactly the kept positions.

Coders of a stream of ``count`` symbols below ``alphabet`` (``CODERS``):
- ``huffman``: canonical Huffman code of the stream's own symbol counts (Deep Compression's). Stored as the
  code lengths of the ``alphabet`` symbols (4 bits each, lengths limited to 15, for alphabets up to 2**15; else a
  byte each, limited to 24), then the codes' bits, most significant bit first, the last byte zero-padded.
  Written with numpy and heapq (the standard library has no Huffman coder; the PyPI ones are unmaintained or
  pure-Python bit loops): a table of at most 2**16 lengths is all a decoder needs.
- ``lzma`` (raw LZMA2, preset 9 extreme) and ``zlib`` (level 9) of the symbols as bytes (uint8, or uint16
  little-endian past 256 symbols): the standard library's general coders.
Decoders refuse (ValueError, one line) anything that does not decode to exactly ``count`` symbols below
``alphabet`` with nothing left over; they never read past their input or loop more than ``count * 24`` bits.
"""

from __future__ import annotations

import heapq
import lzma
import zlib

import numpy as np
from numba import njit

CODERS = ("huffman", "lzma", "zlib")
MAX_INDEX_BITS = 16
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 22}]
_NIBBLE_ALPHABET = 1 << 15  # alphabets up to this size store their code lengths as 4 bits (at most 15)


def check_index_bits(index_bits: int) -> None:
    """Raise ValueError (one line) unless ``index_bits`` is a whole number from 1 to MAX_INDEX_BITS."""
    if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)) \
            or not 1 <= index_bits <= MAX_INDEX_BITS:
        raise ValueError(f"quantize.index_bits={index_bits!r}: give a whole number of bits from 1 to "
                         f"{MAX_INDEX_BITS} (Han et al.: 5 for dense layers, 8 for conv)")


def check_coder(coder: str) -> None:
    if coder not in CODERS:
        raise ValueError(f"quantize.coder={coder!r} is unknown: use one of {', '.join(CODERS)}")


# ---------------------------------------------------------------- relative indices

def relative_indices(positions: np.ndarray, index_bits: int) -> np.ndarray:
    """The relative index entries (module docstring) of the strictly increasing flat ``positions``; dtype uint8
    for index_bits <= 8, else uint16."""
    check_index_bits(index_bits)
    filler = (1 << index_bits) - 1
    gaps = np.diff(np.asarray(positions, np.int64), prepend=-1) - 1
    if len(gaps) and gaps.min() < 0:
        raise ValueError("positions must be strictly increasing and >= 0")
    fillers = gaps // filler
    ends = np.cumsum(fillers + 1) - 1
    entries = np.full(int(ends[-1]) + 1 if len(ends) else 0, filler, np.int64)
    entries[ends] = gaps - fillers * filler
    return entries.astype(np.uint8 if index_bits <= 8 else np.uint16)


def positions_from_relative(entries: np.ndarray, index_bits: int, kept: int, size: int) -> np.ndarray:
    """The flat positions (int64) that ``entries`` encode. ValueError unless they are exactly ``kept`` positions
    below ``size`` and the stream does not end in a filler."""
    filler = (1 << index_bits) - 1
    entries = np.asarray(entries, np.int64)
    is_filler = entries == filler
    if len(entries) and is_filler[-1]:
        raise ValueError("the index stream ends in a filler entry")
    positions = (np.cumsum(np.where(is_filler, filler, entries + 1)) - 1)[~is_filler]
    if len(positions) != kept or (kept and positions[-1] >= size):
        raise ValueError(f"the index stream gives {len(positions)} positions up to "
                         f"{positions[-1] if len(positions) else -1} for {kept} kept weights of {size}")
    return positions


# ---------------------------------------------------------------- Huffman

def code_lengths(counts: np.ndarray, limit: int) -> np.ndarray:
    """Huffman code lengths (uint8; 0 for symbols of count 0) for ``counts``, none longer than ``limit`` (counts
    are halved until the tree fits: a near-optimal code, as zlib does). One used symbol gets length 1."""
    counts = np.asarray(counts, np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), np.uint8)
    if len(used) <= 1:
        lengths[used] = 1
        return lengths
    weights = counts[used]
    while True:
        depth = np.zeros(len(used), np.int64)
        heap = [(int(c), i, [i]) for i, c in enumerate(weights)]
        heapq.heapify(heap)
        order = len(heap)
        while len(heap) > 1:
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            merged = s1 + s2
            depth[merged] += 1
            heapq.heappush(heap, (c1 + c2, order, merged))
            order += 1
        if depth.max() <= limit:
            break
        weights = np.maximum(weights >> 1, 1)
    lengths[used] = depth
    return lengths


def _canonical(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes per symbol uint64, first code per length, first rank per length, symbols by rank) of a canonical
    code: symbols sorted by (length, symbol), consecutive codes within a length, shifted left between lengths.
    ValueError when the lengths are no prefix code (Kraft sum above 1)."""
    lengths = lengths.astype(np.int64)
    top = int(lengths.max()) if len(lengths) else 0
    n_of_len = np.bincount(lengths, minlength=top + 1)
    n_of_len[0] = 0
    if np.sum(n_of_len / np.exp2(np.arange(top + 1))) > 1:
        raise ValueError("the Huffman code lengths are not a prefix code")
    first_code = np.zeros(top + 2, np.int64)
    for length in range(1, top + 1):
        first_code[length + 1] = (first_code[length] + n_of_len[length]) << 1
    first_rank = np.concatenate([[0], np.cumsum(n_of_len)])[:top + 1]
    by_rank = np.lexsort((np.arange(len(lengths)), lengths))[np.count_nonzero(lengths == 0):]
    codes = np.zeros(len(lengths), np.uint64)
    rank_in_length = np.arange(len(by_rank)) - first_rank[lengths[by_rank]]
    codes[by_rank] = (first_code[lengths[by_rank]] + rank_in_length).astype(np.uint64)
    return codes, first_code[:top + 1], first_rank, by_rank


def _length_table(lengths: np.ndarray) -> bytes:
    if len(lengths) <= _NIBBLE_ALPHABET:
        padded = np.pad(lengths, (0, len(lengths) % 2)).astype(np.uint8)
        return ((padded[0::2] << 4) | padded[1::2]).tobytes()
    return lengths.astype(np.uint8).tobytes()


def _read_length_table(data: bytes, alphabet: int) -> tuple[np.ndarray, int]:
    """(lengths, bytes the table takes) of a Huffman stream for ``alphabet`` symbols."""
    if alphabet <= _NIBBLE_ALPHABET:
        size = (alphabet + 1) // 2
        packed = np.frombuffer(data, np.uint8, count=min(size, len(data)))
        lengths = np.stack([packed >> 4, packed & 15], axis=1).ravel()[:alphabet]
    else:
        size = alphabet
        lengths = np.frombuffer(data, np.uint8, count=min(size, len(data)))
    if len(data) < size:
        raise ValueError(f"the Huffman stream is shorter ({len(data)} bytes) than its code table ({size} bytes)")
    return lengths, size


def huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """The ``huffman`` stream (module docstring) of ``symbols`` (ints below ``alphabet``)."""
    symbols = np.asarray(symbols, np.int64)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet),
                           15 if alphabet <= _NIBBLE_ALPHABET else 24)
    codes = _canonical(lengths)[0]
    sizes = lengths[symbols].astype(np.int64)
    starts = np.cumsum(sizes) - sizes
    owner = np.repeat(np.arange(len(symbols)), sizes)
    shift = (sizes[owner] - 1 - (np.arange(int(sizes.sum())) - starts[owner])).astype(np.uint64)
    bits = ((codes[symbols][owner] >> shift) & np.uint64(1)).astype(np.uint8)
    return _length_table(lengths) + np.packbits(bits).tobytes()


@njit(cache=True, boundscheck=False)
def _decode_bits(data: np.ndarray, count: int, first_code: np.ndarray, n_of_len: np.ndarray,
                 first_rank: np.ndarray, by_rank: np.ndarray, out: np.ndarray) -> int:
    """Decode ``count`` symbols of canonical codes from the bits of ``data`` into ``out``; return the bits read,
    or -1 when the bits run out or match no code. Reads at most ``count * (len(first_code) - 1)`` bits."""
    top, total, pos = len(first_code) - 1, len(data) * 8, 0
    for i in range(count):
        code, found = 0, False
        for length in range(1, top + 1):
            if pos >= total:
                return -1
            code = (code << 1) | ((data[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
            rank = code - first_code[length]
            if rank >= 0 and rank < n_of_len[length]:
                out[i] = by_rank[first_rank[length] + rank]
                found = True
                break
        if not found:
            return -1
    return pos


def huffman_decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    """The ``count`` symbols (int64) of a ``huffman`` stream for ``alphabet`` symbols. ValueError when damaged."""
    lengths, table_size = _read_length_table(data, alphabet)
    bits = np.frombuffer(data, np.uint8, offset=table_size)
    if count == 0:
        if len(bits):
            raise ValueError("an empty Huffman stream has bits after its table")
        return np.zeros(0, np.int64)
    if not lengths.any() or lengths.max() > 24:
        raise ValueError("the Huffman code table is empty or has codes longer than 24 bits")
    _, first_code, first_rank, by_rank = _canonical(lengths)
    n_of_len = np.bincount(lengths.astype(np.int64), minlength=len(first_code))
    n_of_len[0] = 0
    out = np.zeros(count, np.int64)
    read = _decode_bits(bits, count, first_code, n_of_len, first_rank, by_rank.astype(np.int64), out)
    if read < 0 or (read + 7) // 8 != len(bits) or (read % 8 and bits[-1] & ((1 << (8 - read % 8)) - 1)):
        raise ValueError(f"the Huffman stream does not decode to {count} symbols")
    return out


# ---------------------------------------------------------------- any coder

def _symbol_dtype(alphabet: int) -> np.dtype:
    return np.dtype(np.uint8) if alphabet <= 256 else np.dtype("<u2")


def encode(symbols: np.ndarray, alphabet: int, coder: str) -> bytes:
    """``symbols`` (ints below ``alphabet`` <= 2**16) as the ``coder``'s stream."""
    check_coder(coder)
    if coder == "huffman":
        return huffman_encode(symbols, alphabet)
    raw = np.asarray(symbols).astype(_symbol_dtype(alphabet)).tobytes()
    if coder == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return zlib.compress(raw, 9)


def decode(data: bytes, count: int, alphabet: int, coder: str) -> np.ndarray:
    """The ``count`` symbols (int64) of a ``coder`` stream, each below ``alphabet``. ValueError (one line) when
    the stream is damaged or decodes to anything else; never inflates past the expected size."""
    check_coder(coder)
    if coder == "huffman":
        symbols = huffman_decode(data, count, alphabet)
    else:
        dtype = _symbol_dtype(alphabet)
        expected = count * dtype.itemsize
        try:
            if coder == "lzma":
                inflater = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
            else:
                inflater = zlib.decompressobj()
            raw = inflater.decompress(data, expected + 1)
        except (lzma.LZMAError, zlib.error) as e:
            raise ValueError(f"the {coder} stream is damaged ({e})") from None
        if len(raw) != expected or not inflater.eof or inflater.unused_data:
            raise ValueError(f"the {coder} stream does not decode to {count} symbols")
        symbols = np.frombuffer(raw, dtype).astype(np.int64)
    if len(symbols) and symbols.max() >= alphabet:
        raise ValueError(f"a decoded symbol is outside the alphabet of {alphabet}")
    return symbols
