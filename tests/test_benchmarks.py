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
