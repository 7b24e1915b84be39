"""Which prune runs a report covers, and what it reads of their train runs: MLflow queries and downloads."""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from src.report import aggregate
from src.report.table import model_name, varying_settings
from src.store.train_cache import MODEL_ARTIFACT
from src.training.keras_file import KerasFileError, layer_chain, read_config, read_weights

SEARCH_PAGE = 1000
IDS_PER_QUERY = 100


def search_prune_runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list[Run]:
    """All active, FINISHED ``role=prune`` runs of the experiment matching ``filter_string`` (MLflow syntax)."""
    query = " and ".join(f for f in (filter_string.strip(), "tags.role = 'prune'", "attributes.status = 'FINISHED'")
                         if f)
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=SEARCH_PAGE, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def runs_by_ids(client: MlflowClient, experiment_id: str, run_ids: list[str]) -> list[Run]:
    """The finished prune runs among ``run_ids`` (other ids are dropped)."""
    runs = []
    for i in range(0, len(run_ids), IDS_PER_QUERY):
        quoted = ", ".join(f"'{r}'" for r in run_ids[i:i + IDS_PER_QUERY])
        runs += search_prune_runs(client, experiment_id, f"attributes.run_id IN ({quoted})")
    return runs


def sweep_member_tag(sweep_id: str) -> str:
    """The tag that marks a prune run as part of sweep ``sweep_id`` (a run can be in several: a later sweep
    that skips its job adds its own; tag ``sweep_id`` names the latest)."""
    return f"sweep.{sweep_id}"


def runs_by_sweep(client: MlflowClient, experiment_id: str, sweep_id: str) -> list[Run]:
    """The prune runs of sweep ``sweep_id``: marked by :func:`sweep_member_tag`, or (runs logged before that
    tag existed) whose ``sweep_id`` tag is still this sweep's."""
    runs = {r.info.run_id: r for r in search_prune_runs(client, experiment_id,
                                                         f"tags.`{sweep_member_tag(sweep_id)}` = '1'")}
    runs |= {r.info.run_id: r for r in search_prune_runs(client, experiment_id, f"tags.sweep_id = '{sweep_id}'")}
    return list(runs.values())


def latest_sweep_id(client: MlflowClient, experiment_id: str) -> str | None:
    """sweep_id of the most recently started sweep run or sweep-tagged prune run; None if there is none."""
    newest = []
    for query in ("tags.role = 'sweep'", "tags.role = 'prune' and tags.sweep_id LIKE '%'"):
        newest += client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    newest = [r for r in newest if r.data.tags.get("sweep_id")]
    return max(newest, key=lambda r: r.info.start_time).data.tags["sweep_id"] if newest else None


def load_kernels(client: MlflowClient, train_run_id: str) -> list[np.ndarray] | None:
    """Kernels of the weighted (Dense, Conv2D) layers of the train run's model artifact, in model order; None for
    a graph of layers (a residual net, a ``keras.applications`` backbone): its layers have no order to set beside
    another model's, and its prune runs carry their own ``weights_pruned.png``. KerasFileError for a file that is
    not a readable ``.keras`` model."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(train_run_id, MODEL_ARTIFACT, tmp)
        config = read_config(path)
        try:
            layer_chain(path, config)
        except KerasFileError:
            return None
        return read_weights(path)[0]


def parent_runs(client: MlflowClient, runs: list[Run]) -> list[Run]:
    """The distinct train runs behind ``runs`` (their ``mlflow.parentRunId``), ordered by lr then seed; a train
    run that cannot be read is left out with a message (it only removes curves and findings inputs)."""
    parents = sorted({r.data.tags["mlflow.parentRunId"] for r in runs if r.data.tags.get("mlflow.parentRunId")})
    found = []
    for run_id in parents:
        try:
            found.append(client.get_run(run_id))
        except Exception as e:  # noqa: BLE001 - any failure to fetch means "no curve"
            print(f"[report] left out train run {run_id}: {type(e).__name__}: {e}", file=sys.stderr)
    return sorted(found, key=lambda r: (float(r.data.params.get("lr", "nan")),
                                        float(r.data.params.get(aggregate.SEED, "nan"))))


def trained_models(client: MlflowClient, train_runs: list[Run]) -> dict[str, list[np.ndarray]]:
    """label -> kernels of the train runs' models: one model per label, the first seed's when seeds differ.

    Labels are ``lr=...`` plus any training param other than the seed that differs between the train runs of the
    same model, after the model's name when there are several models. A graph model is left out
    (:func:`load_kernels`); a model that cannot be fetched is left out with a message."""
    names = sorted({model_name(r.data.params) for r in train_runs})
    by_name = {name: [r for r in train_runs if model_name(r.data.params) == name] for name in names}
    kernels: dict[str, list[np.ndarray]] = {}
    for name, runs in by_name.items():
        varying = varying_settings(runs)
        extra = [k for k in varying if k not in ("data.fingerprint", aggregate.SEED)]
        shown: set[str] = set()  # labels without the seed: one model each
        for run in runs:
            base = (f"{name}, " if len(names) > 1 else "") + ", ".join(
                f"{k}={run.data.params.get(k)}" for k in ["lr", *extra])
            if base in shown:
                continue
            seed = f" (seed {run.data.params.get(aggregate.SEED)})" if aggregate.SEED in varying else ""
            try:
                model = load_kernels(client, run.info.run_id)
            except Exception as e:  # noqa: BLE001 - any failure to fetch means "no curve"
                print(f"[report] left out the weights of train run {run.info.run_id}: {type(e).__name__}: {e}",
                      file=sys.stderr)
                continue
            if model is not None:
                kernels[base + seed] = model
                shown.add(base)
    return kernels


def unpruned_accuracy(client: MlflowClient, runs: list[Run]) -> float | None:
    """Test accuracy of the trained model behind ``runs`` (its train run's), when they share one model."""
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    if len(parents) != 1 or None in parents:
        return None
    try:
        return client.get_run(parents.pop()).data.metrics.get("test_accuracy")
    except Exception:  # noqa: BLE001 - no reference line is all that is lost
        return None


def select_runs(client: MlflowClient, experiment_id: str, args: argparse.Namespace) -> tuple[list[Run], str, str]:
    """(runs, output folder name, figure title) for the CLI's selection options."""
    if args.run_ids:
        ids = [r.strip() for r in args.run_ids.split(",") if r.strip()]
        digest = hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:8]
        return runs_by_ids(client, experiment_id, ids), f"runs-{digest}", f"{len(ids)} selected runs"
    if args.filter:
        digest = hashlib.sha256(args.filter.encode()).hexdigest()[:8]
        return search_prune_runs(client, experiment_id, args.filter), f"filter-{digest}", args.filter
    sweep_id = args.sweep_id or latest_sweep_id(client, experiment_id)
    if sweep_id is None:
        return [], "", ""
    return runs_by_sweep(client, experiment_id, sweep_id), f"sweep-{sweep_id}", f"sweep {sweep_id}"
