"""Weight histograms (matplotlib, written to PNG). Figures only; the numbers come from src/pruning/stats.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no global figure state, and a prune job imports less

from src.pruning.stats import excess_kurtosis, histogram

MAX_COLUMNS = 6  # panels per row


def layer_histogram(w: np.ndarray, lim: float, bins: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of the nonzero entries of ``w`` over [-lim, lim] (src/pruning/stats.histogram)."""
    return histogram(w, bins=bins, value_range=(-lim, lim))


def trained_panels(before: list[np.ndarray]) -> list[tuple[float, tuple[np.ndarray, np.ndarray], float]]:
    """Per layer: (axis limit, histogram, excess kurtosis) of the trained weights; a model's jobs can share it."""
    panels = []
    for w in before:
        lim = float(np.abs(w).max()) or 1.0
        panels.append((lim, layer_histogram(w, lim), excess_kurtosis(w)))
    return panels


def weight_histograms(
    path: Path, before: list[np.ndarray], after: list[np.ndarray] | None, title: str,
    panels: list[tuple[float, tuple[np.ndarray, np.ndarray], float]] | None = None,
    names: list[str] | None = None,
) -> Path:
    """One panel per layer: histogram of the trained weights, and of the survivors after pruning.

    Zeros left by pruning are not drawn (they would be one spike at 0). ``panels``: :func:`trained_panels` of
    ``before``, if the caller has it already; ``names``: each panel's title (default ``layer i``). Any number of
    panels, :data:`MAX_COLUMNS` to a row (none: a figure that says so)."""
    panels = trained_panels(before) if panels is None else panels
    n = len(before)
    columns = min(max(n, 1), MAX_COLUMNS)
    rows = max(math.ceil(n / columns), 1)
    fig = Figure(figsize=(3.2 * columns, 3.0 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    if n == 0:
        axes[0].text(0.5, 0.5, "no tensor pruned", ha="center", va="center")
        axes[0].set_axis_off()
    for ax in axes[n:] if n else ():
        ax.set_axis_off()
    for i, ax in enumerate(axes[:n]):
        lim, (counts, edges), kurtosis = panels[i]
        ax.stairs(counts, edges, fill=True, alpha=0.5, label=f"trained (kurt {kurtosis:+.2f})")
        if after is not None:
            ax.stairs(*layer_histogram(after[i], lim), fill=True, alpha=0.6, label="kept after pruning")
        shape = "x".join(str(d) for d in before[i].shape)
        ax.set_title(f"{names[i]} {shape}" if names else f"layer {i + 1} {shape}", fontsize=9)
        ax.set_xlabel("weight value")
        ax.set_ylabel("count" if i == 0 else "")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.3 / columns, right=0.99, bottom=0.16 / rows, top=1 - 0.16 / rows, wspace=0.22,
                        hspace=0.5)  # tight_layout: 4x dearer
    fig.savefig(path, dpi=90)
    return path
