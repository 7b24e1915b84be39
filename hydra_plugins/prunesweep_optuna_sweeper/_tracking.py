"""MLflow side of the sweeper: the store of the composed config, each trial's unpruned baseline, and
the study's one ``role=search`` run: RUNNING while trials run, its front's size and best values updated as
each batch of trials is told, and pareto_front.png and pareto_front.csv at the end."""

from __future__ import annotations

import ast
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import optuna
from mlflow.entities import Metric, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from sqlalchemy.engine import make_url

from src.cli.config import ConfigError
from src.store import open_runs
from src.store.tracking import PROJECT_DIR, check_reachable, find_runs, git_commit, resolve_uri, setup_experiment

from ._report import Point, pareto_front, plot_front, write_csv

REPORT_METRICS = ("val_accuracy", "test_accuracy", "sparsity")


def connect(config: DictConfig) -> tuple[MlflowClient, str]:
    """(client, experiment id) for ``config.tracking``, resolved against the cwd exactly as the jobs do."""
    uri = resolve_uri(config.tracking.uri, Path.cwd())
    check_reachable(uri)
    experiment_id = setup_experiment(uri, config.tracking.experiment, Path.cwd() / config.tracking.artifact_root)
    return MlflowClient(uri), experiment_id


def unpruned_val_accuracy(client: MlflowClient, prune_run_id: str) -> float:
    """val_accuracy of the unpruned model behind a prune run: the last epoch's value on its parent train
    run (the same validation split the prune run is scored on). Raises ConfigError if there is none."""
    parent = client.get_run(prune_run_id).data.tags.get("mlflow.parentRunId")
    value = client.get_run(parent).data.metrics.get("val_accuracy") if parent else None
    if value is None:
        raise ConfigError(f"hydra.sweeper.max_accuracy_drop needs the unpruned model's val_accuracy, but train run "
                          f"{parent} of prune run {prune_run_id} logged none: use data.val_fraction > 0")
    return float(value)


def run_point(run: Run, trial: int, feasible: bool = True) -> Point:
    """A prune run as a report point; per-layer k is ``prune.layer_k``, or ``prune.k`` for every pruned layer."""
    params, metrics = run.data.params, run.data.metrics
    layer_k = ast.literal_eval(params.get("prune.layer_k", "None"))
    if isinstance(layer_k, dict):  # by layer name: the searched layers' k, in the order the study names them
        layer_k = list(layer_k.values())
    if layer_k is None:
        n_layers = len(ast.literal_eval(params["model.hidden"])) + (params.get("prune.prune_last") == "True")
        layer_k = [params["prune.k"]] * n_layers
    return Point(trial, run.info.run_id, params["prune.method"], [float(k) for k in layer_k],
                 metrics["val_accuracy"], metrics["test_accuracy"], metrics["sparsity"], feasible,
                 schedule=params.get("prune.schedule", "oneshot"))


def trial_points(client: MlflowClient, study: optuna.Study) -> tuple[list[Point], set[str]]:
    """(a point per COMPLETE trial whose prune run is in MLflow, the train_hash of those runs)."""
    points, train_hashes = [], set()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        try:
            run = client.get_run(trial.user_attrs["run_id"])
        except (KeyError, MlflowException):
            continue  # no run id recorded, or the run was deleted
        if set(REPORT_METRICS) <= set(run.data.metrics):
            points.append(run_point(run, trial.number, all(c <= 0 for c in trial.constraints.values())))
            train_hashes.add(run.data.tags.get("train_hash", ""))
    return points, train_hashes


def grid_points(client: MlflowClient, experiment_id: str, train_hashes: set[str]) -> list[Point]:
    """FINISHED uniform-k prune runs (no ``study`` tag, no ``prune.layer_k``) of the same trained models."""
    runs = [run for h in sorted(train_hashes) for run in find_runs(client, experiment_id, role="prune", train_hash=h)]
    return [run_point(run, -1) for run in runs
            if run.info.status == "FINISHED" and "study" not in run.data.tags
            and run.data.params.get("prune.layer_k") == "None" and set(REPORT_METRICS) <= set(run.data.metrics)]


def storage_tag(storage: str | None) -> str:
    """The storage URL without any password, for a tag."""
    return make_url(storage).render_as_string(hide_password=True) if storage else "memory"


def open_search_run(client: MlflowClient, experiment_id: str, study_name: str, tags: dict[str, str]) -> str:
    """The study's one ``role=search`` run, RUNNING until :func:`log_search_run` (or an interrupt: src/store/open_runs)
    ends it: created the first time, reopened when the study is resumed; ``tags`` set."""
    previous = find_runs(client, experiment_id, role="search", study=study_name)
    if previous:
        run_id = previous[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(experiment_id, tags={"role": "search", "study": study_name},
                                   run_name=f"search-{study_name}").info.run_id
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    return open_runs.opened(client, run_id)


def front_metrics(study: optuna.Study, front: list[Point]) -> dict[str, float]:
    """n_complete_trials, n_failed_trials, n_pareto and, with a front, best_sparsity and best_val_accuracy."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    metrics = {"n_complete_trials": states.count(optuna.trial.TrialState.COMPLETE),
               "n_failed_trials": states.count(optuna.trial.TrialState.FAIL), "n_pareto": len(front)}
    if front:
        metrics |= {"best_sparsity": max(p.sparsity for p in front),
                    "best_val_accuracy": max(p.val_accuracy for p in front)}
    return metrics


def told_points(study: optuna.Study) -> list[Point]:
    """A point per COMPLETE trial from what it was told (its user attributes): no MLflow query."""
    return [Point(t.number, t.user_attrs.get("run_id", ""), str(t.params.get("prune", "")), [],
                  t.user_attrs["val_accuracy"], t.user_attrs.get("test_accuracy", float("nan")),
                  t.user_attrs["sparsity"], all(c <= 0 for c in t.constraints.values()))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if {"val_accuracy", "sparsity"} <= set(t.user_attrs)]


def log_front_progress(client: MlflowClient, run_id: str, study: optuna.Study) -> None:
    """Update the RUNNING search run with the front of the trials told so far (:func:`front_metrics`, step = number of
    complete trials), so its charts move while the study runs."""
    metrics = front_metrics(study, pareto_front(told_points(study)))
    now, step = int(time.time() * 1000), int(metrics["n_complete_trials"])
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_search_run(client: MlflowClient, run_id: str, tags: dict[str, str], metrics: dict[str, float],
                   files: list[Path], step_metrics: list[Metric] = ()) -> str:
    """Finish the study's search run (:func:`open_search_run`): tags updated, metrics logged at step = number of
    complete trials, ``step_metrics`` as given, files replaced; FINISHED."""
    now, step = int(time.time() * 1000), int(metrics["n_complete_trials"])
    client.log_batch(run_id, metrics=[*(Metric(k, float(v), now, step) for k, v in metrics.items()), *step_metrics],
                     tags=[RunTag(k, str(v)) for k, v in tags.items()])
    for path in files:
        client.log_artifact(run_id, str(path))
    open_runs.close(client, run_id, "FINISHED")
    return run_id


def time_front(client: MlflowClient, front: list[Point], level: str, eval_cfg: DictConfig) -> list[Point]:
    """The front's points with their dense vs sparse timing at ``level`` (src/engine/evaluation, as a prune job
    times itself), each network rebuilt from the store (src/records/replay). Trials run with
    eval.timing=off, so the front is timed once here instead of every trial during the search."""
    from src.engine.evaluation import time_network_evaluation
    from src.records.replay import pruned_network, test_pixels
    from src.training.keras_file import KerasFileError

    timed = []
    for point in front:
        run = client.get_run(point.run_id)
        engine = run.data.params.get("eval.engine_used", "")
        try:
            if engine.startswith("keras ("):
                raise KerasFileError(engine)
            net = pruned_network(client, run)[0]
        except KerasFileError as e:  # a model only Keras runs: the sparse engine has nothing to time
            print(f"[search] front trial {point.trial}: not timed, the sparse engine does not run it ({e})")
            timed.append(point)
            continue
        result = time_network_evaluation(net, test_pixels(run), level, eval_cfg.engine,
                                         eval_cfg.repeats, eval_cfg.warmup, eval_cfg.settle_s)
        timed.append(replace(point, timing={**result.metrics, "engine": result.engine,
                                            "latency_engine": result.latency_engine}))
        print(f"[search] front trial {point.trial}: sparsity {point.sparsity:.4f}, dense "
              f"{result.metrics['dense_eval_ms']:.1f} ms vs sparse {result.metrics['sparse_eval_ms']:.1f} ms "
              f"({result.metrics['eval_speedup']:.2f}x, {result.engine}), batch 1 "
              f"{result.metrics['latency_speedup']:.2f}x ({result.latency_engine})")
    return timed


def report_study(client: MlflowClient, experiment_id: str, run_id: str, study: optuna.Study,
                 max_accuracy_drop: float | None, tags: dict[str, str], front_timing: str = "off",
                 eval_cfg: DictConfig | None = None, copy_to: Path | None = None) -> tuple[str, list[Point]]:
    """Build the Pareto plot and CSV of all the study's trials and log them to its search run ``run_id``; with
    ``front_timing`` quick or full, time the front's models first (:func:`time_front`, with the ``eval``
    settings in ``eval_cfg``) and log their speedups as metrics ``front/eval_speedup`` and
    ``front/latency_speedup`` with step = trial number.

    The plot and CSV are also written into ``copy_to`` (the sweep's report folder) when given.
    Returns (search run id, the front)."""
    points, train_hashes = trial_points(client, study)
    front = pareto_front(points)
    if front_timing != "off" and front:
        front = time_front(client, front, front_timing, eval_cfg)
    baselines = {t.user_attrs["baseline_val_accuracy"] for t in study.get_trials(deepcopy=False)
                 if "baseline_val_accuracy" in t.user_attrs}
    floors = sorted(b - max_accuracy_drop for b in baselines) if max_accuracy_drop is not None else []
    constraint = (f", val accuracy drop <= {100 * max_accuracy_drop:g} points" if max_accuracy_drop is not None
                  else "")
    title = f"study '{study.study_name}': {len(points)} trials, {len(front)} on the Pareto front{constraint}"
    from src.report.table import training_context  # pandas and matplotlib: only when a report is drawn

    trained = [r for h in sorted(train_hashes) for r in find_runs(client, experiment_id, role="train", train_hash=h)
               if r.info.status == "FINISHED"]
    title += f"\n{training_context(trained)}" if trained else ""
    metrics = front_metrics(study, front)
    step_metrics = [Metric(f"front/{name}", float(p.timing[name]), int(time.time() * 1000), p.trial)
                    for p in front for name in ("eval_speedup", "latency_speedup") if name in p.timing]
    commit, dirty = git_commit(PROJECT_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        files = [plot_front(Path(tmp) / "pareto_front.png", points, front,
                            grid_points(client, experiment_id, train_hashes), floors, title),
                 write_csv(Path(tmp) / "pareto_front.csv", front)]
        if copy_to is not None:
            copy_to.mkdir(parents=True, exist_ok=True)
            for file in files:
                shutil.copy(file, copy_to / file.name)
        log_search_run(client, run_id, {**tags, "git_commit": commit, "git_dirty": str(dirty).lower(),
                                        "front_timing": front_timing}, metrics, files, step_metrics)
    return run_id, front
