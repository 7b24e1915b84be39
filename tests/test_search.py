"""Optuna search from the CLI: a 4-trial two-objective study run twice (resume), checked through
Optuna's and MLflow's own clients; the constrained preset; bad sweeper settings."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.conftest import TINY, run_cli, seed_store

pytestmark = pytest.mark.slow


def study_overrides(tmp: Path, name: str, n_trials: int) -> list[str]:
    return [f"hydra.sweeper.storage=sqlite:///{tmp}/optuna.db", f"hydra.sweeper.study_name={name}",
            f"hydra.sweeper.n_trials={n_trials}"]


SEARCH = ["-m", "search=optuna", *TINY]


def _role(runs, role, study=None):
    return [r for r in runs if r.data.tags.get("role") == role and (study is None or r.data.tags.get("study") == study)]


@pytest.fixture(scope="module")
def search(tmp_path_factory, mlflow_client_for, model_store):
    tmp = tmp_path_factory.mktemp("search")
    seed_store(model_store, tmp, "tiny")
    outputs = []
    for _ in range(2):  # the second run resumes the study
        out = run_cli([*SEARCH, *study_overrides(tmp, "s", 4)], tmp)
        assert out.returncode == 0, out.stderr[-3000:]
        outputs.append(out)
    client = mlflow_client_for(tmp)
    experiment = client.get_experiment_by_name("prunesweep")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp}/optuna.db")
    return tmp, outputs, client, runs, study


def test_resumed_study_has_eight_complete_trials_of_two_objectives(search):
    _, _, _, _, study = search
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(study.trials) == len(complete) == 8
    assert [t.number for t in complete] == list(range(8))
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE] * 2
    for trial in complete:
        assert set(trial.params) == {"prune", *(f"prune.layer_k.dense{i}" for i in range(1, 5))}
        assert trial.params["prune"] in ("weight", "unit")
        assert all(0 <= trial.params[f"prune.layer_k.dense{i}"] <= 99 for i in range(1, 5))
        assert trial.values == [trial.user_attrs["val_accuracy"], trial.user_attrs["sparsity"]]
    assert len({tuple(t.params.values()) for t in complete}) == 8  # the resumed sampler did not repeat trials


def test_each_trial_is_one_prune_run_of_the_one_trained_model(search):
    _, _, _, runs, study = search
    assert len(_role(runs, "prune")) == 8 and len(_role(runs, "train")) == 1
    assert len(_role(runs, "search")) == 1 and _role(runs, "search")[0].data.tags["study"] == "s"
    by_trial = {int(r.data.tags["trial"]): r for r in _role(runs, "prune", "s")}
    assert sorted(by_trial) == list(range(8))
    for trial in study.trials:
        run = by_trial[trial.number]
        assert run.info.run_id == trial.user_attrs["run_id"] and run.info.status == "FINISHED"
        assert run.data.params["prune.method"] == trial.params["prune"]
        assert run.data.metrics["val_accuracy"] == pytest.approx(trial.values[0])
        layer_k = json.loads(run.data.params["prune.layer_k"])
        for i, (name, k) in enumerate(layer_k.items(), start=1):
            assert name == f"dense{i}" and k == pytest.approx(trial.params[f"prune.layer_k.{name}"])
            assert run.data.metrics[f"weights/layer{i}/sparsity"] == pytest.approx(k / 100, abs=0.005)
        m = run.data.metrics  # charts can place a trial at its mean k and its sparsity, not at prune.k=0
        mean_k = np.mean(list(layer_k.values()))
        assert m["k_percent"] == pytest.approx(mean_k) == pytest.approx(float(run.data.params["prune.k_mean"]))
        assert m["sparsity_percent"] == pytest.approx(100 * m["sparsity"])
        assert run.info.run_name == (f"trial-{trial.number:03d}-{trial.params['prune']}-sp{m['sparsity']:.3f}"
                                     f"-acc{m['val_accuracy']:.4f}")


def test_second_run_reuses_the_trained_model(search):
    _, (first, second), _, _, _ = search
    assert first.stdout.count("[train] reusing") == 4  # the session's tiny model
    assert second.stdout.count("[train] reusing") == 4
    assert "[search] study 's'" in second.stdout and "8 complete trials" in second.stdout


def test_search_run_holds_the_front_plot_and_csv(search):
    tmp, _, client, runs, study = search
    run = _role(runs, "search")[0]
    assert run.info.status == "FINISHED" and run.data.metrics["n_complete_trials"] == 8
    artifacts = {a.path: a for a in client.list_artifacts(run.info.run_id)}
    assert artifacts["pareto_front.png"].file_size > 10_000
    for name in ("pareto_front.png", "pareto_front.csv"):  # also beside the sweep's own report
        assert (tmp / "multirun" / "report" / name).stat().st_size > 100
    path = client.download_artifacts(run.info.run_id, "pareto_front.csv", str(tmp))
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    assert list(rows[0]) == ["trial", "run_id", "method", "k_layer1", "k_layer2", "k_layer3", "k_layer4",
                             "val_accuracy", "test_accuracy", "sparsity", "dense_eval_ms", "sparse_eval_ms",
                             "eval_speedup", "dense_latency_ms", "sparse_latency_ms", "latency_speedup", "engine",
                             "latency_engine"]
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in study.best_trials)
    assert len(rows) == run.data.metrics["n_pareto"]
    for row in rows:
        trial = study.trials[int(row["trial"])]
        assert row["run_id"] == trial.user_attrs["run_id"] and row["method"] == trial.params["prune"]
        assert float(row["k_layer1"]) == pytest.approx(trial.params["prune.layer_k.dense1"], rel=1e-3)
        assert float(row["sparsity"]) == pytest.approx(trial.values[1], rel=1e-5)
        assert float(row["eval_speedup"]) == pytest.approx(float(row["dense_eval_ms"]) / float(row["sparse_eval_ms"]),
                                                           rel=1e-4)


def test_the_search_run_follows_the_front_as_trials_finish(search):
    """Updated after every told trial (n_jobs=1), not only at the end of each run of the command."""
    _, _, client, runs, _ = search
    run = _role(runs, "search")[0]
    history = client.get_metric_history(run.info.run_id, "n_complete_trials")
    assert {m.step for m in history} == set(range(1, 9)) and all(m.value == m.step for m in history)
    assert {m.step for m in client.get_metric_history(run.info.run_id, "n_pareto")} == set(range(1, 9))


def test_one_shot_trials_store_no_model_files(search):
    _, _, client, runs, _ = search
    for run in _role(runs, "prune", "s"):
        assert client.list_artifacts(run.info.run_id, "model") == []
        assert "pruned_model_bytes" not in run.data.metrics and "gzip_file_bytes" not in run.data.metrics
        assert run.data.metrics["sparse_file_bytes"] < run.data.metrics["dense_file_bytes"]


def test_trials_are_not_timed_and_the_front_is_timed_once_at_the_end(search):
    _, (first, second), client, runs, study = search
    for run in _role(runs, "prune", "s"):
        assert run.data.params["eval.timing"] == "off" and "eval_speedup" not in run.data.metrics
    search_run = _role(runs, "search")[0]
    assert search_run.data.tags["front_timing"] == "quick"
    front = sorted(t.number for t in study.best_trials)
    for name in ("front/eval_speedup", "front/latency_speedup"):
        history = client.get_metric_history(search_run.info.run_id, name)
        assert set(front) <= {m.step for m in history} and all(m.value > 0 for m in history)
    assert second.stdout.count("[search] front trial ") == len(front)


def test_optuna_dashboard_reads_the_study(search):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults

    tmp = search[0]
    app = optuna_dashboard.wsgi(f"sqlite:///{tmp}/optuna.db")
    environ = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    summaries = json.loads(body)["study_summaries"]
    assert status[0].startswith("200") and [(s["study_name"], s["directions"]) for s in summaries] == [
        ("s", ["maximize", "maximize"])]


def test_constrained_preset_maximises_sparsity_within_the_accuracy_budget(search, mlflow_client_for):
    tmp, _, client, runs, _ = search
    out = run_cli(["-m", "search=optuna_constrained", *TINY, *study_overrides(tmp, "c", 2),
                   "hydra.sweeper.n_jobs=2", "hydra.sweeper.max_accuracy_drop=0.05"], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp}/optuna.db")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE] and len(study.trials) == 2
    baseline = _role(runs, "train")[0].data.metrics["val_accuracy"]
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE and trial.values == [trial.user_attrs["sparsity"]]
        drop = baseline - trial.user_attrs["val_accuracy"]
        assert trial.user_attrs["baseline_val_accuracy"] == pytest.approx(baseline)
        assert trial.constraints == {"accuracy_drop": pytest.approx(drop - 0.05)}
    search_runs = _role(client.search_runs([runs[0].info.experiment_id], max_results=1000), "search")
    assert sorted(r.data.tags["study"] for r in search_runs) == ["c", "s"]


def test_nsgaii_sampler_samples_the_study(tmp_path, model_store):
    """``hydra.sweeper.sampler.name=nsgaii``: Optuna's NSGAIISampler sampled every trial (it marks each with its
    generation; the TPE sampler, the default, does not) and every trial completed."""
    seed_store(model_store, tmp_path, "tiny")
    out = run_cli([*SEARCH, *study_overrides(tmp_path, "nsga", 3), "hydra.sweeper.sampler.name=nsgaii",
                   "hydra.sweeper.front_timing=off"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="nsga", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [t.system_attrs.get("NSGAIISampler:generation") for t in study.trials] == [0, 0, 0]


def test_nsgaii_marks_are_not_there_with_the_default_sampler(search):
    """The contrast of the test above: the TPE study's trials carry no NSGA-II generation."""
    study = search[4]
    assert study.trials and all("NSGAIISampler:generation" not in t.system_attrs for t in study.trials)


# Trials on both sides of the accuracy budget: unpruned (no drop) or 95-99% of the last two hidden layers' units gone
CONSTRAINED_SPACE = ["prune=choice(none,unit)", "prune.layer_k.dense3=choice(95,99)",
                     "prune.layer_k.dense4=choice(95,99)"]


def test_constrained_search_keeps_infeasible_trials_off_the_pareto_front(tmp_path, model_store, mlflow_client_for):
    """``search=optuna_constrained`` with ``max_accuracy_drop=0.05``, feasible trials and sparser infeasible ones:
    pareto_front.csv (the search run's and the sweep folder's) lists feasible trials only, the sparsest feasible
    trial (study.best_trial) among them."""
    seed_store(model_store, tmp_path, "tiny")
    out = run_cli(["-m", "search=optuna_constrained", *TINY, *study_overrides(tmp_path, "front", 6), *CONSTRAINED_SPACE,
                   "hydra.sweeper.max_accuracy_drop=0.05", "hydra.sweeper.front_timing=off"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="front", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 6
    feasible = {t.number for t in study.trials if t.constraints["accuracy_drop"] <= 0}
    infeasible = {t.number for t in study.trials} - feasible
    assert feasible and infeasible, "the sampled trials do not straddle the budget: the test would show nothing"
    sparsity = {t.number: t.user_attrs["sparsity"] for t in study.trials}
    assert max(sparsity[n] for n in infeasible) > max(sparsity[n] for n in feasible)  # they would lead an open front
    client = mlflow_client_for(tmp_path)
    experiment_id = client.get_experiment_by_name("prunesweep").experiment_id
    [run] = client.search_runs([experiment_id], "tags.role = 'search' and tags.study = 'front'")
    logged = Path(client.download_artifacts(run.info.run_id, "pareto_front.csv", str(tmp_path / "dl")))
    for path in (logged, tmp_path / "multirun" / "report" / "pareto_front.csv"):
        front = {int(row["trial"]) for row in csv.DictReader(io.StringIO(path.read_text()))}
        assert front and front <= feasible, (path, front, feasible)
        assert study.best_trial.number in front


@pytest.mark.parametrize("override, setting", [
    ("hydra.sweeper.sampler.name=unknown", "hydra.sweeper.sampler.name"),
    ("hydra.sweeper.front_timing=fast", "hydra.sweeper.front_timing"),
    ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials"),
])
def test_bad_settings_exit_nonzero_with_one_line_naming_the_setting(tmp_path, override, setting):
    out = run_cli([*SEARCH, f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", override], tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {setting}=") and "[prune]" not in out.stdout  # no job ran
