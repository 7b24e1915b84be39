"""src/records/model_size: the sizes a prune run logs are the bytes of real files, measured only where they vary."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from src.engine.sparse_model import to_bytes
from src.pruning import masks as M
from src.records import model_size
from src.training.keras_file import read_dense_weights, write_like
from src.training.model import build_mlp, compile_model


@pytest.fixture(scope="module", params=[False, True], ids=["no-bias", "bias"])
def template(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("size") / "model.keras"
    compile_model(build_mlp([28, 28], [60, 30], 10, request.param), "adam", 1e-3).save(path)
    return path


@pytest.mark.parametrize("method, k", [("weight", 0), ("weight", 90), ("unit", 50)])
def test_dense_size_is_the_uncompressed_file_whatever_the_values(template, tmp_path, method, k):
    """Cached per architecture: the size of this very network's uncompressed file, which the values do not change."""
    kernels, biases = read_dense_weights(template)
    pruned = M.apply_masks(kernels, biases, M.layer_masks(kernels, method, k), method)
    rng = np.random.default_rng(k)
    noise = ([rng.normal(size=w.shape).astype(np.float32) for w in kernels],
             [None if b is None else rng.normal(size=b.shape).astype(np.float32) for b in biases])
    written = write_like(template, tmp_path / "pruned.keras", *pruned, compress=False).stat().st_size
    assert model_size.dense_file_bytes(template, *pruned) == written
    assert model_size.dense_file_bytes(template, *noise) == written == len(model_size.dense_file(template, *noise))


def test_a_run_logs_gzip_only_when_asked_and_the_sparse_file_it_would_export(template):
    kernels, biases = read_dense_weights(template)
    pruned = M.apply_masks(kernels, biases, M.layer_masks(kernels, "weight", 80), "weight")
    lean = model_size.run_sizes(template, *pruned)
    assert set(lean) == {"dense_file_bytes", "sparse_file_bytes"}
    assert lean["sparse_file_bytes"] == len(to_bytes(*pruned)) < lean["dense_file_bytes"]
    full = model_size.run_sizes(template, *pruned, gzip=True)
    assert full["gzip_file_bytes"] == len(zlib.compress(model_size.dense_file(template, *pruned), 6))
    assert full == model_size.file_sizes(template, *pruned) == {**lean, "gzip_file_bytes": full["gzip_file_bytes"]}
