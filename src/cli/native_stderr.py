"""Silencing what native code writes to stderr while Keras is imported, so a CLI check still ends in one line."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence what native code writes to stderr (TensorFlow's start-up log lines, which ``TF_CPP_MIN_LOG_LEVEL``
    does not reach) while a check imports Keras and loads a model, so that a bad setting still ends with exactly
    one ``error:`` line. Python's own ``sys.stderr`` writes are kept."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
