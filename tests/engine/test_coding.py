"""Relative indices and the coders (src/engine/coding): round trips with overflow fillers at several widths (random
masks, adversarial long gaps), Huffman's code lengths, coder round trips, damaged streams refused without hanging."""

from __future__ import annotations

import numpy as np
import pytest

from src.engine.coding import CODERS, code_lengths, decode, encode, positions_from_relative, relative_indices


def test_a_gap_longer_than_the_width_takes_fillers_that_carry_no_weight() -> None:
    # 3 bits: entries 0..6 are gaps, 7 advances 7 positions without a weight
    entries = relative_indices(np.array([0, 3, 20, 21, 35]), 3)
    assert entries.tolist() == [0, 2, 7, 7, 2, 0, 7, 6]
    assert positions_from_relative(entries, 3, 5, 36).tolist() == [0, 3, 20, 21, 35]


@pytest.mark.parametrize("index_bits", [1, 2, 3, 4, 5, 8, 11])
def test_relative_indices_round_trip_on_random_and_adversarial_masks(index_bits: int) -> None:
    rng = np.random.default_rng(index_bits)
    filler = 2 ** index_bits - 1
    cases = [np.flatnonzero(rng.random(3000) < density) for density in (0.005, 0.08, 0.5, 1.0)]
    cases += [np.array([0]), np.array([99_999]), np.array([], np.int64), np.arange(0, 5000, filler),
              np.arange(0, 5000, filler + 1), np.arange(filler - 1, 5000, filler), np.array([3, 70_000, 70_001])]
    for positions in cases:
        entries = relative_indices(positions, index_bits)
        assert entries.max(initial=0) <= filler and entries.dtype == (np.uint8 if index_bits <= 8 else np.uint16)
        size = int(positions[-1]) + 1 if len(positions) else 1
        assert np.array_equal(positions_from_relative(entries, index_bits, len(positions), size), positions)
        gaps = np.diff(positions, prepend=-1) - 1
        assert len(entries) == len(positions) + int((gaps // filler).sum())  # one filler per full span skipped


def test_index_streams_that_give_other_positions_are_refused() -> None:
    entries = relative_indices(np.array([2, 40]), 4)
    with pytest.raises(ValueError, match="2 positions up to 40 for 3 kept"):
        positions_from_relative(entries, 4, 3, 41)
    with pytest.raises(ValueError, match="up to 40 for 2 kept weights of 40"):
        positions_from_relative(entries, 4, 2, 40)
    with pytest.raises(ValueError, match="ends in a filler"):
        positions_from_relative(np.append(entries, 15), 4, 2, 100)
    with pytest.raises(ValueError, match="strictly increasing"):
        relative_indices(np.array([3, 3]), 4)


def test_huffman_code_lengths_are_optimal_and_limited() -> None:
    assert code_lengths(np.array([8, 4, 2, 2, 0]), 15).tolist() == [1, 2, 3, 3, 0]
    assert code_lengths(np.array([0, 5, 0]), 15).tolist() == [0, 1, 0]
    fibonacci = [1, 1]
    while len(fibonacci) < 30:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    assert code_lengths(np.array(fibonacci), 60).max() == 29  # unlimited: a chain
    lengths = code_lengths(np.array(fibonacci), 15).astype(np.int64)
    assert lengths.max() <= 15 and np.sum(2.0 ** -lengths) == 1.0


def streams(rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    return [(np.zeros(0, np.int64), 32), (np.zeros(1, np.int64), 1), (np.full(500, 3), 8),
            (np.minimum(rng.geometric(0.2, 5000) - 1, 63), 64), (rng.integers(0, 256, 3000), 256),
            (rng.integers(0, 300, 1000), 300), (rng.integers(0, 65536, 2000), 65536)]


@pytest.mark.parametrize("coder", CODERS)
def test_coders_round_trip(coder: str) -> None:
    for symbols, alphabet in streams(np.random.default_rng(0)):
        assert np.array_equal(decode(encode(symbols, alphabet, coder), len(symbols), alphabet, coder), symbols)


def test_huffman_beats_fixed_width_on_a_skewed_stream() -> None:
    symbols = np.minimum(np.random.default_rng(1).geometric(0.3, 10_000) - 1, 31)
    assert len(encode(symbols, 32, "huffman")) < 0.65 * 10_000 * 5 / 8


@pytest.mark.parametrize("coder", CODERS)
def test_damaged_streams_are_refused_or_decode_to_symbols_in_range(coder: str) -> None:
    """Every truncation is refused; a flipped bit is refused or (rarely, e.g. a flip inside a Huffman code that
    swaps two symbols of one length) decodes to the right count of in-range symbols: never a hang or a crash."""
    rng = np.random.default_rng(2)
    symbols = np.minimum(rng.geometric(0.25, 400) - 1, 31)
    data = encode(symbols, 32, coder)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode(data[:cut], len(symbols), 32, coder)
    refused = 0
    for position in range(0, 8 * len(data), 3):
        damaged = bytearray(data)
        damaged[position // 8] ^= 1 << (position % 8)
        try:
            out = decode(bytes(damaged), len(symbols), 32, coder)
        except ValueError:
            refused += 1
            continue
        assert len(out) == len(symbols) and out.max() < 32
    assert refused > 0
    with pytest.raises(ValueError):
        decode(data, len(symbols) + 8, 32, coder)  # more symbols than a byte of padding can hold
    with pytest.raises(ValueError):
        decode(data + b"\0", len(symbols), 32, coder)
    with pytest.raises(ValueError):
        decode(data, len(symbols), 3, coder)  # symbols beyond a smaller alphabet


def test_a_huffman_table_that_is_no_prefix_code_is_refused() -> None:
    data = bytearray(encode(np.arange(4), 4, "huffman"))  # lengths 2, 2, 2, 2 as nibbles: 0x22 0x22
    data[0] = 0x11
    with pytest.raises(ValueError, match="not a prefix code"):
        decode(bytes(data), 4, 4, "huffman")


def test_an_unknown_coder_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="quantize.coder='zstd' is unknown: use one of huffman, lzma, zlib"):
        encode(np.zeros(3, np.int64), 2, "zstd")
