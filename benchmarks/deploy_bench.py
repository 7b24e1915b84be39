"""Pruned models as they ship: speed of the exported sparse model against the dense model, file sizes, cold start.

Usage: python benchmarks/deploy_bench.py --store /path/to/mlflow.db [--targets weight:90,weight:98,weight:99,unit:90]
       [--repeats 7]

For each target (method:k) it takes the prune run of that method and k in the store with the best validation
accuracy among retrained runs (prune.schedule finetune/gradual/iterative) when one exists, else the one-shot
run, rebuilds its network (src/records/replay), exports it (src/engine/sparse_model, as python -m src.export
does) and loads it back. In one process, alternating (src.engine.timing.time_alternating, steady state, medians
in ms), as a deployed model is called, from the raw uint8 test images: the dense numpy forward pass of the masked
network (its first kernel scaled by 1/255, the pixels converted to float32: src.engine.choice's "dense" engine)
vs the loaded model's ``predict``, on the whole MNIST test set in one call (batch 10000) and one image per call over the
first 16 test images (batch 1); and the kernels alone on float32 input already scaled (batch 10000: dense
forward pass vs the loaded model's engine without the pixel scale). Also: the loaded model's test
accuracy (measured here, on the 10,000 test images), max abs logit error of the
loaded model vs the masked dense network, the file sizes of src/records/model_size, the byte bound (dense weight bytes /
(6 bytes per kept weight)) and the fraction of it reached, and the loader's cold start (a fresh process: import
src.engine.sparse_model, load, predict one image; wall time of the whole process, warm numba cache). Markdown on stdout.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from benchmarks.bench_cli import BadInput, Parser, fail  # noqa: E402
from benchmarks.sparse_bench import machine_header  # noqa: E402
from src.engine import sparse_model  # noqa: E402
from src.engine.choice import build_engine  # noqa: E402
from src.engine.dense import forward_dense  # noqa: E402
from src.engine.timing import LATENCY_EXAMPLES, SETTLE_S, in_calls, time_alternating  # noqa: E402
from src.records.model_size import file_sizes  # noqa: E402
from src.store.uri import TrackingError, check_reachable  # noqa: E402

TARGETS = "weight:90,weight:98,weight:99,unit:90"
RETRAINED = ("finetune", "gradual", "iterative")
COLD_START = """
import time, numpy as np
t = time.perf_counter()
from src.engine.sparse_model import load
model = load({path!r})
model.predict(np.load("data/mnist.npz")["x_test"][:1])
print(time.perf_counter() - t)
"""


def prune_runs(client, experiment_id: str, where: str = "") -> list:
    """The finished per-layer prune runs of the experiment (one k for every layer), with an MLflow filter ``where``
    added."""
    query = "tags.role = 'prune' and attributes.status = 'FINISHED' and params.`prune.scope` = 'layer'" + where
    return [r for r in client.search_runs([experiment_id], query, max_results=1000)
            if r.data.params.get("prune.layer_k", "None") == "None"]


def pick_run(client, experiment_id: str, method: str, k: float):
    """The best-by-validation retrained run of (method, k), else the best one-shot run; None if there is none."""
    runs = prune_runs(client, experiment_id, f" and params.`prune.method` = '{method}' and params.`prune.k` = "
                                             f"'{float(k)}'")
    retrained = [r for r in runs if r.data.params.get("prune.schedule") in RETRAINED]
    pool = retrained or runs
    return max(pool, key=lambda r: r.data.metrics.get("val_accuracy", -1)) if pool else None


def parse_targets(text: str) -> list[tuple[str, float]]:
    """--targets as [(method, k)]; BadInput unless every item is method:k with k a percentage."""
    targets = []
    for item in text.split(","):
        method, sep, k = item.strip().partition(":")
        try:
            value = float(k) if sep else None
        except ValueError:
            value = None
        if not method or value is None or not 0 <= value <= 100:
            raise BadInput(f"--targets {text}: {item.strip() or 'an empty item'} is not method:k (k a pruning "
                           "percentage from 0 to 100); give e.g. --targets weight:90,unit:90")
        targets.append((method, value))
    return targets


def store_uri(store: str) -> str:
    """The tracking URI of --store; BadInput, before MLflow opens it (which would create a new store), unless it
    is an existing MLflow SQLite file (or a URI other than sqlite:///)."""
    if "://" in store and not store.startswith("sqlite:///"):
        try:
            check_reachable(store, setting="--store")  # an http(s) server: does it answer?
        except TrackingError as e:
            raise BadInput(str(e)) from None
        return store
    path = Path(store.removeprefix("sqlite:///") if "://" in store else store)
    hint = "give the MLflow SQLite file of a sweep (e.g. mlflow.db, or its tracking.uri sqlite:///...)"
    if not path.is_file():
        raise BadInput(f"--store {store} {'is a directory' if path.is_dir() else 'does not exist'}: {hint}")
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error as e:
        raise BadInput(f"--store {store} is not an SQLite file ({e}): {hint}") from None
    if not {"experiments", "runs"} <= tables:
        raise BadInput(f"--store {store} is an SQLite file but not an MLflow store (no experiments and runs tables): "
                       f"{hint}")
    return f"sqlite:///{path.resolve()}"


def checked_runs(client, uri: str, experiment: str, targets: list[tuple[str, float]]) -> list:
    """The run of each target (pick_run); BadInput naming the experiment or the targets without a run, and what
    the store has."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise BadInput(f"--experiment {experiment} does not exist in {uri} (its experiments: {names})")
    runs = [pick_run(client, found.experiment_id, method, k) for method, k in targets]
    if missing := [f"{method}:{k:g}" for (method, k), run in zip(targets, runs, strict=True) if run is None]:
        have = sorted({(r.data.params["prune.method"], float(r.data.params["prune.k"]))
                       for r in prune_runs(client, found.experiment_id)})
        listed = ", ".join(f"{method}:{k:g}" for method, k in have) or "no finished per-layer prune run"
        raise BadInput(f"--targets: no finished per-layer prune run of {', '.join(missing)} in {uri} (experiment "
                       f"{experiment}); it has: {listed}")
    return runs


def cold_start(path: Path, runs: int = 3) -> tuple[float, float]:
    """(median wall time of a fresh process that loads and predicts once, median time inside it), seconds."""
    walls, insides = [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", COLD_START.format(path=str(path))], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - start)
        insides.append(float(done.stdout.split()[-1]))
    return float(np.median(walls)), float(np.median(insides))


def bench(client, run, pixels: np.ndarray, labels: np.ndarray, repeats: int, tmp: Path) -> dict:
    from src.records.replay import pruned_net
    from src.store.train_cache import fetch_verified_model

    kernels, biases = pruned_net(client, run)
    parent = run.data.tags["mlflow.parentRunId"]
    template = fetch_verified_model(client, parent, client.get_run(parent).data.tags["model_sha256"])
    path = sparse_model.save(tmp / f"{run.info.run_id}.npz", kernels, biases)
    model = sparse_model.load(path)
    x = pixels.reshape(len(pixels), -1).astype(np.float32) * sparse_model.PIXEL_SCALE
    dense = forward_dense(kernels, biases, x)
    logits = model.predict(pixels)
    error = float(np.abs(logits - dense).max())
    row = {"run": run.info.run_name, "method": run.data.params["prune.method"], "k": float(run.data.params["prune.k"]),
           "schedule": run.data.params.get("prune.schedule", "oneshot"),
           "test_accuracy": float(np.mean(logits.argmax(axis=1) == labels)), "max_abs_err": error}
    dense_raw = build_engine(kernels, biases, 1, "dense", input_scale=float(sparse_model.PIXEL_SCALE))
    kernel_alone = build_engine(model.kernels, model.biases, 10_000, model.engine(10_000).name)
    cases = {"b10000": (pixels, 10_000, 1, lambda z: dense_raw(z.reshape(len(z), -1)), model.predict),
             "b1": (pixels[:LATENCY_EXAMPLES], 1, 5, lambda z: dense_raw(z.reshape(len(z), -1)), model.predict),
             "float": (x, 10_000, 1, lambda z: forward_dense(kernels, biases, z), kernel_alone)}
    for case, (data, batch, per_round, dense_fn, sparse_fn) in cases.items():
        fns = {"dense": in_calls(dense_fn, data, batch), "sparse": in_calls(sparse_fn, data, batch)}
        times = time_alternating(fns, repeats=repeats, warmup=2, settle_s=SETTLE_S, per_round=per_round)
        calls = max(len(data) // batch, 1)
        engine = model.engine(batch).name
        row[case] = (times["dense"] / calls, times["sparse"] / calls, engine)
    nnz = model.n_weights
    row["bound"] = 4 * sum(w.size for w in kernels) / (6 * nnz)
    row |= file_sizes(template, kernels, biases)
    row["cold"] = cold_start(path)
    return row


def print_table(rows: list[dict]) -> None:
    print("| model (run) | test acc | batch 10000, raw pixels: dense ms / sparse ms = speedup (engine) | batch 1, raw "
          "pixels: dense us / sparse us = speedup (engine) | batch 10000, float32 input: kernels alone | byte bound | "
          "of bound (10000 / 1) | max abs err | .keras / gzip / sparse bytes | smaller than .keras | cold start: "
          "process / in-process |")
    print("|---|---:|---|---|---|---:|---:|---:|---|---:|---|")
    for r in rows:
        (d10, s10, e10), (d1, s1, e1), (df, sf, _) = r["b10000"], r["b1"], r["float"]
        print(f"| {r['method']} k={r['k']:g} {r['schedule']} ({r['run']}) | {100 * r['test_accuracy']:.2f}% | "
              f"{d10:.1f} / {s10:.2f} = **{d10 / s10:.1f}x** ({e10}) | {1000 * d1:.0f} / {1000 * s1:.1f} = "
              f"**{d1 / s1:.1f}x** ({e1}) | {df:.1f} / {sf:.2f} = {df / sf:.1f}x | {r['bound']:.1f}x | "
              f"{d10 / s10 / r['bound']:.0%} / {d1 / s1 / r['bound']:.0%} | {r['max_abs_err']:.1e} | "
              f"{r['dense_file_bytes']:,} / {r['gzip_file_bytes']:,} / {r['sparse_file_bytes']:,} | "
              f"{r['dense_file_bytes'] / r['sparse_file_bytes']:.1f}x | {r['cold'][0]:.2f} s / {r['cold'][1]:.2f} s |")


def main(argv: list[str] | None = None) -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="an existing MLflow SQLite file (or a tracking URI)")
    parser.add_argument("--experiment", default="prunesweep")
    parser.add_argument("--targets", default=TARGETS, help="method:k,... each with a finished prune run in the "
                        "store (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds, at least 1 (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        targets = parse_targets(args.targets)
        if args.repeats < 1:
            raise BadInput(f"--repeats {args.repeats}: give at least 1 timed round")
        uri = store_uri(args.store)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        runs = checked_runs(client, uri, args.experiment, targets)
    except BadInput as e:
        fail(str(e))
    with np.load(ROOT / "data" / "mnist.npz") as mnist:
        pixels, labels = mnist["x_test"], mnist["y_test"]
    print("\n".join(machine_header()))
    print(f"- store: {uri}; repeats {args.repeats}\n")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(client, run, pixels, labels, args.repeats, Path(tmp)) for run in runs]
    print_table(rows)


if __name__ == "__main__":
    main()
