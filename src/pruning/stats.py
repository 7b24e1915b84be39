"""Weight-distribution statistics: pure NumPy.

The study's "flat top vs Gaussian" finding is measured by the excess kurtosis of each layer's
weights: about -1.2 for the uniform (Glorot) initialisation, 0 for a Gaussian, > 0 for heavier tails.
"""

from __future__ import annotations

import numpy as np

NEAR_ZERO_STD = 0.1  # a weight is "near zero" when |w| < NEAR_ZERO_STD * std of its layer


def excess_kurtosis(x: np.ndarray) -> float:
    """Fourth standardised moment minus 3 (population form); 0.0 for constant input."""
    x = np.asarray(x, dtype=np.float64).ravel()
    centred = x - x.mean()
    var = np.mean(centred**2)
    return float(np.mean(centred**4) / var**2 - 3.0) if var > 0 else 0.0


def weight_stats(w: np.ndarray) -> dict[str, float]:
    """std, excess_kurtosis, and frac_near_zero (|w| < 0.1 std) of all entries of ``w``."""
    w = np.asarray(w, dtype=np.float64).ravel()
    std = float(w.std())
    return {
        "std": std,
        "excess_kurtosis": excess_kurtosis(w),
        "frac_near_zero": float(np.mean(np.abs(w) < NEAR_ZERO_STD * std)) if std > 0 else 1.0,
    }


def histogram(w: np.ndarray, bins: int = 100, value_range: tuple[float, float] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin edges of the nonzero entries of ``w`` (pruned zeros are left out)."""
    values = np.asarray(w).ravel()
    return np.histogram(values[values != 0], bins=bins, range=value_range)


WEIGHTS_PREFIX = "weights/"  # one section of MLflow's charts for all weight statistics


def layer_metrics(kernels: list[np.ndarray], prefix: str = WEIGHTS_PREFIX, names: list[str] | None = None
                  ) -> dict[str, float]:
    """:func:`weight_stats` of each layer, named ``{prefix}layer{i}/{stat}`` with layers numbered from 1, or
    ``{prefix}{name}/{stat}`` by ``names`` (a graph model's tensors)."""
    names = [f"layer{i}" for i in range(1, len(kernels) + 1)] if names is None else names
    return {f"{prefix}{n}/{stat}": value
            for n, w in zip(names, kernels, strict=True) for stat, value in weight_stats(w).items()}
