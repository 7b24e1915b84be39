"""Benchmark of the harness itself: what a prune job, a search trial and a fresh process cost.

Usage:
    python benchmarks/harness_bench.py --store /tmp/bench-store [--repo PATH] [--label after]
        [--grid-ks 0,25,50,60,70,80,90,95,97,99] [--trials 100] [--fresh 3] [--skip grid,off,search,fresh]
    python benchmarks/harness_bench.py --store /tmp/bench-store --noise 10
    python benchmarks/harness_bench.py --store /tmp/bench-store --baseline /tmp/old --rounds 4 [--grid-ks 0,50,90,99]

Everything runs through the real CLI (``python -m src.run`` in ``--repo``, default: this checkout) against
the MLflow store in ``--store``, on the full MNIST models of ``experiment=seed`` at 10 epochs and one seed
(``SEED10``: lr 1e-5 and 1e-3; the preset itself is the 50-epoch, 3-seed study), which are trained there first
if missing (they are cached, so later runs of this script reuse them). So the same script measures any commit:
``git worktree add /tmp/old <rev>`` and ``--repo /tmp/old`` gives "before".

Rows (median wall seconds per job, read from each Hydra job folder: ``.hydra/overrides.yaml`` is written when
the job starts, ``result.json`` when it ends):
- grid job: the seed grid's prune jobs (``SEED10``, ``tracking.force=true`` so nothing is skipped) at
  the default timing level, as one multirun; its total wall time is the "40 jobs" row when all ks are given;
- grid job, timing off: the same with ``eval.timing=off``;
- search trial: ``search=optuna`` with ``--trials`` trials (a new study each time), total wall time too;
- fresh single job: ``python -m src.run prune=weight prune.k=90 tracking.force=true`` from a new process.
Each row is also divided by ``dense_eval_ms``: one dense numpy evaluation of the full test set (10,000 images)
with the lr 1e-3 model, median of 7 calls timed in this process just before and after the rows are run (the
machine's speed drifts by 10-50% with load; the ratio is what the targets are stated in). Where the code logs
per-phase times (metrics ``job_seconds/<phase>`` on its prune runs) their medians are printed too.

``--baseline PATH`` (with ``--rounds N``) instead times the grid, search and fresh rows for the checkout in ``PATH``
("before") and ``--repo`` ("after") alternately, in N rounds of order ABBA: each round one grid multirun, a search
of ``--trials``/N trials and one fresh job per checkout, and a dense evaluation at its start. On a machine others
use too, load drifts by 2-4x within minutes; alternating gives both checkouts the same drift. Each row is the
median over all rounds, divided by the median dense evaluation of the same rounds.

``--noise N`` instead times the lr 1e-3 model pruned (weight k=90 and 99, unit k=90) N times at each timing
level in this process (src/engine/evaluation.time_evaluation, as a prune job does) and prints the spread of the
speedups each level gives (min, median, max, coefficient of variation) and what one timing costs.
Output: Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.engine.dense import forward_dense  # noqa: E402
from src.training.data import load_mnist  # noqa: E402
from src.training.keras_file import read_dense_weights  # noqa: E402

GRID_KS = "0,25,50,60,70,80,90,95,97,99"
SEED10 = ["experiment=seed", "train.epochs=10", "train.seed=0"]  # the classic grid on the 10-epoch, seed-0 models


def cli(repo: Path, store: Path, args: list[str], sweep_dir: Path) -> float:
    """Run ``python -m src.run ARGS`` in ``repo`` against ``store``; return its wall seconds (raise on failure)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "src.run", *args, f"tracking.uri=sqlite:///{store}/mlflow.db",
           f"tracking.artifact_root={store}/artifacts", f"hydra.sweep.dir={sweep_dir}",
           f"hydra.run.dir={sweep_dir}"]
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(args)}\n{out.stderr[-3000:]}")
    return wall


def job_seconds(folder: Path) -> list[float]:
    """Wall seconds of each finished Hydra job below ``folder`` (start: overrides.yaml, end: result.json)."""
    times = []
    for overrides in folder.glob("**/.hydra/overrides.yaml"):
        result = overrides.parent.parent / "result.json"
        if result.is_file():
            times.append(result.stat().st_mtime - overrides.stat().st_mtime)
    return times


def run_ids(folder: Path) -> list[str]:
    return [json.loads(p.read_text()).get("run_id", "") for p in folder.glob("**/result.json")]


def phase_medians(store: Path, ids: list[str]) -> dict[str, float]:
    """Median of each ``job_seconds/<phase>`` metric over the given prune runs (empty for code without them)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    values: dict[str, list[float]] = {}
    for run_id in filter(None, ids):
        for name, value in client.get_run(run_id).data.metrics.items():
            if name.startswith("job_seconds/"):
                values.setdefault(name.split("/", 1)[1], []).append(value)
    return {name: statistics.median(v) for name, v in sorted(values.items())}


def trained_model_path(store: Path, lr: str) -> Path:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("prunesweep")
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'train' and attributes.status = 'FINISHED' "
                              f"and params.lr = '{lr}' and params.`train.epochs` = '10'")
    if not runs:
        raise SystemExit(f"no trained lr={lr} model in {store}")
    return Path(client.download_artifacts(runs[0].info.run_id, "model/model.keras", tempfile.mkdtemp()))


def dense_eval_ms(model: Path, repeats: int = 7) -> float:
    """Median ms of one dense numpy forward pass of the whole test set (10,000 images)."""
    kernels, biases = read_dense_weights(model)
    x = load_mnist()[0][2].reshape(10000, -1).astype(np.float32) * np.float32(1 / 255)
    forward_dense(kernels, biases, x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward_dense(kernels, biases, x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def noise(model: Path, n: int) -> None:
    """Spread of the logged speedups over ``n`` repeated timings per level (see the module docstring)."""
    from src.engine.evaluation import time_evaluation
    from src.engine.timing import SETTLE_S
    from src.pruning import masks as M
    from src.training.data import as_inputs

    kernels, biases = read_dense_weights(model)
    x = as_inputs(load_mnist()[0][2])
    print("| level | net | eval_speedup min / median / max (cv) | latency_speedup min / median / max (cv) "
          "| seconds per timing |\n|---|---|---|---|---:|")
    for method, k in (("weight", 90), ("weight", 99), ("unit", 90)):
        pk, pb = M.apply_masks(kernels, biases, M.layer_masks(kernels, method, k), method)
        for level in ("quick", "full"):
            speedups: dict[str, list[float]] = {"eval_speedup": [], "latency_speedup": []}
            seconds = []
            for _ in range(n):
                t0 = time.perf_counter()
                timed = time_evaluation(pk, pb, x, level, "auto", 7, 2, SETTLE_S)
                seconds.append(time.perf_counter() - t0)
                for name, values in speedups.items():
                    values.append(timed.metrics[name])
            cells = [f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f} "
                     f"({statistics.pstdev(v) / statistics.mean(v):.0%})" for v in speedups.values()]
            print(f"| {level} | {method} k={k} | {' | '.join(cells)} | {statistics.median(seconds):.2f} |")


def alternate(repos: dict[str, Path], store: Path, model: Path, work: Path, args: argparse.Namespace,
              skip: set[str]) -> None:
    """The ``--baseline`` mode (module docstring): per row, median seconds of each checkout and their ratios."""
    seconds: dict[str, dict[str, list[float]]] = {label: {"grid": [], "search": [], "fresh": []} for label in repos}
    dense = []
    for r in range(args.rounds):
        dense.append(dense_eval_ms(model))
        for label in (list(repos) if r % 2 == 0 else list(repos)[::-1]):
            repo, tag = repos[label], f"{label}-{r}"
            if "grid" not in skip:
                folder = work / f"grid-{tag}"
                cli(repo, store, ["-m", *SEED10, f"prune.k={args.grid_ks}", "tracking.force=true"], folder)
                seconds[label]["grid"] += job_seconds(folder)
            if "search" not in skip:
                folder = work / f"search-{tag}"
                cli(repo, store, ["-m", "search=optuna", f"hydra.sweeper.n_trials={max(args.trials // args.rounds, 1)}",
                                  f"hydra.sweeper.study_name=bench-{tag}-{int(time.time())}"], folder)
                seconds[label]["search"] += job_seconds(folder)
            if "fresh" not in skip:
                seconds[label]["fresh"].append(cli(repo, store, ["prune=weight", "prune.k=90", "tracking.force=true"],
                                                   work / f"fresh-{tag}"))
    dense.append(dense_eval_ms(model))
    dense_ms = statistics.median(dense)
    commits = {label: subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() for label, repo in repos.items()}
    print(f"### Harness benchmark, {' vs '.join(f'{k} {v}' for k, v in commits.items())}, alternated in "
          f"{args.rounds} rounds ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"dense_eval_ms (full test set, lr 1e-3 model), at each round's start and the end: "
          f"{', '.join(f'{d:.0f}' for d in dense)} ms; "
          f"ratios use their median, {dense_ms:.0f} ms. Load average at the end: "
          f"{Path('/proc/loadavg').read_text().split()[:3]}\n")
    names = {"grid": f"grid job, default timing (prune.k={args.grid_ks})", "search": "search trial",
             "fresh": "fresh single job, weight k=90"}
    before, after = repos
    print(f"| what (median over rounds) | {before} s | {after} s | {before} / dense_eval_ms | {after} / dense_eval_ms |"
          "\n|---|---:|---:|---:|---:|")
    for row, name in names.items():
        if seconds[before][row]:
            b, a = (statistics.median(seconds[label][row]) for label in repos)
            n = len(seconds[before][row])
            print(f"| {name} ({n} each) | {b:.2f} | {a:.2f} | {b * 1e3 / dense_ms:.1f}x | {a * 1e3 / dense_ms:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--label", default="")
    parser.add_argument("--grid-ks", default=GRID_KS)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--fresh", type=int, default=3, help="fresh single jobs to time (median)")
    parser.add_argument("--skip", default="", help="rows to leave out: grid,off,search,fresh")
    parser.add_argument("--search-args", default="", help="extra overrides for the search, space-separated")
    parser.add_argument("--noise", type=int, default=0, help="instead: spread of each timing level over N runs")
    parser.add_argument("--baseline", type=Path, help="instead: this checkout (before) and --repo (after), alternated")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the --baseline mode")
    args = parser.parse_args()
    store, repo, skip = args.store.resolve(), args.repo.resolve(), set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    for lr in ("1e-5", "1e-3"):  # the seed grid's two models: trained once, cached in the store
        cli(repo, store, [*SEED10, f"lr={lr}", "prune=none"], work / f"train-{lr}")
    model = trained_model_path(store, "0.001")
    if args.noise:
        noise(model, args.noise)
        return
    if args.baseline:
        alternate({"before": args.baseline.resolve(), "after": repo}, store, model, work, args, skip)
        return
    dense_before = dense_eval_ms(model)
    rows: list[tuple[str, float, str]] = []  # (name, seconds, note)
    phases: dict[str, dict[str, float]] = {}
    n_grid = 4 * len(args.grid_ks.split(","))
    for name, extra in (("grid", []), ("off", ["eval.timing=off"])):
        if name in skip:
            continue
        folder = work / f"grid-{name}"
        wall = cli(repo, store, ["-m", *SEED10, f"prune.k={args.grid_ks}", "tracking.force=true", *extra],
                   folder)
        per_job = job_seconds(folder)
        label = "grid job" + (", timing off" if extra else ", default timing")
        rows.append((f"{label} (median of {len(per_job)})", statistics.median(per_job), ""))
        rows.append((f"{n_grid} grid jobs{', timing off' if extra else ''}, whole multirun", wall, "wall"))
        phases[label] = phase_medians(store, run_ids(folder))
    if "search" not in skip:
        folder = work / "search"
        study = f"bench-{int(time.time())}"
        wall = cli(repo, store, ["-m", "search=optuna", f"hydra.sweeper.n_trials={args.trials}",
                                 f"hydra.sweeper.study_name={study}", *args.search_args.split()], folder)
        per_trial = job_seconds(folder)
        rows.append((f"search trial (median of {len(per_trial)})", statistics.median(per_trial), ""))
        rows.append((f"search, {args.trials} trials, whole command", wall, "wall"))
        phases["search trial"] = phase_medians(store, run_ids(folder))
    if "fresh" not in skip:
        walls = [cli(repo, store, ["prune=weight", "prune.k=90", "tracking.force=true"], work / f"fresh{i}")
                 for i in range(args.fresh)]
        rows.append((f"fresh single job, weight k=90 (median of {len(walls)})", statistics.median(walls), "wall"))
    dense_after = dense_eval_ms(model)
    dense = statistics.mean([dense_before, dense_after])
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"### Harness benchmark {args.label} (commit {commit}, {time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"dense_eval_ms (full test set, lr 1e-3 model): {dense_before:.0f} ms before the rows, "
          f"{dense_after:.0f} ms after; ratios use their mean, {dense:.0f} ms. "
          f"Load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}\n")
    print("| what | seconds | / dense_eval_ms |\n|---|---:|---:|")
    for name, seconds, _ in rows:
        print(f"| {name} | {seconds:.2f} | {seconds * 1e3 / dense:.1f}x |")
    for label, medians in phases.items():
        if medians:
            print(f"\nPhases of a {label} (median seconds over its prune runs):\n")
            print("| " + " | ".join(medians) + " |\n|" + "---:|" * len(medians))
            print("| " + " | ".join(f"{v:.3f}" for v in medians.values()) + " |")


if __name__ == "__main__":
    main()
