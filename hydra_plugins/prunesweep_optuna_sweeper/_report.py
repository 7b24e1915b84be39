"""End-of-study report, no I/O besides the files it writes: Pareto front, figure, CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHOD_COLOURS = {"weight": "tab:blue", "unit": "tab:orange", "none": "tab:gray"}


@dataclass(frozen=True)
class Point:
    """One pruned model: a trial (``trial`` >= 0) or a uniform-k grid run (``trial`` = -1)."""

    trial: int
    run_id: str
    method: str
    layer_k: list[float]  # percent pruned in each pruned layer
    val_accuracy: float
    test_accuracy: float
    sparsity: float
    feasible: bool = True  # meets hydra.sweeper.max_accuracy_drop (always True without a constraint)
    schedule: str = "oneshot"  # prune.schedule of the run (a grid run's line is per method and schedule)
    timing: dict[str, float | str] = field(default_factory=dict)  # front points: dense vs sparse times, engines


def pareto_front(points: list[Point]) -> list[Point]:
    """The feasible points no other feasible point beats on both sparsity and val_accuracy, by sparsity."""
    feasible = [p for p in points if p.feasible]

    def dominated(p: Point) -> bool:
        return any(q.sparsity >= p.sparsity and q.val_accuracy >= p.val_accuracy
                   and (q.sparsity > p.sparsity or q.val_accuracy > p.val_accuracy) for q in feasible)

    return sorted((p for p in feasible if not dominated(p)), key=lambda p: (p.sparsity, -p.val_accuracy))


def plot_front(path: Path, trials: list[Point], front: list[Point], grid: list[Point],
               accuracy_floors: list[float], title: str) -> Path:
    """Sparsity vs val accuracy: every trial (hollow if infeasible), the front (boundary of the region
    it dominates as a step line), the uniform-k grid as one line per method, and a dotted line per
    accuracy floor of the constraint."""
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for method, schedule in sorted({(p.method, p.schedule) for p in grid}):
        line = sorted((p for p in grid if (p.method, p.schedule) == (method, schedule)), key=lambda p: p.sparsity)
        style = "x--" if schedule == "oneshot" else "+-"
        ax.plot([100 * p.sparsity for p in line], [100 * p.val_accuracy for p in line], style,
                lw=1, alpha=0.7, color=METHOD_COLOURS.get(method, "tab:green"),
                label=f"uniform k grid ({method}{'' if schedule == 'oneshot' else ', ' + schedule})")
    for method in sorted({p.method for p in trials}):
        colour = METHOD_COLOURS.get(method, "tab:green")
        for feasible in (True, False):
            mine = [p for p in trials if p.method == method and p.feasible == feasible]
            if mine:
                ax.scatter([100 * p.sparsity for p in mine], [100 * p.val_accuracy for p in mine], s=28, alpha=0.8,
                           facecolors=colour if feasible else "none", edgecolors=colour,
                           label=f"trials ({method}{'' if feasible else ', infeasible'})")
    if front:
        ax.step([100 * p.sparsity for p in front], [100 * p.val_accuracy for p in front], where="pre", color="black",
                lw=1)
        ax.scatter([100 * p.sparsity for p in front], [100 * p.val_accuracy for p in front], s=90, facecolors="none",
                   edgecolors="black", linewidths=1.5, label=f"Pareto front ({len(front)})", zorder=3)
    for floor in accuracy_floors:
        ax.axhline(100 * floor, color="red", ls=":", lw=1, label=f"accuracy floor {100 * floor:.2f}%")
    ax.axhline(10, color="grey", ls="--", lw=0.8, label="chance (10%)")
    ax.set_xlabel("sparsity: zero weights in the pruned layers (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


TIMING_COLUMNS = ("dense_eval_ms", "sparse_eval_ms", "eval_speedup", "dense_latency_ms", "sparse_latency_ms",
                  "latency_speedup", "engine", "latency_engine")


def write_csv(path: Path, front: list[Point]) -> Path:
    """One row per front point: trial, run_id, method, k_layer1..k_layerN, val/test accuracy, sparsity, and
    the end-of-study timing columns (TIMING_COLUMNS) when the front was timed."""
    n_layers = max((len(p.layer_k) for p in front), default=0)
    timed = [c for c in TIMING_COLUMNS if any(c in p.timing for p in front)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "run_id", "method", *(f"k_layer{i}" for i in range(1, n_layers + 1)),
                         "val_accuracy", "test_accuracy", "sparsity", *timed])
        for p in front:
            ks = [f"{k:.4g}" for k in p.layer_k] + [""] * (n_layers - len(p.layer_k))
            cells = [f"{v:.6g}" if isinstance(v, float) else v for v in (p.timing.get(c, "") for c in timed)]
            writer.writerow([p.trial, p.run_id, p.method, *ks, f"{p.val_accuracy:.6g}", f"{p.test_accuracy:.6g}",
                             f"{p.sparsity:.6g}", *cells])
    return path
