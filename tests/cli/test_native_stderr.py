"""TensorFlow's start-up lines (written by native code, past TF_CPP_MIN_LOG_LEVEL) are kept out of a job's output."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT

SCRIPT = """
import sys
from src.cli.native_stderr import quiet_tensorflow_import, _QuietImport
{install}
import keras
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
print("params", model.count_params())
print("finder left", any(isinstance(f, _QuietImport) for f in sys.meta_path))
print("python's stderr still works", file=sys.stderr)
"""


def _run(install: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(install=install)], cwd=PROJECT, capture_output=True,
                          text=True, timeout=300, env={"PATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_keras_imports_quietly_once_the_hook_is_installed():
    quiet = _run("quiet_tensorflow_import()")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "params 10" in quiet.stdout and "finder left False" in quiet.stdout  # Keras works; the hook steps aside
    assert quiet.stderr.strip().splitlines() == ["python's stderr still works"], quiet.stderr


def test_without_the_hook_tensorflow_prints_its_start_up_lines():
    """What the hook is for: if TensorFlow stops printing these, the hook can go."""
    loud = _run("")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert len(loud.stderr.strip().splitlines()) > 1, loud.stderr
