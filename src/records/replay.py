"""Rebuild a finished prune run's pruned network from the store alone: its own pruned model file, or its train run's
model file and its pruning params. Used to time runs that were not timed when they ran (the Optuna search's Pareto
front) and to export any run (python -m src.export)."""

from __future__ import annotations

import ast
import tempfile
from types import SimpleNamespace

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from src.engine.network import Network, with_weights
from src.pruning import plan as P
from src.store.train_cache import PRUNED_ARTIFACT, fetch_verified_model
from src.training.data import load_mnist, make_splits
from src.training.keras_file import read_input_shape, read_network, read_weights


def pruned_net(client: MlflowClient, run: Run) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """(kernels, biases) of the prune run's weighted (Dense, Conv2D) layers: its parent's trained model with the
    run's masks applied, or, for a retrained run, its own ``model/pruned.keras``. Raises ValueError when the
    parent's model file is missing or does not match its checksum."""
    params = run.data.params
    if params.get("prune.schedule", "oneshot") != "oneshot":  # retrained: its own model file has the weights
        with tempfile.TemporaryDirectory() as tmp:
            return read_weights(client.download_artifacts(run.info.run_id, PRUNED_ARTIFACT, tmp))[:2]
    return _masked(run, read_weights(_trained_model(client, run)))


def _trained_model(client: MlflowClient, run: Run) -> str:
    """The verified model file of the run's parent train run (cached locally)."""
    parent = run.data.tags["mlflow.parentRunId"]
    path = fetch_verified_model(client, parent, client.get_run(parent).data.tags.get("model_sha256", ""))
    if path is None:
        raise ValueError(f"train run {parent} has no model file matching its model_sha256")
    return path


def _masked(run: Run, weights: tuple[list[np.ndarray], list[np.ndarray | None], list[str]]
            ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The trained ``weights`` (kernels, biases, layer names) with the run's one-shot masks applied."""
    params = run.data.params
    layer_k = ast.literal_eval(params.get("prune.layer_k", "None"))
    prune = SimpleNamespace(method=params["prune.method"], k=float(params["prune.k"]), layer_k=layer_k,
                            prune_last=params.get("prune.prune_last") == "True",
                            scope=params.get("prune.scope", "layer"), min_keep=float(params.get("prune.min_keep", 0)),
                            seed=int(params.get("prune.seed", 0)))
    return P.oneshot(prune, *weights)[1]


def pruned_network(client: MlflowClient, run: Run) -> tuple[Network, tuple[int, ...] | None]:
    """(network, input shape of one example) of a finished prune run, any model: its own ``model/pruned.keras``
    when it kept one (every retrained run; every run under ``tracking.save_pruned=all``, the default), else its
    parent's trained model with the run's one-shot masks applied to its Dense and Conv2D kernels. Raises
    ValueError as :func:`pruned_net`, src/training/keras_file.UnsupportedLayer for a layer the engine cannot
    express."""
    folder = PRUNED_ARTIFACT.rsplit("/", 1)[0]
    kept = PRUNED_ARTIFACT in {a.path for a in client.list_artifacts(run.info.run_id, folder)}
    with tempfile.TemporaryDirectory() as tmp:
        if kept:
            path = client.download_artifacts(run.info.run_id, PRUNED_ARTIFACT, tmp)
            return read_network(path), read_input_shape(path)
        path = _trained_model(client, run)
        return with_weights(read_network(path), *_masked(run, read_weights(path))), read_input_shape(path)


def test_pixels(run: Run) -> np.ndarray:
    """The run's test images as the model takes them (raw pixels), from the data settings it logged."""
    params = run.data.params

    def opt_int(name: str) -> int | None:
        value = params.get(name, "None")
        return None if value == "None" else int(value)

    path = params.get("data.path", "None")
    arrays, fingerprint = load_mnist(params.get("data.source", "file"), None if path == "None" else path)
    splits = make_splits(arrays, fingerprint, opt_int("data.train_size"), opt_int("data.test_size"),
                         float(params.get("data.val_fraction", "0.1")))
    return splits.x_test
