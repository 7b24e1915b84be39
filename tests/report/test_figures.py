"""The literature's axis on the accuracy-vs-kept figures: weights kept (%), log scale, 100% on the left."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from src.report import figures

ACCURACY = {"oneshot": [97.8, 94.8, 83.5, 39.4, 15.5], "gradual": [97.8, 98.6, 98.2, 95.3, 93.2]}
KS = [0, 90, 95, 98, 99.5]


@pytest.fixture
def drawn(monkeypatch):
    """The figure each call draws, kept open instead of saved."""
    kept = []

    def keep(fig: plt.Figure, path: Path) -> Path:
        kept.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    yield kept
    plt.close("all")


def table() -> pd.DataFrame:
    return pd.DataFrame([{"lr": 1e-3, "method": "weight", "k": k, "prune.schedule": schedule, "sparsity": k / 100,
                          "test_accuracy": accuracy / 100}
                         for schedule, values in ACCURACY.items() for k, accuracy in zip(KS, values, strict=True)])


def check_kept_axis(ax: plt.Axes) -> None:
    left, right = ax.get_xlim()
    assert ax.get_xscale() == "log" and left > 100 and right < 0.5  # 100% on the left, the sparsest on the right
    ticks = [t for t in ax.get_xticks() if right <= t <= left]
    assert {100, 10, 1, 0.5} <= set(ticks) and ax.get_xlabel() == figures.KEPT_LABEL


def test_frontier_steps_over_weights_kept_with_the_unpruned_line(drawn):
    assert figures.frontier(Path("f.png"), table(), "t", "prune.schedule", 0.978) == Path("f.png")
    ax = drawn[0].axes[0]
    check_kept_axis(ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["unpruned (97.80%)"].get_ydata()) == [pytest.approx(97.8)] * 2
    gradual = lines["schedule=gradual"]
    assert list(gradual.get_xdata()) == pytest.approx([0.5, 2, 5, 10, 100])  # kept = 100 - k, sparsest first
    assert list(gradual.get_ydata()) == pytest.approx([93.2, 95.3, 98.2, 98.6, 98.6])  # best with at most that kept


def test_accuracy_vs_sparsity_plots_against_weights_kept(drawn):
    figures.accuracy_vs_sparsity(Path("a.png"), table(), "t", ["method", "prune.schedule"], None)
    ax = drawn[0].axes[0]
    check_kept_axis(ax)
    oneshot = next(line for line in ax.get_lines() if line.get_label() == "weight, oneshot")
    assert sorted(oneshot.get_xdata()) == pytest.approx([0.5, 2, 5, 10, 100])


def test_a_fully_pruned_network_sits_at_the_axis_floor():
    assert list(figures.kept_percent(pd.Series([0.0, 0.9, 1.0]))) == pytest.approx([100, 10, figures.KEPT_FLOOR])


def test_long_legend_labels_go_beside_the_axes_wrapped(drawn):
    """A mixed sweep's curve labels name many settings: beside the axes, wrapped, the figure widened (inside, they
    squeezed the plot into a quarter of the figure); short labels stay inside."""
    long = table().assign(**{"model.hidden": "[1000, 1000, 500, 200]", "model.name": "resnet20",
                             "data.train_size": 1000})
    figures.accuracy_vs_k(Path("long.png"), long, "t", ["prune.schedule", "model.hidden", "model.name",
                                                       "data.train_size"])
    figures.accuracy_vs_k(Path("short.png"), table(), "t", ["prune.schedule"])
    (wide, wide_ax), (plain, plain_ax) = [(fig, fig.axes[0]) for fig in drawn]
    assert wide.get_size_inches()[0] > plain.get_size_inches()[0] + 3
    labels = [t.get_text() for t in wide_ax.get_legend().get_texts()]
    assert all(len(line) <= figures.LEGEND_WRAP for label in labels for line in label.split("\n"))
    assert any("\n" in label for label in labels)
    assert wide_ax.get_legend().get_bbox_to_anchor().x0 > wide_ax.get_window_extent().x1 - 1  # right of the axes
    assert all("\n" not in t.get_text() for t in plain_ax.get_legend().get_texts())


def test_weight_distributions_give_each_architecture_its_own_panels(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    models = {"lenet5, lr=0.001": [rng.normal(size=(5, 5, 1, 20)), rng.normal(size=(800, 10))],
              "mlp, lr=0.001": [rng.normal(size=(784, 30)), rng.normal(size=(30, 10))],
              "mlp, lr=1e-05": [rng.normal(size=(784, 30)), rng.normal(size=(30, 10))]}
    fig_titles = []
    real_save = figures._save

    def save(fig, path):
        fig_titles.extend((ax.get_title(), [t.get_text() for t in ax.get_legend().get_texts()])
                          for ax in fig.axes if ax.get_legend())
        return real_save(fig, path)

    figures._save, saved = save, None
    try:
        saved = figures.weight_distributions(tmp_path / "w.png", models, "t")
    finally:
        figures._save = real_save
    assert saved is not None and saved.exists()
    assert [title for title, _ in fig_titles] == ["layer 1: 5x5x1x20 weights", "layer 2: 800x10 weights",
                                                  "layer 1: 784x30 weights", "layer 2: 30x10 weights"]
    assert [len(labels) for _, labels in fig_titles] == [1, 1, 2, 2]  # no panel mixes two architectures


def test_unit_pruning_legend_names_the_kernel_that_ran_the_compacted_net():
    assert figures._sparse_label("unit", ["dense"]) == "compacted (dense, pruned units removed)"
    assert figures._sparse_label("unit", ["conv-csr-numba"]) == "compacted (conv-csr-numba, pruned units removed)"
    assert figures._sparse_label("weight", ["csr-numba"]) == "sparse (csr-numba)"


def test_speed_figures_keep_each_models_runs_apart(drawn):
    """Runs of two models are never joined into one curve (LeNet-5 at 15x and LeNet-300 at 4.8x made one falling
    'weight' line); one model keeps the plain labels and one panel per method."""
    rows = [{"model.name": name, "method": "weight", "k": k, "eval_speedup": speed * (1 + k / 50),
             "dense_eval_ms": 10.0, "sparse_eval_ms": 10.0 / (speed * (1 + k / 50)), "engine": "csr-numba"}
            for name, speed in (("lenet5", 15.0), ("lenet300", 4.8)) for k in (0.0, 50.0, 90.0)]
    figures.speedup_vs_k(Path("s.png"), pd.DataFrame(rows), "t")
    figures.eval_time_vs_k(Path("e.png"), pd.DataFrame(rows), "t")
    figures.speedup_vs_k(Path("one.png"), pd.DataFrame(rows[:3]), "t")
    speed, times, one = drawn
    curves = {line.get_label(): line.get_ydata() for line in speed.axes[0].get_lines() if "weight" in line.get_label()}
    assert set(curves) == {"lenet300, weight (sparse)", "lenet5, weight (sparse)"}
    assert all(list(y) == sorted(y) for y in curves.values())  # each rises with k
    assert [ax.get_title() for ax in times.axes] == ["lenet300, weight pruning", "lenet5, weight pruning"]
    assert [line.get_label() for line in one.axes[0].get_lines()][0] == "weight (sparse)"
