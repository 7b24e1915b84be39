"""What a prune job on a graph model costs (a model only Keras runs: src/records/graph_prune), in dense Keras
test-set evaluations.

Usage:
    python benchmarks/graph_job_bench.py --store /tmp/graph-store [--repo PATH]
        [--models resnet,transformer,mobilenetv2] [--ks 50,70,90] [--fresh-k 80] [--fresh 1] [--rounds 1]
        [--train-images 5000] [--phase-shim] [--zoo PATH]

For each model of the zoo (``tests/zoo.py``, or ``--zoo``): builds it and trains it one epoch on the first
``--train-images`` MNIST training images (``zoo.build_trained``, seed 0; in a subprocess, once: the file is kept in
``STORE/models/<name>-<images>.keras`` and reused), registers it in the store once (``prune=none
eval.timing=off``, so every measured job finds a cached model), then runs the real CLI in ``--repo``
(default: this checkout):

    python -m src.run -m model=keras model.path=STORE/models/<name>-5000.keras model.trained=true prune=weight
        'prune.k=50,70,90' data.train_size=5000 tracking.force=true tracking.uri=sqlite:///STORE/mlflow.db
        tracking.artifact_root=STORE/artifacts hydra.sweep.dir=STORE/multirun/<stamp>-<name>

on the full test set (10,000 images; ``data.train_size`` keeps the validation split at 500 images) at the default
timing level, ``--rounds`` times (each a new process). Each job's seconds are read from its Hydra job folder
(``.hydra/overrides.yaml`` written as it starts, ``result.json`` as it ends), as benchmarks/harness_bench.py reads
them for the README's cost table; the unit is the job's ``dense_eval_ms`` (Keras's forward pass of the pruned model
over the test set, median of ``eval.repeats``; the median over the model's jobs). Per model: the median of the jobs
after the first, the first job (its process imports Keras and loads the model: in the config checks, before the
job's own clock starts), the sweep's wall time, then ``--fresh`` single jobs, a fresh process each (``python -m
src.run model=keras ... prune.k=80``), timed by wall clock from outside. The phase table gives the median
``job_seconds/<phase>`` of the first and of the later jobs, with the job's own clock (``total``: logged, else its
``[prune] ... in X s`` line) and its Hydra folder's seconds.

Code that does not log ``job_seconds/<phase>`` for graph jobs gives no phase table; ``--phase-shim`` adds, per
round, one more sweep of the same jobs through a wrapper that runs the same CLI in-process (``runpy``) and,
after each graph job, logs the job's PhaseClock as src/job.py logs it for chain jobs (after the clock is read:
the job's own seconds are not changed). Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from benchmarks.sparse_bench import machine_header  # noqa: E402

MODELS = "resnet,transformer,mobilenetv2"
PHASES = ("connect", "data", "model", "prune", "evaluate", "retrain", "timing", "log", "total", "job folder")
JOB_LINE = re.compile(r"^\[prune\] .* in ([0-9.]+) s", re.MULTILINE)
TRAIN = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("zoo", {zoo!r})
zoo = importlib.util.module_from_spec(spec); spec.loader.exec_module(zoo)
x, y, _, _ = zoo.mnist(n_train={n}, n_test=0)
model = zoo.build_trained({name!r}, {path!r}, x, y, epochs=1)
print(json.dumps({{"params": int(model.count_params())}}))
"""
# Runs ``python -m src.run ARGS`` in this process after wrapping src.job.prune_and_log: a graph job's PhaseClock
# is logged to its prune run as job_seconds/<phase> (what src/job.py does for chain jobs), if the code did not.
SHIM = """
import runpy, sys
from mlflow.entities import Metric
import src.job as J
from src.records.prune_run import now_ms
from src.training.keras_file import graph_reason
inner = J.prune_and_log
def prune_and_log(cfg, splits, ctx, run_id, model_path, train_run_id, clock):
    result = inner(cfg, splits, ctx, run_id, model_path, train_run_id, clock)
    seconds = clock.metrics()
    if graph_reason(model_path) is not None and "job_seconds/total" not in ctx.client.get_run(run_id).data.metrics:
        step = cfg.prune.finetune.epochs if cfg.prune.schedule != "oneshot" else 0
        ctx.client.log_batch(run_id, metrics=[Metric(n, v, now_ms(), step) for n, v in seconds.items()])
    return result
J.prune_and_log = prune_and_log
sys.argv = ["src/run.py", *sys.argv[1:]]
runpy.run_module("src.run", run_name="__main__", alter_sys=True)
"""


def store_args(store: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{store}/mlflow.db", f"tracking.artifact_root={store}/artifacts"]


def cli(repo: Path, args: list[str], shim: bool = False) -> tuple[float, str]:
    """Run the CLI in ``repo`` (``python -m src.run ARGS``, or through SHIM); (wall seconds, stdout)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, *(["-c", SHIM] if shim else ["-m", "src.run"]), *args]
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(args)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def trained_file(store: Path, name: str, zoo: Path, n: int) -> tuple[Path, dict]:
    """The zoo model ``name`` trained one epoch on ``n`` images, as a .keras file in the store (made once)."""
    path = store / "models" / f"{name}-{n}.keras"
    info = path.with_suffix(".json")
    if not path.is_file() or not info.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", TRAIN.format(zoo=str(zoo), n=n, name=name, path=str(path))],
                             cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if out.returncode != 0:
            raise SystemExit(f"training {name} failed:\n{out.stderr[-3000:]}")
        found = json.loads(out.stdout.strip().splitlines()[-1])
        info.write_text(json.dumps({**found, "train_seconds": time.perf_counter() - started}))
    return path, json.loads(info.read_text())


def folder_seconds(folder: Path) -> float:
    """A Hydra job's wall seconds: from its ``.hydra/overrides.yaml`` (written as it starts) to its ``result.json``
    (as it ends), as benchmarks/harness_bench.py reads them."""
    return (folder / "result.json").stat().st_mtime - (folder / ".hydra" / "overrides.yaml").stat().st_mtime


def jobs_of(client, folder: Path, stdout: str) -> list[dict]:
    """Each job of the multirun in ``folder``, in job order: its wall seconds (Hydra job folder), its own seconds
    (the PhaseClock's: ``job_seconds/total``, else its ``[prune]`` line), its phases and its prune run's metrics."""
    lines = [float(s) for s in JOB_LINE.findall(stdout)]
    results = sorted(folder.glob("*/result.json"), key=lambda p: int(p.parent.name))
    jobs = []
    for i, result in enumerate(results):
        run = client.get_run(json.loads(result.read_text())["run_id"])
        metrics = run.data.metrics
        phases = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("job_seconds/")}
        clock = phases.pop("total", None)
        jobs.append({"wall": folder_seconds(result.parent), "logged": clock is not None,
                     "seconds": clock if clock is not None else lines[i], "phases": phases,
                     "dense_eval_ms": metrics.get("dense_eval_ms", float("nan")),
                     "test_accuracy": metrics.get("test_accuracy", float("nan")),
                     "engine": run.data.params.get("eval.engine_used", "?")})
    return jobs


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose CLI runs (default: this one)")
    parser.add_argument("--models", default=MODELS, help="zoo models, comma-separated (default %(default)s)")
    parser.add_argument("--ks", default="50,70,90", help="the sweep's prune.k values")
    parser.add_argument("--fresh-k", default="80", help="prune.k of the fresh single jobs")
    parser.add_argument("--fresh", type=int, default=1, help="fresh single jobs per model (median)")
    parser.add_argument("--rounds", type=int, default=1, help="sweeps per model, each a new process")
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--phase-shim", action="store_true",
                        help="also one sweep per round through the wrapper that logs job_seconds/<phase>")
    parser.add_argument("--zoo", type=Path, default=ROOT / "tests" / "zoo.py")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    store, repo = args.store.resolve(), args.repo.resolve()
    store.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    common = [f"data.train_size={args.train_images}", "tracking.force=true", *store_args(store)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    load = [Path("/proc/loadavg").read_text().split()[:3]]
    rows, phase_rows, details = [], [], []
    for name in args.models.split(","):
        path, info = trained_file(store, name, args.zoo.resolve(), args.train_images)
        model = ["model=keras", f"model.path={path}", "model.trained=true"]
        cli(repo, [*model, "prune=none", "eval.timing=off", *common,  # the train run: cached for every job below
                   f"hydra.run.dir={store}/outputs/{stamp}-{name}-register"])
        jobs, walls, shimmed = [], [], []
        for r in range(args.rounds):
            for shim in (False, True) if args.phase_shim else (False,):
                folder = store / "multirun" / f"{stamp}-{name}-{r}{'-shim' if shim else ''}"
                wall, out = cli(repo, ["-m", *model, "prune=weight", f"prune.k={args.ks}", *common,
                                       f"hydra.sweep.dir={folder}"], shim=shim)
                (shimmed if shim else jobs).append(jobs_of(client, folder, out))
                if not shim:
                    walls.append(wall)
        fresh, fresh_jobs = [], []
        for i in range(args.fresh):
            folder = store / "outputs" / f"{stamp}-{name}-fresh{i}"
            wall, out = cli(repo, [*model, "prune=weight", f"prune.k={args.fresh_k}", *common,
                                   f"hydra.run.dir={folder}"])
            fresh.append(wall)
            fresh_jobs.append(float(JOB_LINE.findall(out)[-1]))
        load.append(Path("/proc/loadavg").read_text().split()[:3])
        first = [sweep[0]["wall"] for sweep in jobs]
        later = [job["wall"] for sweep in jobs for job in sweep[1:]]
        dense = median([job["dense_eval_ms"] for sweep in jobs for job in sweep])
        unit = dense / 1e3
        accuracies = ", ".join(f"{100 * j['test_accuracy']:.1f}" for j in jobs[0])
        rows.append(f"| {name} ({info['params']:,} params) | {jobs[0][0]['engine']} | {dense:.0f} | "
                    f"{median(later):.2f} s = **{median(later) / unit:.1f}x** | {median(first):.2f} s = "
                    f"{median(first) / unit:.1f}x | {median(fresh):.2f} s = **{median(fresh) / unit:.1f}x** | "
                    f"{median(walls):.1f} s | {accuracies} |")
        logged = all(job["logged"] for sweep in jobs for job in sweep)
        for label, sweeps in (("CLI", jobs if logged else []), ("shim", shimmed)):
            for which, picked in (("first", [s[0] for s in sweeps]), ("later", [j for s in sweeps for j in s[1:]])):
                if picked:
                    medians = {p: median([job["phases"].get(p, 0.0) for job in picked])
                               for p in {p for job in picked for p in job["phases"]}}
                    medians["total"] = median([job["seconds"] for job in picked])
                    medians["job folder"] = median([job["wall"] for job in picked])
                    phase_rows.append((name, f"{which} ({len(picked)}, {label})", unit, medians))
        details.append(f"- {name}: {info['params']:,} params, trained in {info['train_seconds']:.0f} s (1 epoch, "
                       f"{args.train_images} images); per sweep (first job, later jobs), job folder / own clock s: "
                       + "; ".join(", ".join(f"{j['wall']:.2f} / {j['seconds']:.2f}" for j in sweep) for sweep in jobs)
                       + "; dense_eval_ms per job: "
                       + "; ".join(", ".join(f"{j['dense_eval_ms']:.0f}" for j in sweep) for sweep in jobs)
                       + f"; job_seconds/total logged by the code: {'yes' if logged else 'no'}"
                       + "; fresh process wall / its job's own clock: "
                       + ", ".join(f"{w:.2f} / {j:.2f} s" for w, j in zip(fresh, fresh_jobs, strict=True)))
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"### Graph-model jobs, commit {commit} ({time.strftime('%Y-%m-%d %H:%M')}; "
          f"{time.perf_counter() - started:.0f} s in all)\n")
    print("\n".join(machine_header()))
    print(f"- load average at the start and after each model: {', '.join('/'.join(v) for v in load)}")
    print(f"- sweep: prune=weight prune.k={args.ks}, default timing, data.train_size={args.train_images} "
          f"(test set: 10,000 images), {args.rounds} round(s); fresh: prune.k={args.fresh_k}, {args.fresh} each\n")
    print("| model | engine | dense_eval_ms (Keras, test set) | job on a cached model: later jobs, median | "
          "first job of the process | fresh process (wall, from outside) | sweep wall | test acc % per k |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    if phase_rows:
        found = {p for *_, medians in phase_rows for p in medians}
        names = [p for p in PHASES if p in found] + sorted(found - set(PHASES))
        print("\nPhases (median seconds per job, and in dense_eval_ms of the model; total: the job's own clock, "
              "job folder: its Hydra folder, which also holds the config checks before the clock starts):\n")
        print(f"| model | jobs | {' | '.join(names)} |\n|---|---|{'---:|' * len(names)}")
        for name, which, unit, medians in phase_rows:
            cells = [f"{medians[p]:.2f} ({medians[p] / unit:.1f}x)" if p in medians else "" for p in names]
            print(f"| {name} | {which} | {' | '.join(cells)} |")
    else:
        print("\nNo phase table: the code logs no job_seconds/<phase> for graph jobs (--phase-shim measures them).")
    print("\n" + "\n".join(details))


if __name__ == "__main__":
    main()
