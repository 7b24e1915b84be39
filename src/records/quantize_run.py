"""A quantized prune run (``quantize=kmeans`` or ``linear``) on a net the numpy engine runs: after pruning and
retraining, every Dense and Conv2D kernel's kept weights are quantized and coded into the sparse file format version 3
(src/engine/compressed_model; Deep Compression quantizes all layers, the logits layer too; biases stay float32), the
network is evaluated as that file decodes, and the run logs what it measured on the quantized model. A quantized job
takes the retrained weights of a finished run that retrained the same pruning (its unquantized twin, or another
quantized run of it) instead of retraining again.

Sizes in bytes, accuracies 0..1.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

from src.cli.quantize_settings import DEFAULT_BITS, bits_by_layer
from src.engine.compressed_model import Compression, compress_network, describe
from src.engine.network import kernels_of, with_weights
from src.records.model_size import dense_file_bytes
from src.records.pruned_eval import Evaluator
from src.store.tracking import find_runs
from src.store.train_cache import PRUNED_ARTIFACT
from src.training.data import Splits
from src.training.keras_file import read_input_shape, read_weights

Weights = tuple[list[np.ndarray], list[np.ndarray | None]]
COMPRESSED_ARTIFACT = "model/compressed.npz"  # the quantized run's file (version 3), as python -m src.export writes it
WEIGHTS_HASH_TAG = "weights_hash"  # on a quantized run: the job hash of its unquantized twin (whose weights it has)
WEIGHTS_FROM_TAG = "weights_from"  # on a quantized run: the run whose retrained weights it quantized, or "retrained"


def compression(quantize: Any, names: list[str]) -> Compression:
    """The engine's settings for this job's ``quantize`` config on layers ``names``."""
    return Compression(method=quantize.method, bits=DEFAULT_BITS, layer_bits=bits_by_layer(quantize, names),
                       per_channel=bool(quantize.per_channel), index_bits=quantize.index_bits, coder=quantize.coder)


def twin_weights(client: MlflowClient, experiment_id: str, weights_hash: str, train_run_id: str
                 ) -> tuple[Weights, str] | None:
    """(retrained kernels and biases, run id) of a FINISHED prune run of train run ``train_run_id`` that retrained
    the pruning of ``weights_hash``: its unquantized twin (job_hash), else a quantized run of it (tag weights_hash),
    newest first, read from its ``model/pruned.keras``; None when no such run kept that file."""
    runs = [*find_runs(client, experiment_id, role="prune", job_hash=weights_hash)[::-1],
            *find_runs(client, experiment_id, role="prune", **{WEIGHTS_HASH_TAG: weights_hash})[::-1]]
    for run in runs:
        if run.info.status != "FINISHED" or run.data.tags.get("mlflow.parentRunId") != train_run_id:
            continue
        try:
            with tempfile.TemporaryDirectory() as tmp:
                return read_weights(client.download_artifacts(run.info.run_id, PRUNED_ARTIFACT, tmp))[:2], \
                    run.info.run_id
        except Exception:  # noqa: BLE001 - not kept (tracking.save_pruned) or unreadable: another run, or retrain
            continue
    return None


@dataclass(frozen=True)
class Quantized:
    """The quantized network (kernels, biases as its file decodes), its test logits, the file and the metrics."""

    weights: Weights
    test_logits: np.ndarray
    file_bytes: bytes
    metrics: dict[str, float]

    def write(self, folder: Path) -> Path:
        """The file, as ``folder/compressed.npz`` (the artifact COMPRESSED_ARTIFACT)."""
        path = folder / Path(COMPRESSED_ARTIFACT).name
        path.write_bytes(self.file_bytes)
        return path


def quantize_and_score(cfg: Any, model: Evaluator, pruned: Weights, prequant: dict[str, float], splits: Splits,
                       names: list[str]) -> Quantized:
    """Quantize and code the pruned weights as ``cfg.quantize`` says, and score the network the file decodes to with
    the run's evaluator. Metrics: test_accuracy, test_loss, val_accuracy (of the quantized model),
    prequant_test_accuracy, prequant_val_accuracy (``prequant``: the pruned model's scores), compressed_file_bytes,
    compression_ratio (the dense ``.keras`` file, dense_file_bytes, over the compressed file),
    compression_ratio_float32 (4 bytes per kernel weight of the dense model, Deep Compression's base, over the
    compressed file), bits_per_weight and bits_per_index (coded codes and relative indices per kept weight: the
    engine's describe)."""
    spec = compression(cfg.quantize, names)
    net = with_weights(model.net, *pruned)
    decoded, file_bytes = compress_network(net, read_input_shape(model.model_path), spec)
    weights = kernels_of(decoded)
    scores, logits = model.scores(weights, splits)
    kernels, biases = pruned
    size = len(file_bytes)
    described = describe(net, spec, file_bytes)
    metrics = {**scores, "prequant_test_accuracy": prequant["test_accuracy"],
               "prequant_val_accuracy": prequant["val_accuracy"], "compressed_file_bytes": size,
               "compression_ratio": dense_file_bytes(model.model_path, kernels, biases) / size,
               "compression_ratio_float32": described["ratio_float32"],
               "bits_per_weight": described["bits_per_weight"], "bits_per_index": described["bits_per_index"]}
    return Quantized(weights, logits, file_bytes, metrics)
