"""Offline MNIST loading, subsets, validation split, and clear errors for bad files."""

import numpy as np
import pytest

from src.training.data import SHIPPED_MNIST, DataError, file_sha256, load_mnist, make_splits

SHIPPED_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"


def test_shipped_copy_is_the_documented_file_and_loads_offline():
    assert file_sha256(SHIPPED_MNIST) == SHIPPED_SHA256
    (x_train, y_train, x_test, y_test), fingerprint = load_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert list(y_train[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4] and list(y_test[:5]) == [7, 2, 1, 0, 4]
    assert fingerprint == SHIPPED_SHA256


def test_subsets_take_the_first_examples_and_hold_out_validation():
    arrays, fp = load_mnist()
    s = make_splits(arrays, fp, train_size=2000, test_size=500, val_fraction=0.1)
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (1800, 200, 500)
    np.testing.assert_array_equal(s.y_train[:10], arrays[1][:10])
    np.testing.assert_array_equal(s.y_val, arrays[1][1800:2000])
    full = make_splits(arrays, fp, None, None, 0.0)
    assert (len(full.x_train), len(full.x_val), len(full.x_test)) == (60000, 0, 10000)


def test_other_file_in_same_layout(tmp_path):
    path = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y_train=np.arange(50) % 10,
             x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.arange(5))
    (x_train, *_), fp = load_mnist("file", str(path))
    assert x_train.shape == (50, 28, 28) and fp == file_sha256(path)


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(DataError, match=r"^data.path=.*does not exist"):
        load_mnist("file", str(tmp_path / "nope.npz"))


def test_corrupt_file_names_the_setting(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=r"^data.path=.*not a readable"):
        load_mnist("file", str(path))


def test_wrongly_shaped_file_names_the_setting(tmp_path):
    path = tmp_path / "shape.npz"
    np.savez(path, x_train=np.zeros((10, 784), np.uint8), y_train=np.zeros(10), x_test=np.zeros((2, 28, 28)),
             y_test=np.zeros(2))
    with pytest.raises(DataError, match=r"^data.path=.*expected images"):
        load_mnist("file", str(path))
    np.savez(path, a=np.zeros(3))
    with pytest.raises(DataError, match=r"^data.path=.*lacks arrays"):
        load_mnist("file", str(path))
