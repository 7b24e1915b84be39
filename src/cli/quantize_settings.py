"""What the ``quantize`` settings mean for a job, before anything runs: the bits each layer gets (command line over
budget) and the entries they add to the job's identity."""

from __future__ import annotations

from typing import Any

DEFAULT_BITS = 8  # quantize.bits=null and no budget bits


def quantized(cfg: Any) -> bool:
    """Whether the job quantizes (``quantize`` is not ``none``)."""
    return cfg.quantize.method != "none"


def bits_by_layer(quantize: Any, names: list[str]) -> dict[str, int]:
    """The bits each weighted layer (by name) is quantized to: ``quantize.layer_bits[name]``, else ``quantize.bits``
    (a command line's ``quantize.bits=4`` wins over a budget's), else the budget's ``quantize.budget_bits[name]``,
    else 8."""
    layer_bits, budget = dict(quantize.layer_bits or {}), dict(quantize.budget_bits or {})
    fallback = {n: quantize.bits if quantize.bits is not None else budget.get(n, DEFAULT_BITS) for n in names}
    return {n: int(layer_bits.get(n, fallback[n])) for n in names}


def identity(quantize: Any, names: list[str]) -> dict[str, Any]:
    """The job-identity entries of the ``quantize`` settings: none when off (jobs cached before quantization are
    still found); else the method, each layer's resolved bits (``quantize.bits=6`` and a budget's 6 are one job),
    per_channel, index_bits and coder."""
    if quantize.method == "none":
        return {}
    return {"quantize.method": quantize.method, "quantize.per_channel": bool(quantize.per_channel),
            "quantize.index_bits": quantize.index_bits, "quantize.coder": quantize.coder,
            **{f"quantize.layer_bits.{n}": b for n, b in bits_by_layer(quantize, names).items()}}
