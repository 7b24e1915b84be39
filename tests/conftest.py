"""Shared helpers: run the real CLI in a subprocess against a throwaway MLflow store, and a session store of
tiny trained models that tests copy, so their jobs reuse a model instead of importing TensorFlow and training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=1", "data.train_size=1000", "data.test_size=300", "eval.repeats=2", "eval.warmup=1",
        "eval.settle_s=0"]  # timings are not asserted: no settle time


def pytest_configure(config) -> None:
    """Every test and every CLI process it starts reads one calibration of ``auto``'s thresholds, seeded with fixed
    values, so engine choices do not depend on the machine or on a calibration timed under the suite's
    load (tests/engine/test_calibration.py measures one for real). The user's own cache, wherever
    PRUNESWEEP_CACHE_DIR points, is neither read nor written."""
    if os.environ.get("PRUNESWEEP_SUITE_CACHE"):  # set by the controller: a worker or a CLI process of the suite
        return
    import json
    import tempfile

    from src.engine import calibration
    folder = Path(tempfile.mkdtemp(prefix="prunesweep-cache-"))
    fixed = {str(b): 0.30 if b == 1 else 0.50 for b in calibration.BATCHES}  # the AMD host's rule: scatter to 30%
    entry = {"max_density": fixed, "measured": "fixed by the suite"}  # at batch 1, csr to 50% from batch 8
    (folder / "engine_calibration.json").write_text(json.dumps(
        {"format": calibration.FORMAT, "cpus": {calibration.cpu_key(): entry}}))
    os.environ["PRUNESWEEP_CACHE_DIR"] = os.environ["PRUNESWEEP_SUITE_CACHE"] = str(folder)


BLOCKED_FRAMEWORKS = ("tensorflow", "keras", "hydra", "mlflow", "omegaconf", "h5py")


def run_without_frameworks(body: str) -> list[str]:
    """Run the Python ``body`` in a subprocess (cwd: the project) where importing any of BLOCKED_FRAMEWORKS raises;
    assert it exited 0 and imported none of them; return its stdout, split on whitespace. What the sparse runtime's
    loader promises: numpy, numba and src/engine alone."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED_FRAMEWORKS!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
    """) + textwrap.dedent(body) + textwrap.dedent(f"""
        print(sorted({{m.split(".")[0] for m in sys.modules}} & set({BLOCKED_FRAMEWORKS!r})))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert done.returncode == 0, done.stderr[-2000:]
    *printed, imported = done.stdout.splitlines()
    assert imported == "[]", imported
    return " ".join(printed).split()

def store_overrides(tmp: Path, sweep_dir: Path | None = None) -> list[str]:
    """The settings that point a CLI run at the throwaway store in ``tmp`` (multiruns into ``sweep_dir``, default
    ``tmp/multirun``)."""
    return [f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_root={tmp}/artifacts",
            f"hydra.sweep.dir={sweep_dir or f'{tmp}/multirun'}", f"hydra.run.dir={tmp}/outputs"]


def run_cli(args: list[str], tmp: Path, timeout: float = 600, sweep_dir: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m src.run *args`` against the store in ``tmp``; ``env``: extra environment variables."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0", "RAY_USAGE_STATS_ENABLED": "0",
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "src.run", *args, *store_overrides(tmp, sweep_dir)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def cases(folder: Path, common: list[str], jobs: dict[str, list[str]]) -> list[str]:
    """The CLI arguments that run ``jobs`` ({name: that job's own overrides, as on the command line}) as one multirun
    with the ``common`` arguments: each job is written into ``folder`` as an option of a config group ``case`` (a
    group choice like ``prune=unit`` as a defaults override, every other setting as a value) and the sweep runs
    ``+case=<every name>``. Jobs whose settings differ in more than one swept dimension so share one CLI process
    (one TensorFlow import, one report). A command-line setting would win over a case's: a key in both is refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    groups = {p.name for p in (PROJECT / "conf").iterdir() if p.is_dir()}
    parser = OverridesParser.create()  # Hydra's own reading of a value: eval.timing=off is "off", not YAML's False
    (folder / "case").mkdir(parents=True, exist_ok=True)
    given = {o.key_or_group for o in parser.parse_overrides([a for a in common if not a.startswith("-")])}
    for name, overrides in jobs.items():
        if both := given & {o.key_or_group for o in parser.parse_overrides(overrides)}:
            raise ValueError(f"case {name} sets {sorted(both)}, which the common arguments set too")
        case = OmegaConf.create({"defaults": []})
        for override in parser.parse_overrides(overrides):
            if override.key_or_group in groups:
                case.defaults.append({f"override /{override.key_or_group}": override.value()})
            else:
                OmegaConf.update(case, override.key_or_group, override.value(), merge=False, force_add=True)
        (folder / "case" / f"{name}.yaml").write_text("# @package _global_\n" + OmegaConf.to_yaml(case))
    return [*common, f"hydra.searchpath=[file://{folder}]", "+case=" + ",".join(jobs)]


def finished_sweep(args: list[str], tmp: Path, client_for,
                   timeout: float = 600) -> tuple[subprocess.CompletedProcess, object, str]:
    """Run the CLI with ``args`` against the store in ``tmp`` (at most ``timeout`` s); assert it succeeded; return
    (result, MLflow client of that store, id of experiment 'prunesweep')."""
    result = run_cli(args, tmp, timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(tmp)
    return result, client, client.get_experiment_by_name("prunesweep").experiment_id


@pytest.fixture(scope="session")
def mlflow_client_for():
    from mlflow.tracking import MlflowClient

    def make(tmp: Path) -> MlflowClient:
        return MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")

    return make


# Tiny models trained once per session (in-process) into one store, each the first time a test asks for it; tests
# copy that store with seed_store. A test job finds its model by passing TINY and the model's overrides. "trained":
# 6 epochs instead of 1, enough for its weights' magnitudes to mean something (magnitude pruning beats random
# there: tests/test_outcomes.py). "lenet": a LeNet-5 of 4 and 8 filters and 32 hidden units, 6 epochs (the quantized
# runs of tests/records/test_quantize_run.py).
MODELS = {"tiny": [], "tiny_s1": ["train.seed=1"], "small": ["model.hidden=[64,32]"], "soak": ["model.hidden=[32,16]"],
          "trained": ["train.epochs=6"],
          "lenet": ["model=lenet5", "model.conv=[4,8]", "model.hidden=[32]", "train.epochs=6"]}


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(store folder, {model name: train run id}) of the MODELS trained so far on TINY's data (no other run): a
    model is trained the first time seed_store asks for it, so a worker trains only the models its tests use."""
    return tmp_path_factory.mktemp("model-store"), {}


def _train(folder: Path, name: str) -> str:
    """Train MODELS[name] in-process into the store in ``folder``; return its train run's id."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from src.cli.config import register_configs
    from src.job import run_job

    register_configs()
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TINY, "prune=none", "eval.timing=off", "train.verbose=0",
                                                       *MODELS[name], f"tracking.uri=sqlite:///{folder}/mlflow.db",
                                                       f"tracking.artifact_root={folder}/artifacts"])
    prune_run = client.get_run(run_job(cfg, [])["run_id"])
    client.delete_run(prune_run.info.run_id)
    return prune_run.data.tags["mlflow.parentRunId"]


def seed_store(model_store: tuple[Path, dict[str, str]], tmp: Path, *names: str) -> None:
    """Make ``tmp``'s store a copy of the session's model store holding only the models ``names`` (trained there
    first if they are not yet; their files stay in the session store's artifact folder, where the copied
    experiment points)."""
    from mlflow.tracking import MlflowClient

    folder, train_runs = model_store
    for name in names:
        if name not in train_runs:
            train_runs[name] = _train(folder, name)
    shutil.copy(folder / "mlflow.db", tmp / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    for name, run_id in train_runs.items():
        if name not in names:
            client.delete_run(run_id)
