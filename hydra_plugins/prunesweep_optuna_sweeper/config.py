"""Settings of the prunesweep Optuna sweeper (``hydra.sweeper.*``), registered as ``hydra/sweeper=prunesweep_optuna``.

No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module before it is in
``sys.modules``, where dataclasses and OmegaConf would look its string annotations up.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

SAMPLERS = ("tpe", "random", "nsgaii")
FRONT_TIMING = ("off", "quick", "full")  # src/engine/timing.py's levels (a copy: this module is scanned on every start)


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random | nsgaii
    seed: int | None = None  # offset by the study's trial count on resume, so trials are not repeated


@dataclass
class PrunesweepOptunaSweeperConf:
    _target_: str = "hydra_plugins.prunesweep_optuna_sweeper.optuna_sweeper.PrunesweepOptunaSweeper"
    n_trials: int = 20  # trials added per invocation (a resumed study grows by this many)
    n_jobs: int = 1  # trials asked and launched together as one launcher batch
    study_name: str = "prunesweep"
    storage: str | None = "sqlite:///mlruns/optuna.db"  # relative sqlite paths resolve against the cwd; null = memory
    sampler: SamplerConf = field(default_factory=SamplerConf)
    objectives: list[str] = field(default_factory=lambda: ["val_accuracy", "sparsity"])  # keys of the job's result
    directions: list[str] = field(default_factory=lambda: ["maximize", "maximize"])  # one per objective
    max_accuracy_drop: float | None = None  # constraint: val_accuracy >= unpruned val_accuracy - this
    front_timing: str = "quick"  # off | quick | full: time the Pareto front's models once, at the end of the study
    params: dict[str, str] | None = None  # search space, Hydra override grammar: interval(), range(), choice()


ConfigStore.instance().store(group="hydra/sweeper", name="prunesweep_optuna", node=PrunesweepOptunaSweeperConf,
                             provider="prunesweep_optuna_sweeper")
