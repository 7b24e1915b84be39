"""The size frontier's points, from MLflow ``Run`` objects already fetched: each prune run's file size (bytes) and
test error (%), labelled by its pruning method and quantization, and the dense model's point. Pure pandas.

A quantized run (``quantize.method`` linear or kmeans) counts its compressed file (``compressed_file_bytes``, file
version 3); any other prune run its sparse export (``sparse_file_bytes``, version 1 or 2). The dense model counts its
uncompressed ``.keras`` file (``dense_file_bytes``, logged by its prune runs: the size depends on the architecture
alone) at its train run's test error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.entities import Run

from src.report.aggregate import SEED
from src.report.table import k_percent, quantize_label, varying_settings

QUANTIZED_BYTES, SPARSE_BYTES, DENSE_BYTES = "compressed_file_bytes", "sparse_file_bytes", "dense_file_bytes"
# settings that split curves and dense points when they differ between the runs (lr: also between train runs)
CURVE_SETTINGS = ("model.name", "lr", "prune.schedule", "prune.scope")
POINT_COLUMNS = ["curve", "method", "k", SEED, "bytes", "error", "dense_bytes"]
DENSE_COLUMNS = ["model", SEED, "bytes", "error"]


def _curve_settings(runs: list[Run]) -> list[str]:
    varying = set(varying_settings(runs)) | ({"lr"} if len({r.data.params.get("lr") for r in runs}) > 1 else set())
    return [s for s in CURVE_SETTINGS if s in varying]


def _setting(name: str, value: str) -> str:
    return value if name == "model.name" else f"{name.removeprefix('prune.')}={value}"


def size_points(runs: list[Run]) -> pd.DataFrame:
    """One row per prune run that logged its file size: ``curve`` (method, quantization, and the CURVE_SETTINGS that
    differ between ``runs``), the pruning ``method``, ``k`` (percent), the training seed, ``bytes`` (module
    docstring), test ``error`` (%) and ``dense_bytes`` (the model's ``.keras`` bytes; NaN if not logged)."""
    extra = _curve_settings(runs)
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        label = quantize_label(params)
        size = metrics.get(QUANTIZED_BYTES if label != "float32" else SPARSE_BYTES)
        if size is None or "test_accuracy" not in metrics:
            continue
        method = params.get("prune.method", "?")
        rows.append({"curve": ", ".join([*(_setting(s, params.get(s, "")) for s in extra), method, label]),
                     "method": method, "k": k_percent(params), SEED: params.get(SEED, ""), "bytes": float(size),
                     "error": 100 * (1 - metrics["test_accuracy"]), "dense_bytes": metrics.get(DENSE_BYTES, np.nan)})
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def dense_points(runs: list[Run], train_runs: list[Run]) -> pd.DataFrame:
    """One row per train run behind ``runs`` whose prune runs logged ``dense_file_bytes``: ``model`` (the
    CURVE_SETTINGS model.name and lr where they differ, else "dense"), the seed, ``bytes`` (its uncompressed
    ``.keras``) and test ``error`` (%)."""
    extra = [s for s in _curve_settings(runs) if s in ("model.name", "lr")]
    dense = {}
    for run in runs:
        parent, size = run.data.tags.get("mlflow.parentRunId"), run.data.metrics.get(DENSE_BYTES)
        if parent and size is not None:
            dense[parent] = float(size)
    rows = [{"model": ", ".join(["dense", *(_setting(s, t.data.params.get(s, "")) for s in extra)]),
             SEED: t.data.params.get(SEED, ""), "bytes": dense[t.info.run_id],
             "error": 100 * (1 - t.data.metrics["test_accuracy"])}
            for t in train_runs if t.info.run_id in dense and "test_accuracy" in t.data.metrics]
    return pd.DataFrame(rows, columns=DENSE_COLUMNS)
