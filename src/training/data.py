"""Data loading: the shipped offline MNIST copy, any image data set in the same layout, or Keras's downloader.

Arrays come back as in Keras's layout: images (N, H, W) or (N, H, W, C) with pixels 0..255 (MNIST: uint8
(N, 28, 28)), integer labels (N,) in 0..classes-1. Preprocessing (scaling) lives inside the model, so saved
models take raw pixels.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIPPED_MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist.npz"
KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(ValueError):
    """The data file is missing, unreadable or not in MNIST's layout; the message says the fix."""


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str  # sha256 of the source file ("keras" for the downloader): part of the cache key


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
    if not path.is_file():
        raise DataError(f"data.path={path} does not exist: point data.path at an MNIST .npz file "
                        "or leave it null for the shipped copy")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in KEYS if k not in f.files]
            if missing:
                raise DataError(f"data.path={path} lacks arrays {missing}: expected Keras's mnist.npz "
                                f"layout with {', '.join(KEYS)}")
            arrays = tuple(f[k] for k in KEYS)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"data.path={path} is not a readable .npz file ({type(e).__name__}): "
                        "re-copy the file or point data.path at a valid one") from None
    _check_layout(path, *arrays)
    return arrays


def _check_layout(path: Path, x_train, y_train, x_test, y_test) -> None:
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim not in (3, 4) or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise DataError(f"data.path={path} has x_{name} {x.shape} / y_{name} {y.shape}: expected "
                            "images (N, H, W) or (N, H, W, C) and labels (N,)")
        if not np.issubdtype(y.dtype, np.integer) and not np.array_equal(y, np.round(y)) or y.min() < 0:
            raise DataError(f"data.path={path} has y_{name} labels that are not class numbers 0, 1, 2, ...")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"data.path={path}: x_train images are {x_train.shape[1:]}, x_test {x_test.shape[1:]}: "
                        "both splits need the same image shape")


def n_classes(y_train: np.ndarray, y_test: np.ndarray) -> int:
    """Number of classes: the largest label + 1, over both splits."""
    return int(max(y_train.max(), y_test.max())) + 1


def load_mnist(source: str = "file", path: str | None = None) -> tuple[tuple[np.ndarray, ...], str]:
    """Return ((x_train, y_train, x_test, y_test), fingerprint) from the chosen source."""
    if source == "keras":
        import keras

        try:
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        except Exception as e:  # noqa: BLE001 - no network, a proxy, a failed hash check: all mean "not downloaded"
            reason = " ".join(str(e).split())[:200]
            raise DataError(f"data.source=keras could not get MNIST from Keras's downloader ({type(e).__name__}: "
                            f"{reason}): check the network, or use data.source=file (the copy shipped in "
                            "data/mnist.npz, the default)") from None
        return (x_train, y_train, x_test, y_test), "keras"
    file = Path(path).expanduser() if path else SHIPPED_MNIST
    stat = file.stat() if file.is_file() else None
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size) if stat else None
    if key not in _LOADED:  # the jobs of a multirun share one process: read and hash the file once
        _LOADED.clear()
        _LOADED[key] = (_read_npz(file), file_sha256(file))
    return _LOADED[key]


_LOADED: dict[tuple[str, int, int] | None, tuple[tuple[np.ndarray, ...], str]] = {}


def as_inputs(pixels: np.ndarray) -> np.ndarray:
    """Raw images (N, 28, 28), 0..255 -> float32 (N, 784) in 0..1: the model's own Flatten and Rescaling
    (multiply by float32(1/255), as keras.layers.Rescaling does), for numpy forward passes."""
    return np.asarray(pixels).reshape(len(pixels), -1).astype(np.float32) * np.float32(1.0 / 255.0)


def split_sizes(n_train: int, val_fraction: float) -> tuple[int, int]:
    """(examples trained on, examples held out for validation) of ``n_train`` training examples: the last
    ``val_fraction`` of them, at least one when val_fraction > 0."""
    n_val = max(1, round(val_fraction * n_train)) if val_fraction > 0 else 0
    return n_train - n_val, n_val


def make_splits(
    arrays: tuple[np.ndarray, ...], fingerprint: str, train_size: int | None, test_size: int | None,
    val_fraction: float,
) -> Splits:
    """Take the first ``train_size`` / ``test_size`` examples; hold out the last ``val_fraction``
    of the training examples for validation (at least one when val_fraction > 0)."""
    x_train, y_train, x_test, y_test = arrays
    x_train, y_train = x_train[:train_size], y_train[:train_size]
    x_test, y_test = x_test[:test_size], y_test[:test_size]
    n_fit, _ = split_sizes(len(x_train), val_fraction)
    return Splits(
        x_train[:n_fit], y_train[:n_fit], x_train[n_fit:], y_train[n_fit:], x_test, y_test, fingerprint
    )
