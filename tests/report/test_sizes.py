"""The size frontier: each prune run's file size and error (src/report/sizes), the figure, and the size columns of the
report table, on hand-made runs shaped like MLflow's (params as strings, metrics as floats)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from src.report import figures
from src.report.sizes import dense_points, size_points
from src.report.table import curve_name, markdown, quantize_label, report_table, table_metrics

DENSE_BYTES = {"lenet300": 1_084_694, "lenet5": 1_752_974}
BUDGET_BITS = {"lenet300": {"dense1": 6, "dense2": 6, "dense3": 6},
               "lenet5": {"conv1": 8, "conv2": 8, "dense1": 5, "dense2": 5}}


def fake_run(run_id: str, params: dict, metrics: dict, parent: str = "") -> SimpleNamespace:
    """What the report reads of an MLflow Run: info.run_id and data.params / metrics / tags."""
    tags = {"mlflow.parentRunId": parent} if parent else {}
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id),
                           data=SimpleNamespace(params={k: str(v) for k, v in params.items()}, metrics=metrics,
                                                tags=tags))


def train_run(model: str, seed: int, accuracy: float) -> SimpleNamespace:
    return fake_run(f"train-{model}-{seed}", {"model.name": model, "lr": 0.001, "train.seed": seed},
                    {"test_accuracy": accuracy})


def prune_run(model: str, seed: int, accuracy: float, size: float, bits: int | None = None, k: float = 90.0,
              method: str = "kmeans") -> SimpleNamespace:
    """A prune run at ``k``: quantized by ``method`` at ``bits`` (None: the budget's bits) or float32 (method none),
    its params as src/records/prune_run.prune_params logs them."""
    params = {"model.name": model, "lr": 0.001, "train.seed": seed, "prune.method": "weight", "prune.k": k,
              "quantize.method": method}
    if method != "none":
        used = {n: bits or b for n, b in BUDGET_BITS[model].items()}
        params |= {"quantize.bits": bits, "quantize.layer_bits": "{}", "quantize.bits_used": json.dumps(used)}
    metrics = {"test_accuracy": accuracy, "dense_file_bytes": DENSE_BYTES[model], "sparse_file_bytes": size * 4}
    if method != "none":
        metrics |= {"compressed_file_bytes": size, "compression_ratio": DENSE_BYTES[model] / size,
                    "prequant_test_accuracy": accuracy + 0.001}
    return fake_run(f"{model}-{method}-{bits}-{k}-{seed}", params, metrics, parent=f"train-{model}-{seed}")


def deep_compression_runs() -> tuple[list, list]:
    """LeNet-300-100 and LeNet-5, 3 seeds: float32 at k 90 and 95, kmeans at the budget's bits and at 4 bits."""
    runs, trains = [], []
    for model, base in (("lenet300", 0.983), ("lenet5", 0.992)):
        for seed in range(3):
            trains.append(train_run(model, seed, base + 0.001 * seed))
            runs += [prune_run(model, seed, base - 0.001 * seed, 27_000 + 100 * seed),
                     prune_run(model, seed, base - 0.003, 20_000 + 100 * seed, bits=4),
                     prune_run(model, seed, base, 110_000, method="none", k=90),
                     prune_run(model, seed, base - 0.002, 60_000, method="none", k=95)]
    return runs, trains


def test_quantize_label_names_the_method_and_bits_used_in_layer_order():
    assert quantize_label({"quantize.method": "none"}) == quantize_label({}) == "float32"
    assert quantize_label(prune_run("lenet300", 0, 0.98, 1).data.params) == "kmeans 6 bits"
    assert quantize_label(prune_run("lenet5", 0, 0.99, 1).data.params) == "kmeans 8/5 bits"
    assert quantize_label(prune_run("lenet5", 0, 0.99, 1, bits=4, method="linear").data.params) == "linear 4 bits"
    assert quantize_label({"quantize.method": "kmeans",
                           "quantize.bits_used": '{"conv1": 7, "conv2": 3, "dense1": 7}'}) == "kmeans 7/3 bits"
    assert quantize_label({"quantize.method": "linear", "quantize.bits_used": '{"dense1": 4}', "quantize.coder": "lzma",
                           "quantize.per_channel": "True"}) == "linear 4 bits per channel, lzma"


def test_size_points_count_the_compressed_file_when_quantized_else_the_sparse_export():
    runs, _ = deep_compression_runs()
    unsized = prune_run("lenet5", 0, 0.99, 1, method="none")
    unsized.data.metrics = {"test_accuracy": 0.99}
    runs.append(unsized)
    points = size_points(runs)
    assert len(points) == len(runs) - 1  # the run without a size is left out
    quantized = points[points["curve"] == "lenet300, weight, kmeans 6 bits"]
    assert sorted(quantized["bytes"]) == [27_000, 27_100, 27_200]
    assert sorted(quantized["error"]) == pytest.approx([1.7, 1.8, 1.9])
    floats = points[points["curve"] == "lenet5, weight, float32"]
    assert sorted(set(floats["bytes"])) == [240_000, 440_000]  # sparse_file_bytes
    assert set(points["curve"]) == {f"{m}, weight, {q}" for m, q in (
        ("lenet300", "kmeans 6 bits"), ("lenet300", "kmeans 4 bits"), ("lenet300", "float32"),
        ("lenet5", "kmeans 8/5 bits"), ("lenet5", "kmeans 4 bits"), ("lenet5", "float32"))}
    assert set(points["dense_bytes"]) == set(DENSE_BYTES.values())


def test_one_model_needs_no_model_name_in_its_curves():
    runs, trains = deep_compression_runs()
    lenet5 = [r for r in runs if r.data.params["model.name"] == "lenet5"]
    assert set(size_points(lenet5)["curve"]) == {"weight, kmeans 8/5 bits", "weight, kmeans 4 bits", "weight, float32"}
    assert set(dense_points(lenet5, trains)["model"]) == {"dense"}


def test_dense_points_are_the_train_runs_at_their_keras_file_size():
    runs, trains = deep_compression_runs()
    dense = dense_points(runs, trains)
    assert len(dense) == 6
    lenet5 = dense[dense["model"] == "dense, lenet5"]
    assert set(lenet5["bytes"]) == {DENSE_BYTES["lenet5"]}
    assert sorted(lenet5["error"]) == pytest.approx([0.6, 0.7, 0.8])


@pytest.fixture
def drawn(monkeypatch):
    """The figure each call draws, kept open instead of saved."""
    kept = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: kept.append(fig) or path)
    yield kept
    plt.close("all")


def test_size_frontier_draws_a_curve_per_setting_over_seeds_and_the_dense_models(drawn):
    runs, trains = deep_compression_runs()
    assert figures.size_frontier(Path("s.png"), size_points(runs), dense_points(runs, trains), "t") == Path("s.png")
    ax = drawn[0].axes[0]
    assert ax.get_xscale() == "log" and "seeds" in ax.get_ylabel()
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # errorbar: (line, caps, bars)
    assert len(lines) == 6 + 2  # six curves, two dense models
    budget = lines["lenet300, weight, kmeans 6 bits"]
    assert list(budget.get_xdata()) == pytest.approx([27_100])  # the mean over three seeds
    assert list(budget.get_ydata()) == pytest.approx([1.8])
    floats = lines["lenet5, weight, float32"]
    assert list(floats.get_xdata()) == pytest.approx([240_000, 440_000])  # k 95 and 90, smallest file first
    assert list(floats.get_ydata()) == pytest.approx([1.0, 0.8])
    dense = lines["dense, lenet5 (.keras, 1,752,974 B)"]
    assert list(dense.get_xdata()) == [DENSE_BYTES["lenet5"]] and list(dense.get_ydata()) == pytest.approx([0.7])
    ratios = {t.get_text() for t in ax.texts}
    assert f"{DENSE_BYTES['lenet300'] / 27_100:.0f}x" in ratios  # 40x
    assert "quantized: the compressed file, float32: the sparse export" in ax.get_xlabel()


def test_size_frontier_names_only_the_kinds_of_file_it_draws(drawn):
    runs, trains = deep_compression_runs()
    points = size_points(runs)
    figures.size_frontier(Path("q.png"), points[~points["curve"].str.endswith("float32")], dense_points(runs, trains),
                          "t")
    assert "float32" not in drawn[0].axes[0].get_xlabel() and "quantized" in drawn[0].axes[0].get_xlabel()


def test_size_frontier_is_written_only_when_runs_have_sizes(tmp_path):
    runs, trains = deep_compression_runs()
    path = figures.size_frontier(tmp_path / "s.png", size_points(runs), dense_points(runs, trains), "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unsized = [fake_run("a", {"prune.method": "weight"}, {"test_accuracy": 0.9})]
    assert figures.size_frontier(tmp_path / "none.png", size_points(unsized), dense_points(unsized, []), "t") is None
    assert not (tmp_path / "none.png").exists()


def test_report_table_gains_the_size_columns_when_runs_have_them():
    runs, _ = deep_compression_runs()
    unquantized = [r for r in runs if r.data.params["quantize.method"] == "none"]
    assert "compressed_file_bytes" not in table_metrics(unquantized)
    assert {"compressed_file_bytes", "compression_ratio", "prequant_test_accuracy"} <= set(table_metrics(runs))
    table = report_table(runs)
    quantized = table[table["compressed_file_bytes"].notna()]
    assert len(quantized) == 12 and np.isnan(table["compression_ratio"]).sum() == 12
    text = markdown(quantized, "t")
    assert "| prequant_test_accuracy | compressed_file_bytes | compression_ratio |" in text
    assert "| 27,000 | 40.2 |" in text  # LeNet-300-100 at 6 bits, seed 0: 1,084,694 B / 27,000 B


def test_the_sweep_runs_curves_keep_each_quantization_apart():
    """The sweep run's vs_k curves (src/report/table.curve_name) name the quantization, so runs at one k with other
    bits are not averaged into one point."""
    assert curve_name(prune_run("lenet5", 0, 0.99, 1, method="none").data.params) == "weight-lr0.001"
    assert curve_name(prune_run("lenet5", 0, 0.99, 1).data.params) == "weight-lr0.001-kmeans8-5"
    assert curve_name(prune_run("lenet5", 0, 0.99, 1, bits=4).data.params) == "weight-lr0.001-kmeans4"
