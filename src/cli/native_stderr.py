"""Silencing what native code writes to stderr while Keras is imported, so a CLI check still ends in one line."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType


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


QUIET_PACKAGES = ("tensorflow", "keras")  # importing either loads TensorFlow's native libraries


class _QuietLoader(importlib.abc.Loader):
    """The real loader of a quiet package, run with fd 2 silenced (:func:`native_stderr_silenced`)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with native_stderr_silenced():
            self.loader.exec_module(module)
            try:  # the device probe's lines too (no GPU here: a failed cuInit); Keras may run on another backend
                import tensorflow as tf
            except ImportError:
                return
            tf.config.list_physical_devices()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds the first of QUIET_PACKAGES imported and gives it a :class:`_QuietLoader`, then steps aside."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in QUIET_PACKAGES:
            return None
        sys.meta_path.remove(self)  # once: the whole import, nested ones included, runs under the first
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_import() -> None:
    """Import TensorFlow (through Keras or directly), whenever a job first does, with native stderr silenced: its
    start-up lines (oneDNN, CUDA stubs, CPU features: ~7 lines ``TF_CPP_MIN_LOG_LEVEL`` does not reach) go nowhere.
    A failed import still raises as usual. For entry points; does nothing if TensorFlow is already imported."""
    if not any(name in sys.modules for name in QUIET_PACKAGES):
        sys.meta_path.insert(0, _QuietImport())
