"""Bad input ends the CLI with one clear line on stderr: no traceback, no MLflow run left RUNNING.

Each case runs the real CLI (``python -m src.run``) on tiny settings against a throwaway store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT, TINY, run_cli, store_overrides

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

# TensorFlow's C++ runtime writes these to stderr when it is imported, before any setting can silence them
TF_NOISE = ("I0000 ", "WARNING: All log messages before absl::InitializeLog()")


def write_keras_config(path: Path, layers: list[dict]) -> Path:
    """A .keras archive holding only a config.json with these layers (enough for the checks before training)."""
    import json

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential",
                                                    "config": {"name": "m", "layers": layers}}))
    return path


def keras_layer(class_name: str, module: str = "keras.layers", **config) -> dict:
    return {"module": module, "class_name": class_name, "config": {"name": class_name.lower(), **config},
            "registered_name": None if module.startswith("keras") else f"mine>{class_name}"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_corrupt(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    return path


def write_wrong_shape(path: Path) -> Path:
    flat = np.zeros((20, 784), np.uint8)
    np.savez(path, x_train=flat, y_train=np.zeros(20, np.uint8), x_test=flat, y_test=np.zeros(20, np.uint8))
    return path


def write_truncated(path: Path) -> Path:
    """A real npz cut in half, as an interrupted copy leaves it."""
    full = path.with_suffix(".full.npz")
    write_wrong_shape(full)
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert not zipfile.is_zipfile(path)
    return path


# (override, the setting its error line must name, a word of what is allowed)
CASES = [
    pytest.param(lambda tmp: "prune.k=150", "prune.k", "[0, 100]", id="k-too-big"),
    pytest.param(lambda tmp: "prune.k=-5", "prune.k", "[0, 100]", id="k-negative"),
    pytest.param(lambda tmp: "lr=-0.1", "lr", "positive", id="lr-negative"),
    pytest.param(lambda tmp: "lr=abc", "lr", "lr takes a number, e.g. lr=1e-3", id="lr-not-a-number"),
    pytest.param(lambda tmp: "prune.k=abc", "prune.k", "prune.k takes a number, e.g. prune.k=90", id="k-not-a-number"),
    pytest.param(lambda tmp: "prune.layer_k={dense_1:", "prune.layer_k",  # the shell split '{dense_1: 50}' at its space
                 "if a space split it, quote the whole override for the shell: 'prune.layer_k={dense_1: ...'",
                 id="override-split-by-the-shell"),
    pytest.param(lambda tmp: "prune=magic", "prune", "none, random, random_unit, unit, weight",
                 id="unknown-prune-method"),
    pytest.param(lambda tmp: "optimizer=nonexistent", "optimizer", "adam, sgd", id="unknown-optimizer"),
    pytest.param(lambda tmp: "train.epochs=0", "train.epochs", "at least 1", id="zero-epochs"),
    pytest.param(lambda tmp: "train.lr_schedule=warm", "train.lr_schedule", "constant or cosine",
                 id="unknown-lr-schedule"),
    pytest.param(lambda tmp: "model.hidden=[]", "model.hidden", "at least one", id="no-hidden-layers"),
    pytest.param(lambda tmp: "trian.epochs=1", "trian.epochs", "no such setting", id="misspelt-key"),
    pytest.param(lambda tmp: "eval.timing=fast", "eval.timing", "off, quick (default) or full", id="timing-level"),
    pytest.param(lambda tmp: "prune.k=range", "prune.k=range", "-m 'prune.k=range(0,100,10)'", id="range-no-args"),
    pytest.param(lambda tmp: "prune.schedule=magic", "prune.schedule", "oneshot, finetune, gradual or iterative",
                 id="unknown-schedule"),
    pytest.param(lambda tmp: "prune.scope=everywhere", "prune.scope", "layer or global", id="unknown-scope"),
    pytest.param(lambda tmp: "prune.finetune.epochs=-1", "prune.finetune.epochs", "0 or more epochs",
                 id="negative-epochs"),
    pytest.param(lambda tmp: ["prune.scope=global", "prune.min_keep=200000"], "prune.min_keep",
                 "larger than a pruned layer", id="floor-larger-than-a-layer"),
    pytest.param(lambda tmp: f"data.path={tmp}/missing.npz", "data.path", "does not exist", id="data-missing"),
    pytest.param(lambda tmp: f"data.path={write_corrupt(tmp / 'corrupt.npz')}", "data.path", "npz",
                 id="data-corrupt"),
    pytest.param(lambda tmp: f"data.path={write_truncated(tmp / 'truncated.npz')}", "data.path", "npz",
                 id="data-truncated"),
    pytest.param(lambda tmp: f"data.path={write_wrong_shape(tmp / 'flat.npz')}", "data.path", "(N, H, W)",
                 id="data-wrong-shape"),
    pytest.param(lambda tmp: f"tracking.uri=http://127.0.0.1:{closed_port()}", "tracking.uri", "reachable",
                 id="tracking-server-down"),
    pytest.param(lambda tmp: ["model=keras", f"model.path={tmp}/missing.keras"], "model.path", "does not exist",
                 id="model-file-missing"),
    pytest.param(lambda tmp: ["model=keras", f"model.path={write_corrupt(tmp / 'model.keras')}"], "model.path",
                 "not a Keras 3 .keras file", id="model-file-not-keras"),
    pytest.param(lambda tmp: ["model=keras", "model.path=" + str(write_keras_config(
        tmp / "custom.keras", [keras_layer("InputLayer", batch_shape=[None, 28, 28]), keras_layer("Flatten"),
                               keras_layer("MyDense", module="mine.layers")]))], "model.path",
                 "needs custom code (MyDense)", id="model-file-custom-layer"),
    pytest.param(lambda tmp: ["model=keras", "model.path=" + str(write_keras_config(
        tmp / "registered.keras", [keras_layer("InputLayer", batch_shape=[None, 28, 28]), keras_layer("Flatten"),
                                   {**keras_layer("Scale", module="keras.layers"), "module": None,
                                    "registered_name": "my>Scale"}]))], "model.path",
                 "needs custom code (Scale)", id="model-file-registered-custom-layer"),
    pytest.param(lambda tmp: ["model=keras", "model.path=" + str(write_keras_config(
        tmp / "none.keras", [keras_layer("InputLayer", batch_shape=[None, 28, 28]), keras_layer("Flatten")]))],
                 "model.path", "no Dense or Conv2D layer", id="model-file-nothing-to-prune"),
    pytest.param(lambda tmp: ["model=keras"], "model=keras", "model.path=<file>.keras", id="model-file-not-given"),
    pytest.param(lambda tmp: ["model=keras", f"model.path={tmp}"], "model.path", "is a folder", id="model-path-folder"),
    pytest.param(lambda tmp: ["model=keras", "model.path=" + str(write_keras_config(
        tmp / "rgb.keras", [keras_layer("InputLayer", batch_shape=[None, 32, 32, 3]), keras_layer("Flatten"),
                            keras_layer("Dense", units=10)]))], "model.path",
                 "save the model with keras.Input((28, 28))", id="model-file-input-shape"),
    pytest.param(lambda tmp: "model=resnet", "model=resnet", "lenet300, lenet5", id="unknown-model"),
    pytest.param(lambda tmp: ["prune=unit", "prune.criterion=fpgm"], "prune.criterion",
                 "l2, l1, bn_scale, taylor", id="unknown-unit-criterion"),
    pytest.param(lambda tmp: ["prune=weight", "prune.criterion=l2"], "prune.criterion", "magnitude",
                 id="unit-criterion-for-weights"),
    pytest.param(lambda tmp: ["prune=random", "prune.criterion=magnitude"], "prune.criterion", "rank by nothing",
                 id="criterion-for-a-random-method"),
    pytest.param(lambda tmp: ["model=lenet5", "prune=unit", "prune.criterion=bn_scale"], "prune.criterion=bn_scale",
                 "no BatchNormalization layer", id="bn-scale-without-batchnorm"),
    pytest.param(lambda tmp: ["model=mobilenetv2", "model.size=28"], "model.size", "at least 32x32",
                 id="mobilenet-too-small"),
    pytest.param(lambda tmp: "prune.layer_k={dense9: 50}", "prune.layer_k", "dense1, dense2, dense3, dense4, dense5",
                 id="layer-k-unknown-layer"),
    pytest.param(lambda tmp: ["model=lenet5", "prune.layer_k={pool1: 50}"], "prune.layer_k",
                 "conv1, conv2, dense1, dense2", id="layer-k-not-prunable"),
    pytest.param(lambda tmp: ["model=lenet5", "model.input_shape=[32,32,3]"], "model.input_shape",
                 "(28, 28)", id="input-shape-mismatch"),
    pytest.param(lambda tmp: "model.n_classes=7", "model.n_classes", "10 classes", id="classes-mismatch"),
    pytest.param(lambda tmp: ["quantize=kmeans", "quantize.bits=0"], "quantize.bits", "[1, 16]", id="bits-zero"),
    pytest.param(lambda tmp: ["quantize=linear", "quantize.bits=40"], "quantize.bits", "[1, 16]", id="bits-40"),
    pytest.param(lambda tmp: "quantize=magic", "quantize=magic", "kmeans, linear, none", id="unknown-quantize"),
    pytest.param(lambda tmp: ["quantize=kmeans", "quantize.method=lloyd"], "quantize.method", "linear or kmeans",
                 id="unknown-quantize-method"),
    pytest.param(lambda tmp: ["quantize=kmeans", "quantize.coder=gzip"], "quantize.coder", "huffman",
                 id="unknown-coder"),
    pytest.param(lambda tmp: ["model=lenet5", "quantize=kmeans", "quantize.layer_bits={dense9: 4}"],
                 "quantize.layer_bits", "conv1, conv2, dense1, dense2", id="layer-bits-unknown-layer"),
    pytest.param(lambda tmp: ["quantize=kmeans", "quantize.layer_bits={dense1: 17}"], "quantize.layer_bits",
                 "[1, 16]", id="layer-bits-out-of-range"),
    pytest.param(lambda tmp: "quantize.bits=4", "quantize.bits", "quantize=kmeans or linear", id="bits-without-method"),
    pytest.param(lambda tmp: ["model=resnet20", "model.input_shape=[28,28,1]", "quantize=kmeans"], "quantize=kmeans",
                 "only Keras runs", id="quantize-a-graph"),
]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(TF_NOISE)]


def assert_no_running_runs(tmp: Path) -> None:
    from mlflow.tracking import MlflowClient

    if not (tmp / "mlflow.db").exists():
        return  # rejected before the store was touched
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000) if experiments else []
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []


def run_bad(args: list[str], tmp: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    """Like conftest's run_cli, but the bad setting comes last, so it wins over the throwaway store's."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "1" if full_error else "0"}
    return subprocess.run([sys.executable, "-m", "src.run", *store_overrides(tmp), *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("make_override, setting, allowed", CASES)
def test_bad_input_fails_with_one_line_naming_the_setting(tmp_path, make_override, setting, allowed):
    override = make_override(tmp_path)
    result = run_bad([*TINY, *([override] if isinstance(override, str) else override)], tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {setting}"), lines[0]
    assert allowed in lines[0], lines[0]
    assert "val_accuracy" not in result.stdout  # nothing was trained
    assert_no_running_runs(tmp_path)


def test_bad_value_inside_a_sweep_fails_before_any_job_runs(tmp_path):
    result = run_cli(["-m", "prune=weight,magic", "prune.k=0,50", *TINY], tmp_path, timeout=300)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "error: prune=magic is not an option of group prune; choose one of none, random, random_unit, unit, weight"]
    assert "Launching" not in result.stdout and not (tmp_path / "mlflow.db").exists()


def test_an_out_of_range_value_inside_a_sweep_fails_before_any_job_runs(tmp_path):
    """prune.k=150 is a number (Hydra composes it): the grid's values are still checked before job 0 trains."""
    result = run_cli(["-m", "prune.k=50,150", *TINY], tmp_path, timeout=300)
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert line.startswith("error: prune.k=150.0 is out of range: k is a percentage in [0, 100] (job 1 of 2: "
                           "prune.k=150 train.epochs=1") and line.endswith("; no job has run)"), line
    assert "[prune]" not in result.stdout and not (tmp_path / "mlflow.db").exists()


def test_hydra_full_error_still_gives_the_full_trace(tmp_path):
    result = run_bad(["lr=abc"], tmp_path, full_error=True)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "could not be converted to Float" in result.stderr


def test_conflicting_command_line_flags_give_one_line(tmp_path):
    result = run_cli(["-m", "--cfg", "job"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: Only one of --run, --multirun, --cfg, --info and --shell_completion "
                                          "can be specified (see python -m src.run --help)"]


def test_keras_download_without_a_network_is_one_line(tmp_path):
    """data.source=keras where Keras's downloader cannot reach its server (proxies to a closed local port, an empty
    Keras cache): one line naming data.source and the offline default, exit 2, nothing trained."""
    port = closed_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0", "KERAS_HOME": str(tmp_path / "keras"),
           "HTTPS_PROXY": f"http://127.0.0.1:{port}", "https_proxy": f"http://127.0.0.1:{port}",
           "HTTP_PROXY": f"http://127.0.0.1:{port}", "http_proxy": f"http://127.0.0.1:{port}", "NO_PROXY": ""}
    result = subprocess.run([sys.executable, "-m", "src.run", *store_overrides(tmp_path), *TINY, "data.source=keras"],
                            cwd=PROJECT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: data.source=keras") and "data.source=file" in lines[0]
    assert "Traceback" not in result.stderr
    assert_no_running_runs(tmp_path)
