"""Sparsity schedules for pruning with retraining: pure Python functions, no Keras.

Units: a *sparsity* is a fraction in [0, 1] (as in TFMOT); ``k`` is a percentage in [0, 100] (as in
``masks.py``). A *step* counts completed optimizer steps: step 0 is before the first update.
"""

from __future__ import annotations

import math
from numbers import Integral, Real


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, Real) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")


def polynomial_sparsity(
    step: int, begin_step: int, end_step: int, initial: float, final: float, power: float = 3
) -> float:
    """Sparsity (fraction) at optimizer ``step`` under TFMOT's PolynomialDecay (Zhu & Gupta 2017, power 3):
    ``p = clip((step - begin_step) / (end_step - begin_step), 0, 1)``, ``final + (initial - final) * (1 - p)**power``.

    ``initial`` before ``begin_step``, ``final`` from ``end_step`` on. Needs 0 <= begin_step < end_step,
    0 <= initial <= final <= 1 and power > 0."""
    _check_int("begin_step", begin_step, 0)
    _check_int("end_step", end_step, begin_step + 1)
    _check_range("final", final, 0.0, 1.0)
    _check_range("initial", initial, 0.0, final)
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    p = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return final + (initial - final) * (1.0 - p) ** power


def gradual_update_steps(begin_step: int, end_step: int, frequency: int) -> list[int]:
    """Steps at which the gradual schedule recomputes the mask: begin_step, begin_step + frequency, ...
    below end_step, then end_step itself (so the last update reaches the final sparsity exactly)."""
    _check_int("begin_step", begin_step, 0)
    _check_int("end_step", end_step, begin_step + 1)
    _check_int("frequency", frequency, 1)
    return [*range(begin_step, end_step, frequency), end_step]


def gradual_span(total_steps: int, span_fraction: float = 0.7) -> tuple[int, int]:
    """(begin_step, end_step) of a gradual schedule over a budget of ``total_steps`` optimizer steps: pruning
    starts at step 0 and reaches the target after round(span_fraction * total_steps) steps (at least 1); the
    final mask is then held for the rest of the budget."""
    _check_int("total_steps", total_steps, 1)
    if not (isinstance(span_fraction, Real) and 0.0 < span_fraction <= 1.0):
        raise ValueError(f"span_fraction must be in (0, 1], got {span_fraction!r}")
    return 0, max(1, math.floor(float(span_fraction) * int(total_steps) + 0.5))


def gradual_plan(
    total_steps: int, frequency: int, initial_k: float, final_k: float, span_fraction: float = 0.7,
    power: float = 3,
) -> list[tuple[int, float]]:
    """[(step, k percent)] of every mask update of a gradual schedule over ``total_steps`` steps: the k of
    :func:`polynomial_sparsity` at each of :func:`gradual_update_steps` within :func:`gradual_span`; the last
    update is ``final_k`` exactly (not a rounded 100 * fraction)."""
    _check_range("final_k", final_k, 0.0, 100.0)
    _check_range("initial_k", initial_k, 0.0, final_k)
    begin, end = gradual_span(total_steps, span_fraction)
    steps = gradual_update_steps(begin, end, frequency)
    plan = [(s, 100.0 * polynomial_sparsity(s, begin, end, initial_k / 100.0, final_k / 100.0, power))
            for s in steps[:-1]]
    return [*plan, (end, float(final_k))]


def layer_gradual_plan(
    total_steps: int, frequency: int, initial_k: float, final_ks: list[float], span_fraction: float = 0.7,
    power: float = 3,
) -> list[tuple[int, list[float]]]:
    """:func:`gradual_plan` for one final k per layer, on the common update steps: [(step, [k per layer])];
    a layer whose final k is below ``initial_k`` starts at its final k."""
    plans = [gradual_plan(total_steps, frequency, min(initial_k, k), k, span_fraction, power) for k in final_ks]
    return [(updates[0][0], [k for _, k in updates]) for updates in zip(*plans, strict=True)]


def layer_iterative_targets(final_ks: list[float], rounds: int) -> list[list[float]]:
    """:func:`iterative_targets` for one final k per layer: per round, the k of every layer."""
    return [list(ks) for ks in zip(*(iterative_targets(k, rounds) for k in final_ks), strict=True)]


def iterative_targets(k_final: float, rounds: int) -> list[float]:
    """k (percent) reached after each of ``rounds`` rounds when every round prunes the same fraction of the
    weights still remaining: ``100 * (1 - (1 - k_final/100) ** (r / rounds))`` for r = 1..rounds; the last is
    ``k_final`` exactly."""
    _check_range("k_final", k_final, 0.0, 100.0)
    _check_int("rounds", rounds, 1)
    keep, n = 1.0 - float(k_final) / 100.0, int(rounds)
    return [100.0 * (1.0 - keep ** (r / n)) for r in range(1, n)] + [float(k_final)]


def split_epochs(total_epochs: int, parts: int) -> list[int]:
    """Split ``total_epochs`` into ``parts`` non-negative integers summing to it; earlier parts get the
    remainder (10 into 3 -> [4, 3, 3]; 2 into 3 -> [1, 1, 0])."""
    _check_int("total_epochs", total_epochs, 0)
    _check_int("parts", parts, 1)
    base, extra = divmod(int(total_epochs), int(parts))
    return [base + 1] * extra + [base] * (parts - extra)
