"""The job's [prune] line says what each kind of run made smaller, with the sweep's progress note last."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from src.cli.config import register_configs
from src.records.prune_run import prune_line
from tests.conftest import PROJECT

BASE = {"test_accuracy": 0.9, "sparsity": 0.9, "dense_eval_ms": 10.0, "sparse_eval_ms": 2.0, "eval_speedup": 5.0,
        "engine": "csr-numba"}


def _cfg(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_a_structural_run_names_its_compact_model_and_a_quantized_one_its_bits():
    plain = prune_line(_cfg([]), BASE, "abc", 1.5, " (1/2, ETA 2 s)")
    assert plain.startswith("[prune] weight k=0 lr=0.001: test_accuracy=0.9000 sparsity=0.900 dense 10.0 ms vs sparse")
    assert plain.endswith("; run abc; in 1.5 s (1/2, ETA 2 s)") and "compact" not in plain and "bits" not in plain
    compact = prune_line(_cfg(["prune=unit"]), {**BASE, "params_kept": 0.26, "keras_eval_speedup": 1.82}, "abc", 1.5,
                         "")
    assert "(compact model: 26% of the parameters, 1.82x in Keras, model/compact.keras)" in compact
    packed = prune_line(_cfg(["quantize=kmeans", "quantize.bits=4"]),
                        {**BASE, "prequant_test_accuracy": 0.91, "compressed_file_bytes": 21437.0,
                         "compression_ratio": 33.6}, "abc", 1.5, "")
    assert "(kmeans 4 bits: pruned 0.9100, 21,437 B, 33.6x)" in packed
