"""The study's findings (src/report/findings) and the aggregation over seeds (src/report/aggregate) on hand-made tables
with known answers, and the banded accuracy plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from src.report import figures as report_plots
from src.report.aggregate import has_seeds, over_seeds
from src.report.findings import (
    FAILS,
    HOLDS,
    PARTLY,
    area_under_curve,
    hold_k,
    markdown,
    spearman,
    study_findings,
)

GRID = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99)
LOW, HIGH = 1e-5, 1e-3


def _runs(curve, lrs=(LOW, HIGH), methods=("weight", "unit"), seeds=("0", "1", "2"), speedup=None) -> pd.DataFrame:
    """One row per (lr, method, seed, k): test_accuracy = curve(lr, method, k, seed)."""
    return pd.DataFrame([{"lr": lr, "method": m, "k": float(k), "seed": s, "test_accuracy": curve(lr, m, k, s),
                          "eval_speedup": speedup(m, k) if speedup else np.nan}
                         for lr in lrs for m in methods for s in seeds for k in GRID])


def _models(kurtosis, accuracy=lambda lr, s: 0.98, lrs=(LOW, HIGH), seeds=("0", "1", "2")) -> pd.DataFrame:
    return pd.DataFrame([{"lr": lr, "seed": s, "test_accuracy": accuracy(lr, s),
                          **{f"layer{i}/excess_kurtosis": kurtosis(lr, i) for i in range(1, 6)}}
                         for lr in lrs for s in seeds])


def study_like(lr, method, k, seed):
    """Drops at k > 50 (lr 1e-5) or k > 90 (lr 1e-3) for weight pruning, 20 points earlier for unit; +0.3
    points at k=25 for every seed (a gain larger than its spread)."""
    start = (50 if lr == LOW else 90) - (20 if method == "unit" else 0)
    jitter = 0.0002 * int(seed)
    return 0.98 + jitter + (0.003 if k == 25 else 0) - (0.01 * (k - start) if k > start else 0)


def by_key(findings):
    return {f.key: f for f in findings}


def test_the_study_as_published_holds_everywhere():
    found = by_key(study_findings(_runs(study_like, speedup=lambda m, k: 1 + k / 10),
                                  _models(lambda lr, i: -1.1 if lr == LOW else 0.3)))
    assert {k: f.verdict for k, f in found.items()} == dict.fromkeys("abcdefg", HOLDS) | {"g": PARTLY}
    assert "lr 1e-05: 98.00 ± 0.00% (n=3)" in found["a"].measured
    assert "weight: lr 1e-05 k=50 ± 0 (n=3), lr 0.001 k=90 ± 0 (n=3)" in found["c"].measured
    assert "+0.30 points at k=25" in found["e"].measured and "n=3" in found["e"].measured
    assert "lr 1e-05: k=50 ± 0 (n=3); lr 0.001: k=90 ± 0 (n=3)" in found["g"].measured  # 70 is met at 1e-3 only


def test_findings_that_do_not_hold():
    """Unit pruning lasting longer than weight pruning, lr 1e-5 lasting longer, every k losing accuracy, time
    flat, both models Gaussian and undertrained."""
    def reversed_study(lr, method, k, seed):
        start = (60 if lr == LOW else 40) + (20 if method == "unit" else 0)
        return 0.98 - 0.001 * (k > 0) - (0.01 * (k - start) if k > start else 0)

    found = by_key(study_findings(_runs(reversed_study, speedup=lambda m, k: 1.0),
                                  _models(lambda lr, i: 0.2, accuracy=lambda lr, s: 0.95)))
    assert {k: f.verdict for k, f in found.items()} == dict.fromkeys("abcdefg", FAILS)


def test_a_gain_within_the_spread_over_seeds_holds_only_partly():
    def noisy_gain(lr, method, k, seed):
        return 0.98 + (0.002 + {"0": 0.004, "1": -0.004, "2": 0.0}[seed] if k == 25 else 0) - 0.01 * (k > 50)

    finding = by_key(study_findings(_runs(noisy_gain), _models(lambda lr, i: 0.0)))["e"]
    assert finding.verdict == PARTLY
    assert "+0.20 points at k=25 (std 0.40, n=3)" in finding.measured


def test_partly_when_only_some_layers_or_methods_agree():
    kurtosis = {LOW: [-1.1, -1.0, -0.3, -0.9, 0.0], HIGH: [0.2, 0.1, 0.4, 0.0, 0.0]}  # layer 3 not flat at 1e-5
    def one_method(lr, method, k, seed):  # weight: lr 1e-5 drops first; unit: both at the same k
        start = 70 if method == "unit" else (50 if lr == LOW else 90)
        return 0.98 - (0.02 if k > start else 0)

    found = by_key(study_findings(_runs(one_method), _models(lambda lr, i: kurtosis[lr][i - 1])))
    assert found["b"].verdict == PARTLY and "L3 -0.30 ± 0.00 (n=3)" in found["b"].measured
    assert found["c"].verdict == PARTLY


def test_missing_inputs_are_said_in_one_line_not_judged():
    one_lr = _runs(study_like, lrs=(HIGH,), methods=("weight",), seeds=("0",))
    found = by_key(study_findings(one_lr, _models(lambda lr, i: 0.0, lrs=(HIGH,), seeds=("0",))))
    assert found["b"].verdict == "not measured: needs two learning rates (this sweep has one)"
    assert found["c"].verdict.startswith("not measured: needs two learning rates")
    assert found["d"].verdict == "not measured: needs both prune=weight and prune=unit runs"
    assert found["f"].verdict == "not measured: no timings in this sweep (eval.timing=off)"
    assert found["a"].verdict == HOLDS and "(n=1)" in found["a"].measured
    assert found["e"].verdict == PARTLY  # a gain with one seed: no spread to compare it with
    text = markdown(list(found.values()))
    assert text.startswith("## Findings") and text.count("**") == 2 * 7


def test_speedup_with_two_k_values_is_not_judged():
    """Two k values per method: no rank correlation to judge (it was NaN, counted as "does not hold")."""
    runs = _runs(study_like, speedup=lambda m, k: 1 + k / 10)
    found = by_key(study_findings(runs[runs["k"].isin([0.0, 50.0])], _models(lambda lr, i: 0.3)))
    assert found["f"].verdict.startswith("not measured: needs 3 or more k values")
    assert "weight: k=0 1x, k=50 6x (rho needs 3+ k values)" in found["f"].measured


def test_several_models_are_not_taken_for_seeds_of_one():
    """Runs of two models: every finding says it reads one model's runs, and how to report one."""
    runs = pd.concat([_runs(study_like).assign(model="lenet5"), _runs(study_like).assign(model="resnet20")])
    models = pd.concat([_models(lambda lr, i: 0.3).assign(model=m) for m in ("lenet5", "resnet20")])
    found = study_findings(runs, models)
    assert len(found) == 7 and all(f.measured == "" for f in found)
    assert all(f.verdict.startswith("not measured: this report holds runs of several models (lenet5, resnet20)")
               and "params.`model.name` = 'lenet5'" in f.verdict for f in found)
    one = by_key(study_findings(runs[runs["model"] == "lenet5"], models[models["model"] == "lenet5"]))
    assert one["a"].verdict == HOLDS and "(n=3)" in one["a"].measured  # one model: its three seeds


def test_reference_falls_back_to_the_trained_model_without_k0_runs():
    runs = _runs(study_like, seeds=("0",))
    runs = runs[runs["k"] > 0]
    found = by_key(study_findings(runs, _models(lambda lr, i: 0.0, seeds=("0",))))
    assert "lr 1e-05 k=50" in found["c"].measured and "lr 0.001 k=90" in found["c"].measured


def test_math_helpers():
    curve = pd.DataFrame({"k": [0, 50, 90, 99], "test_accuracy": [0.98, 0.975, 0.96, 0.97]})
    assert hold_k(curve, 0.98, 1.0) == 50  # 90 drops 2 points; 99 recovering does not count
    assert hold_k(curve, 0.98, 0.4) == 0
    assert area_under_curve(pd.DataFrame({"k": [0, 50, 100], "test_accuracy": [1.0, 1.0, 0.0]})) == pytest.approx(75)
    assert spearman(np.array([0, 1, 2, 3]), np.array([1, 2, 4, 8])) == pytest.approx(1.0)
    assert spearman(np.array([0, 1, 2]), np.array([3, 2, 1])) == pytest.approx(-1.0)


def test_over_seeds_gives_mean_std_and_n_per_setting():
    table = pd.DataFrame({"lr": [1e-3] * 4, "method": ["weight"] * 4, "k": [0.0, 0.0, 50.0, 50.0],
                          "train.seed": [0, 1, 0, 1], "test_accuracy": [0.90, 0.92, 0.80, 0.86],
                          "engine": ["a", "b", "a", "a"], "run_id": list("wxyz")})
    assert has_seeds(table) and not has_seeds(table[table["train.seed"] == 0])
    out = over_seeds(table, ["test_accuracy"])
    assert list(out.columns) == ["lr", "method", "k", "test_accuracy_mean", "test_accuracy_std", "engine", "n_seeds"]
    assert out["test_accuracy_mean"].tolist() == pytest.approx([0.91, 0.83])
    expected_std = [np.std([0.90, 0.92], ddof=1), np.std([0.8, 0.86], ddof=1)]
    assert out["test_accuracy_std"].tolist() == pytest.approx(expected_std)
    assert out["n_seeds"].tolist() == [2, 2] and out["engine"].tolist() == ["a,b", "a"]


@pytest.mark.parametrize("seeds, bands", [((0, 1), 2), ((0,), 0)])
def test_accuracy_plot_draws_a_band_only_with_several_seeds(tmp_path, monkeypatch, seeds, bands):
    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig) or path)
    table = pd.DataFrame([{"lr": 1e-3, "method": m, "k": float(k), "train.seed": s,
                           "test_accuracy": 0.9 - k / 1000 + s / 100}
                          for m in ("weight", "unit") for s in seeds for k in (0, 50, 90)])
    report_plots.accuracy_vs_k(tmp_path / "a.png", table, "t", ["train.seed"] if len(seeds) > 1 else [])
    ax = figures[0].axes[0]
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == bands
    assert len([line for line in ax.get_lines() if line.get_label().startswith(("weight", "unit"))]) == 2
