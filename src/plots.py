"""Matplotlib figures (Agg backend, written to PNG). Figures only; the numbers come from src/stats.py."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from src.stats import excess_kurtosis, histogram  # noqa: E402


def weight_histograms(
    path: Path, before: list[np.ndarray], after: list[np.ndarray] | None, title: str
) -> Path:
    """One panel per layer: histogram of the trained weights, and of the survivors after pruning.

    Zeros left by pruning are not drawn (they would be one spike at 0)."""
    n = len(before)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for i, ax in enumerate(axes[0]):
        lim = float(np.abs(before[i]).max()) or 1.0
        counts, edges = histogram(before[i], bins=80, value_range=(-lim, lim))
        ax.stairs(counts, edges, fill=True, alpha=0.5, label=f"trained (kurt {excess_kurtosis(before[i]):+.2f})")
        if after is not None:
            counts, edges = histogram(after[i], bins=80, value_range=(-lim, lim))
            ax.stairs(counts, edges, fill=True, alpha=0.6, label="kept after pruning")
        ax.set_title(f"layer {i + 1} {before[i].shape[0]}x{before[i].shape[1]}", fontsize=9)
        ax.set_xlabel("weight value")
        ax.set_ylabel("count" if i == 0 else "")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
