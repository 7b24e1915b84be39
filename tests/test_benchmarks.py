"""The benchmark scripts start: their imports follow the modules they measure (a moved name breaks them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PROJECT


@pytest.mark.parametrize("script", ["sparse_bench.py", "harness_bench.py", "deploy_bench.py", "lenet_bench.py",
                                    "structured_bench.py", "compression_bench.py"])
def test_benchmark_script_starts(script):
    out = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / script), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout


def test_sparse_bench_batch_sweep_reports_the_byte_bound_and_the_batch_curve(tmp_path):
    """Three batch sizes on one net: a row each with its byte bound (4 B per dense weight over 6 B per kept one:
    10 / 1.5 = 6.7x at k=90 of the hidden layers), its share of it and of the largest batch's speedup (100% there),
    and the speedup-vs-batch plot."""
    png = tmp_path / "batches.png"
    args = ["--ks", "90", "--methods", "weight", "--batches", "16,64,256", "--repeats", "1", "--input", "random",
            "--plot", str(png)]
    out = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "sparse_bench.py"), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| weight |")]
    assert [r[2].strip() for r in rows] == ["16", "64", "256"]
    bounds = {float(r[7].strip().rstrip("x")) for r in rows}
    assert len(bounds) == 1 and 6.0 < bounds.pop() < 6.7  # the unpruned logits layer keeps the bound under 6.7x
    assert rows[-1][9].strip() == "100%" and all(r[8].strip().endswith("%") for r in rows)
    assert png.stat().st_size > 10_000
