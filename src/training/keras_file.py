"""Read and write the MLP's ``.keras`` files with zipfile, json and h5py: no Keras, no TensorFlow.

A prune job on a cached model only needs the Dense layers' weights and, for its own model artifacts, a file
that plain ``keras.models.load_model`` opens. Importing Keras costs ~7 s (TensorFlow), more than the whole
job, so this module reads and writes the format directly. Keras 3's ``.keras`` file is a zip of
``config.json`` (the architecture), ``metadata.json`` and ``model.weights.h5``, whose Dense layers' variables
sit in groups ``layers/dense``, ``layers/dense_1``, ... (in model order) as datasets ``vars/0`` (kernel,
``(fan_in, fan_out)``) and ``vars/1`` (bias). tests/test_keras_file.py checks both directions against Keras
itself, so a change of that layout in a new Keras release fails the suite instead of corrupting models.

Written files hold no optimizer state and no compile config (inference models), and store weights with
gzip compression: a 98%-zero matrix takes a small fraction of its dense size, and loads back exactly.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
DENSE_GROUP = re.compile(r"^dense(?:_(\d+))?$")


class KerasFileError(ValueError):
    """The file is not a readable ``.keras`` model of a Dense-layer MLP."""


def _dense_groups(layers: h5py.Group) -> list[str]:
    """``dense``, ``dense_1``, ``dense_2``, ... in model order."""
    found = [(int(m.group(1) or 0), name) for name in layers if (m := DENSE_GROUP.match(name))]
    return [name for _, name in sorted(found)]


def _dense_configs(config: dict) -> list[dict]:
    return [layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense"]


def read_config(path: Path | str) -> dict:
    """The model's architecture (``config.json``) as a dict."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(CONFIG))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise KerasFileError(f"{path} is not a readable .keras file ({type(e).__name__}: {e})") from None


def read_dense_weights(path: Path | str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Kernels ``(fan_in, fan_out)`` and biases (None without bias) of the Dense layers, in order, float32."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(CONFIG))
            weights = io.BytesIO(archive.read(WEIGHTS))
        use_bias = [layer["config"].get("use_bias", True) for layer in _dense_configs(config)]
        with h5py.File(weights, "r") as h5:
            groups = _dense_groups(h5["layers"])
            if len(groups) != len(use_bias):
                raise KerasFileError(f"{path}: {len(use_bias)} Dense layers in its config, {len(groups)} in its "
                                     "weights")
            kernels = [np.asarray(h5["layers"][g]["vars"]["0"], dtype=np.float32) for g in groups]
            biases = [np.asarray(h5["layers"][g]["vars"]["1"], dtype=np.float32) if b else None
                      for g, b in zip(groups, use_bias, strict=True)]
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise KerasFileError(f"{path} is not a readable .keras file ({type(e).__name__}: {e})") from None
    return kernels, biases


def write_like(template: Path | str, out: Path | str, kernels: list[np.ndarray],
               biases: list[np.ndarray | None], compress: bool = True) -> Path:
    """Write ``out``: the MLP of ``template`` (its config: input, scaling, activations) with these Dense weights.

    Layer widths follow ``kernels`` (so a compacted, unit-pruned net is a smaller MLP); biases must be given
    exactly for the layers that use them. No optimizer state, no compile config. ``compress=False`` stores the
    weights as Keras itself does (no HDF5 filter), e.g. to measure the plain file's size. Returns ``out``."""
    config = read_config(template)
    config.pop("compile_config", None)
    dense = _dense_configs(config)
    if len(dense) != len(kernels):
        raise ValueError(f"{template} has {len(dense)} Dense layers, got {len(kernels)} kernels")
    for layer, w, b in zip(dense, kernels, biases, strict=True):
        if (b is None) == bool(layer["config"].get("use_bias", True)):
            raise ValueError(f"layer {layer['config']['name']}: bias given = {b is not None}, use_bias = "
                             f"{layer['config'].get('use_bias', True)}")
        layer["config"]["units"] = int(w.shape[1])
        layer["build_config"] = {"input_shape": [None, int(w.shape[0])]}
    with zipfile.ZipFile(template) as archive:
        metadata = archive.read(METADATA)
        with h5py.File(io.BytesIO(archive.read(WEIGHTS)), "r") as h5:
            layer_names = list(h5["layers"])
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        layers = h5.create_group("layers")
        for name in layer_names:  # every layer keeps its (possibly empty) vars group, as Keras writes them
            layers.create_group(name).create_group("vars")
        for name, w, b in zip(_dense_groups(layers), kernels, biases, strict=True):
            group = layers[name]["vars"]
            filters = dict(compression="gzip", compression_opts=1, shuffle=True) if compress else {}
            # gzip level 1: ~1.5x faster to write than the default 4, ~5% larger
            group.create_dataset("0", data=np.asarray(w, np.float32), **filters)
            if b is not None:
                group.create_dataset("1", data=np.asarray(b, np.float32), **filters)
        h5.create_group("vars")
    out = Path(out)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(METADATA, metadata)
        archive.writestr(CONFIG, json.dumps(config))
        archive.writestr(WEIGHTS, buffer.getvalue())
    return out
