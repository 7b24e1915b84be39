"""Hydra entry point: ``python -m src.run [-m] key=value ...``. Thin: compose, run one job, report errors.

Bad settings, data or tracking stores end the process with one line on stderr and exit code 2; Ctrl-C and
SIGTERM with one line and exit code 130 / 143 (src/cli/interrupt.py).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ chatter out of the logs
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.cli import interrupt  # noqa: E402
from src.cli.config import ConfigError, register_configs  # noqa: E402
from src.cli.errors import preflight, run_cli  # noqa: E402
from src.cli.native_stderr import quiet_tensorflow_import  # noqa: E402
from src.cli.sweep import SweepJob, sweep_id_for, write_result  # noqa: E402
from src.store.open_runs import kill_all as kill_open_runs  # noqa: E402
from src.store.uri import TrackingError  # noqa: E402
from src.training.data import DataError  # noqa: E402
from src.training.keras_file import KerasFileError  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Run one job; return its metrics (val_accuracy, sparsity, ...) for sweepers to optimise."""
    interrupt.raise_if_received()  # a signal whose first raise was swallowed stops the sweep here
    started = time.time()
    hydra_cfg = HydraConfig.get()
    sweep = (SweepJob(sweep_id_for(hydra_cfg.sweep.dir), str(hydra_cfg.sweep.dir), int(hydra_cfg.job.num))
             if hydra_cfg.mode == RunMode.MULTIRUN else None)
    try:
        preflight(cfg)  # bad settings or an unreachable store fail here, before TensorFlow is imported
        from src.job import run_job  # imported here so --help and config errors stay fast

        result = run_job(cfg, list(hydra_cfg.overrides.task), sweep)
    except (ConfigError, DataError, TrackingError, KerasFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        if sweep is not None and not isinstance(e, TrackingError):  # an unreachable store takes no event either
            from src.report.sweep_live import job_exited

            job_exited(sweep, time.time() - started)  # Hydra calls no on_job_end for a job that exits
        sys.exit(2)
    write_result(hydra_cfg.runtime.output_dir, result)
    return result


if __name__ == "__main__":
    quiet_tensorflow_import()  # TensorFlow's start-up lines, when a job first imports Keras
    interrupt.install()
    interrupt.on_stop(kill_open_runs, first=True)  # close this process's runs before the report reads the store
    try:
        run_cli(main)  # Hydra's composition errors (lr=abc, prune=magic) as one line too
    except KeyboardInterrupt as ex:
        sys.exit(interrupt.stop(ex))
    except BrokenPipeError:  # the reader went away (python -m src.run --help | head): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
