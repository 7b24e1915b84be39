"""The size frontier's points, from MLflow ``Run`` objects already fetched: each prune run's file size (bytes) and
test error (%), labelled by its pruning method and quantization, and the dense model's point. Pure pandas.

A quantized run (``quantize.method`` linear or kmeans) counts its compressed file (``compressed_file_bytes``, file
version 3); any other prune run its sparse export (``sparse_file_bytes``, version 1 or 2). The dense model counts its
uncompressed ``.keras`` file (``dense_file_bytes``, logged by its prune runs: the size depends on the architecture
alone) at its train run's test error.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from mlflow.entities import Run

from src.report.aggregate import SEED
from src.report.table import k_percent, varying_settings

QUANTIZED_BYTES, SPARSE_BYTES, DENSE_BYTES = "compressed_file_bytes", "sparse_file_bytes", "dense_file_bytes"
# settings that split curves and dense points when they differ between the runs (lr: also between train runs)
CURVE_SETTINGS = ("model.name", "lr", "prune.schedule", "prune.scope")
POINT_COLUMNS = ["curve", "method", "k", SEED, "bytes", "error", "dense_bytes"]
DENSE_COLUMNS = ["model", SEED, "bytes", "error"]


def _bits(value: str | None) -> list[int]:
    """The bit widths a ``quantize.*bits`` param holds: one number, or a per-layer JSON / YAML-like mapping."""
    if value in (None, "", "None", "null"):
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = {k: v for k, v in (item.split(":") for item in value.strip("{}").split(",") if ":" in item)}
    values = parsed.values() if isinstance(parsed, dict) else [parsed]
    return [int(float(v)) for v in values]


def layer_bits(params: dict[str, str]) -> list[int]:
    """The run's bits per weight, in layer order without repeats: ``quantize.bits`` when it is set (one width, or the
    per-layer widths the run logged there), else ``quantize.layer_bits``, else the budget's ``quantize.budget_bits``
    (each as one param or flattened ``<name>.<layer>`` params). Empty when none is logged."""
    for name in ("quantize.bits", "quantize.layer_bits", "quantize.budget_bits"):
        widths = _bits(params.get(name)) or [int(float(v)) for k, v in params.items()
                                              if k.startswith(name + ".") and v not in ("None", "null", "")]
        if widths:
            return list(dict.fromkeys(widths))
    return []


def quantize_label(params: dict[str, str]) -> str:
    """``kmeans 6 bits``, ``kmeans 8/5 bits`` (several widths by layer, in layer order), or ``float32`` (not
    quantized)."""
    method = params.get("quantize.method", "none")
    if method in ("none", "None", ""):
        return "float32"
    widths = layer_bits(params)
    return f"{method} {'/'.join(str(b) for b in widths)} bits" if widths else method


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
