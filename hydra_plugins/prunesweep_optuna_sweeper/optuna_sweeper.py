"""The Sweeper: check ``hydra.sweeper.*``, run ``n_trials`` more trials in launcher batches, report.

Each trial is one prunesweep job (a prune run in MLflow tagged ``study`` and ``trial``) launched by
the configured Hydra launcher with the command line's fixed overrides plus the trial's parameters.
Optuna, MLflow and Matplotlib are imported only when a search starts (``_study``, ``_tracking``),
so this module stays cheap for Hydra's plugin scan, which imports it on every start.
"""

import re
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from src.cli.config import ConfigError

from .config import FRONT_TIMING, SAMPLERS

STUDY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class PrunesweepOptunaSweeper(Sweeper):
    """Optuna ask/tell over Hydra jobs; settings are the fields of ``config.PrunesweepOptunaSweeperConf``."""

    def __init__(self, n_trials: int, n_jobs: int, study_name: str, storage: str | None, sampler: DictConfig,
                 objectives: list[str], directions: list[str], max_accuracy_drop: float | None,
                 params: DictConfig | None, front_timing: str = "quick") -> None:
        self.n_trials, self.n_jobs, self.study_name, self.storage = n_trials, n_jobs, study_name, storage
        self.sampler_name, self.seed = sampler.name, sampler.seed
        self.objectives, self.directions = list(objectives), [str(d).lower() for d in directions]
        self.max_accuracy_drop = max_accuracy_drop
        self.front_timing = front_timing
        self.params: dict[str, str] = OmegaConf.to_container(params) if params else {}
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def check_settings(self) -> None:
        """Raise ConfigError naming the first bad ``hydra.sweeper`` setting."""
        checks = [
            (self.n_trials >= 1, f"hydra.sweeper.n_trials={self.n_trials} is invalid: run at least 1 trial "
                                 "(each run of the command adds n_trials trials to the study)"),
            (self.n_jobs >= 1, f"hydra.sweeper.n_jobs={self.n_jobs} is invalid: launch at least 1 trial per batch"),
            (self.sampler_name in SAMPLERS,
             f"hydra.sweeper.sampler.name={self.sampler_name} is unknown: use {', '.join(SAMPLERS)}"),
            (bool(STUDY_NAME.match(self.study_name)), f"hydra.sweeper.study_name={self.study_name!r} is invalid: "
                                                      "use letters, digits, '_', '-' and '.' only"),
            (len(self.objectives) >= 1, "hydra.sweeper.objectives is empty: name at least one metric, e.g. [sparsity]"),
            (len(self.directions) == len(self.objectives),
             f"hydra.sweeper.directions={self.directions} must give one direction per objective {self.objectives}"),
            (all(d in ("maximize", "minimize") for d in self.directions),
             f"hydra.sweeper.directions={self.directions} is invalid: each is maximize or minimize"),
            (self.max_accuracy_drop is None or self.max_accuracy_drop >= 0,
             f"hydra.sweeper.max_accuracy_drop={self.max_accuracy_drop} is invalid: an accuracy drop >= 0 "
             "(fraction, e.g. 0.01) or null"),
            (self.front_timing in FRONT_TIMING,
             f"hydra.sweeper.front_timing={self.front_timing} is unknown: use off, quick (default) or full"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def sweep(self, arguments: list[str]) -> None:
        """Add ``n_trials`` trials to the study, then log its report; a bad setting (or tracking store)
        ends the process with one ``error: <setting> ...`` line on stderr and exit code 2."""
        from src.store.uri import TrackingError

        try:
            self.check_settings()
            self.run_study(arguments)
        except (ConfigError, TrackingError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    def pruned_layer_names(self) -> list[str]:
        """The composed model's pruned layers by name (for ``prune.layer_k.*``): all weighted layers but the
        logits one, which only ``prune.prune_last=true`` adds."""
        from src.cli.model_checks import output_layer_names, weighted_layer_names

        names, outputs = weighted_layer_names(self.config.model), output_layer_names(self.config.model)
        return names if self.config.prune.prune_last else [n for n in names if n not in outputs]

    def run_study(self, arguments: list[str]) -> None:
        """Open (or resume) the study, run its trials in batches of ``n_jobs``, log the report."""
        from src.store.tracking import resolve_uri

        from . import _study, _tracking

        space, fixed = _study.search_space(self.params, arguments, self.pruned_layer_names())
        storage = resolve_uri(self.storage, Path.cwd()) if self.storage else None
        client, experiment_id = _tracking.connect(self.config)
        study = _study.open_study(storage, self.study_name, self.sampler_name, self.seed, self.objectives,
                                  self.directions, self.max_accuracy_drop)
        print(f"[search] study '{self.study_name}' ({_tracking.storage_tag(storage)}): {len(study.trials)} trials "
              f"so far, adding {self.n_trials} with sampler {self.sampler_name}; searching {sorted(space)}")
        tags = {"optuna_storage": _tracking.storage_tag(storage), "sampler": self.sampler_name,
                "objectives": ",".join(self.objectives), "directions": ",".join(self.directions),
                "max_accuracy_drop": str(self.max_accuracy_drop), "hydra_overrides": " ".join(arguments)}
        search_run = _tracking.open_search_run(client, experiment_id, self.study_name, tags)
        try:
            remaining = self.n_trials
            while remaining > 0:
                trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
                self.run_batch(study, trials, fixed, client)
                _tracking.log_front_progress(client, search_run, study)
                remaining -= len(trials)
            run_id, front = _tracking.report_study(client, experiment_id, search_run, study, self.max_accuracy_drop,
                                                   tags, self.front_timing, self.config.eval,
                                                   Path(str(self.config.hydra.sweep.dir)) / "report")
        except BaseException as e:  # the search run never stays RUNNING
            from src.store import open_runs

            open_runs.close(client, search_run, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        n_complete = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
        feasible = " feasible" if self.max_accuracy_drop is not None else ""
        sparsest = (f"; sparsest: trial {front[-1].trial} (sparsity {front[-1].sparsity:.4f}, val_accuracy "
                    f"{front[-1].val_accuracy:.4f})" if front else "")
        print(f"[search] study '{self.study_name}': {n_complete} complete trials, {len(front)}{feasible} on the Pareto "
              f"front{sparsest}; pareto_front.png/.csv in MLflow run {run_id}")

    def run_batch(self, study: Any, trials: list[Any], fixed: list[str], client: Any) -> None:
        """Launch one job per asked trial as one launcher batch (job number = trial number), then tell
        every result. A failed job FAILs its trial; once the batch is told, its error stops the search."""
        from optuna.trial import TrialState

        from . import _study, _tracking

        batch = []
        for trial in trials:
            overrides = [*fixed, *_study.job_overrides(trial.params), f"++run_tags.study={self.study_name}",
                         f"++run_tags.trial={trial.number}"]
            trial.set_user_attr("overrides", " ".join(overrides))
            batch.append(overrides)
        try:
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
        except BaseException:  # interrupted, or a job ended the process (sys.exit): no trial stays RUNNING
            for trial in trials:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        errors = []
        for trial, job in zip(trials, returns, strict=True):
            try:
                result = job.return_value  # re-raises the job's exception if it failed
                baseline = (_tracking.unpruned_val_accuracy(client, result["run_id"])
                            if self.max_accuracy_drop is not None else None)
                told = _study.tell_result(study, trial, result, self.objectives, self.max_accuracy_drop, baseline)
                values = ", ".join(f"{n}={v:.4f}" for n, v in zip(self.objectives, told.values or [], strict=False))
                if self.max_accuracy_drop is not None:
                    drop = told.user_attrs["accuracy_drop"]
                    values += (f", val_accuracy drop {drop:.4f} "
                               f"{'<=' if drop <= self.max_accuracy_drop else '>'} {self.max_accuracy_drop:g}")
                print(f"[trial {trial.number}] {told.state.name} {values}")
            except Exception as e:  # noqa: BLE001 - recorded on the trial, re-raised below
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                errors.append(e)
        if errors:
            raise errors[0]
