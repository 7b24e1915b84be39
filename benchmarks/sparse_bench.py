"""Dense vs pruned-inference benchmark for the 784-1000-1000-500-200-10 ReLU MLP.

Usage: python benchmarks/sparse_bench.py [--model path.keras] [--repeats N] [--plot speedup.png] [--candidates]
       [--engine NAME] [--ks 60,70,80] [--methods weight] [--batches 1,10000] [--processes N]

Weights: the Dense kernels/biases of ``--model`` in order, else He-scaled Gaussian (std sqrt(2/fan_in)), no
biases (``--biases`` adds N(0, 0.01) biases). Input: the MNIST test images from data/mnist.npz scaled to 0..1
(``--input random``: uniform 0..1). Each net is pruned with src.pruning.masks (weight and unit, hidden layers only) and
timed at batch 1 (one example per call over the first 16 test images, ms per call, as the prune runs'
``*_latency_ms``; "auto" times its small-batch candidates on those images) and batch 10000 (``--batches``: any
sizes; three or more make a batch sweep, whose ``--plot`` is speedup against batch size): dense numpy forward
of the masked net vs ``build_engine(..., "auto")``, alternated in one process (src.engine.timing.time_alternating:
each side timed in its steady state after SETTLE_S s of untimed calls, 5 timed passes per turn at batches below
1000, 1 from 1000 on), medians in ms. Batches larger than the 10000 test images repeat them in order. Each row also
gives the byte bound (dense weight bytes over the fewest bytes of the compacted net the engines run: 6 per kept
weight, or 4 per weight where the compacted kernels are dense, as after unit pruning; 1.0x at k=0: the speedup
if both sides only streamed their weights), the speedup's share of it, and its share of the same k's speedup at
the largest batch timed (a flat batch curve is ~100%). ``--candidates`` adds a table of
library alternatives (scipy.sparse, sparse_dot_mkl, TensorFlow, pydata sparse: whichever import) and of each
numba engine forced, for weight pruning. ``--processes N`` runs the same measurement in N fresh processes, one after
another, and prints each process's sparse ms and speedup per row and their spread (max / min - 1): a kernel whose
speed depends on where a process's allocator or scheduler placed it shows here, not within one process. The dense
side's spread is the machine's own (a shared VM's speed drifts over minutes, and a neighbour's burst can slow a
whole process); the speedup, both sides timed alternately in one process, cancels that drift, so its spread is the
kernel's. So does each process's fastest timed pass of the sparse side (the host's noise only ever adds time): a
process that landed in a slow mode is slow in every pass, so the spread of the fastest passes is the kernel's own. A
process's line names the share of the vCPUs' time the hypervisor gave to others while a row was timed
(``/proc/stat``'s steal), from 1%. There ``--plot`` draws each row's median speedup, ``--candidates`` runs once
after the table, and a process that fails ends the run with its error.
Output: Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_cli import BadInput, Parser, fail, number_list  # noqa: E402
from src.engine.choice import ENGINES, build_engine  # noqa: E402
from src.engine.dense import compact_units, forward_dense  # noqa: E402
from src.engine.timing import LATENCY_EXAMPLES, SETTLE_S, in_calls, time_alternating, time_samples  # noqa: E402
from src.pruning import masks as M  # noqa: E402
from src.training.keras_file import KerasFileError, read_weights  # noqa: E402

SHAPES = [(784, 1000), (1000, 1000), (1000, 500), (500, 200), (200, 10)]
KS = (0, 50, 90, 95, 99)
BATCHES = (1, 10000)
METHODS = ("weight", "unit")
PIXELS = 784  # inputs of an MNIST image, flattened
MODEL_HINT = "give a .keras file of a Dense-only ReLU MLP taking the 784 MNIST pixels, or leave --model out"
Net = tuple[list[np.ndarray], list[np.ndarray | None]]


def machine_header() -> list[str]:
    """CPU, cores, load and library versions, as Markdown lines."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [f"- CPU: {cpu}; usable cores: {len(os.sched_getaffinity(0))}; "
             f"load average: {Path('/proc/loadavg').read_text().split()[:3]}",
             f"- Python {platform.python_version()}"]
    for dist in ("numpy", "scipy", "numba", "llvmlite", "tensorflow-cpu", "keras"):
        try:  # metadata only: importing keras would start TensorFlow's thread pools
            lines[-1] += f", {dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            pass
    try:
        from threadpoolctl import threadpool_info
        lines += [f"- BLAS: {p['internal_api']} {p['version']} ({p['architecture']}), {p['num_threads']} threads"
                  for p in threadpool_info() if p["user_api"] == "blas"]
    except ImportError:
        pass
    env = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "OPENBLAS_", "MKL_", "NUMBA_"))}
    lines.append(f"- thread env: {env or 'none set'}")
    return lines


def busy_seconds() -> tuple[float, float]:
    """(CPU seconds busy machine-wide, CPU seconds used by this process and its children) so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


def steal_seconds() -> float:
    """CPU seconds the hypervisor has run something else while this VM's vCPUs wanted to run (``/proc/stat``'s
    steal, all vCPUs) so far: a row timed while it grows was slowed by the host, not by the kernel."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8]) / os.sysconf("SC_CLK_TCK")


def numba_threads() -> str:
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run
        layer = "not started"
    return f"numba threading layer: {layer}, threads: {numba.get_num_threads()}"


def random_net(biases: bool, seed: int = 0) -> Net:
    rng = np.random.default_rng(seed)
    ws = [(rng.standard_normal(s) * np.sqrt(2.0 / s[0])).astype(np.float32) for s in SHAPES]
    bs = [(rng.standard_normal(s[1]) * 0.01).astype(np.float32) if biases else None for s in SHAPES]
    return ws, bs


def keras_net(path: str, input_kind: str = "mnist") -> Net:
    """The Dense kernels/biases of a .keras file, read without Keras (whose TensorFlow thread pools would
    otherwise run beside the timed kernels). BadInput (naming --model) unless it is a Dense-only MLP whose layers
    chain and, for MNIST input, whose first layer takes the 784 pixels."""
    if not Path(path).is_file():
        what = "is a directory, not a file" if Path(path).is_dir() else "does not exist"
        raise BadInput(f"--model {path} {what}: {MODEL_HINT}")
    try:
        kernels, biases, names = read_weights(path)
    except KerasFileError as e:
        raise BadInput(f"--model {e}: {MODEL_HINT}") from None
    other = [f"{name} (kernel {'x'.join(map(str, w.shape))})" for name, w in zip(names, kernels, strict=True)
             if w.ndim != 2]
    if other or not kernels:
        found = f"it has the non-Dense layer {other[0]}" if other else "it has no Dense layer"
        raise BadInput(f"--model {path} is not an MLP ({found}): {MODEL_HINT}")
    for i in range(len(kernels) - 1):
        if kernels[i].shape[1] != kernels[i + 1].shape[0]:
            raise BadInput(f"--model {path}: Dense layer {names[i + 1]} takes {kernels[i + 1].shape[0]} inputs but "
                           f"{names[i]} gives {kernels[i].shape[1]} (not one chain of Dense layers): {MODEL_HINT}")
    if input_kind == "mnist" and kernels[0].shape[0] != PIXELS:
        raise BadInput(f"--model {path}: its first Dense layer takes {kernels[0].shape[0]} inputs, not the {PIXELS} "
                       f"MNIST pixels: {MODEL_HINT} (or pass --input random)")
    return kernels, biases


def load_input(kind: str, n: int, fan_in: int) -> np.ndarray:
    """``n`` inputs of ``fan_in`` features: MNIST test images scaled to 0..1, repeated in order when ``n`` is
    larger than the test set (or uniform 0..1 random for ``kind`` random, or without data/mnist.npz)."""
    path = ROOT / "data" / "mnist.npz"
    if kind == "mnist" and path.exists():
        with np.load(path) as f:
            images = f["x_test"].reshape(len(f["x_test"]), -1)
        rows = np.resize(np.arange(len(images)), n)  # 0, 1, ..., 9999, 0, 1, ...: the test set repeated
        return images[rows].astype(np.float32) / np.float32(255.0)
    return np.random.default_rng(1).random((n, fan_in), dtype=np.float32)


def prune(net: Net, method: str, k: float) -> Net:
    ws, bs = net
    return M.apply_masks(ws, bs, M.layer_masks(ws, method, k), method)


def per_round(batch: int) -> int:
    """Timed calls per turn in time_alternating: small batches are cheap, so more of them."""
    return 1 if batch >= 1000 else 5


def bench_row(net: Net, method: str, k: float, x: np.ndarray, batch: int, repeats: int,
              engine_name: str = "auto") -> dict:
    """Dense vs engine on ``x`` in calls of ``batch`` rows; ms per call (small batches: the mean over the
    LATENCY_EXAMPLES calls, as the prune runs' *_latency_ms)."""
    ws, bs = prune(net, method, k)
    engine = build_engine(ws, bs, batch, engine_name, sample=x if batch < len(x) else None)
    err = float(np.max(np.abs(engine(x) - forward_dense(ws, bs, x))))
    steal, started = steal_seconds(), time.perf_counter()
    t = time_samples({"dense": in_calls(lambda xb: forward_dense(ws, bs, xb), x, batch),
                      "sparse": in_calls(engine, x, batch)}, repeats, 2, SETTLE_S, per_round(batch))
    steal = (steal_seconds() - steal) / (time.perf_counter() - started) / len(os.sched_getaffinity(0))
    calls = -(-len(x) // batch)
    dense, sparse = statistics.median(t["dense"]) / calls, statistics.median(t["sparse"]) / calls
    bound = byte_bound(ws, bs)
    return dict(method=method, k=k, batch=batch, engine=engine.name, dense=dense, sparse=sparse,
                sparse_best=min(t["sparse"]) / calls, speedup=dense / sparse, bound=bound,
                of_bound=dense / sparse / bound, err=err, steal=steal)


def byte_bound(kernels: list[np.ndarray], biases: list[np.ndarray | None] | None = None) -> float:
    """The speedup if both sides were bound by the bytes of their weights: 4 per weight of the net as given (the
    dense side) over the fewest bytes that hold the net the engines run, the compacted one (src.engine.dense's
    compact_units: a unit-pruned layer's dead units go, with the next layer's rows that read them): 6 per kept
    weight (a float32 value and a uint16 index) or, when fewer, 4 per weight of the compacted kernels stored dense.
    So 1.0x with nothing pruned, dense bytes / compacted bytes for unit pruning (its compacted net is dense), and
    dense bytes / (6 B x kept weights) for weight pruning past about k=33."""
    compact, _ = compact_units(kernels, biases)
    kept = sum(int(np.count_nonzero(w)) for w in compact)
    return 4 * sum(w.size for w in kernels) / min(6 * kept, 4 * sum(w.size for w in compact))


def of_largest_batch(rows: list[dict]) -> dict[int, float]:
    """{row index: the row's speedup / the speedup of the same method and k at the largest batch timed}: how flat
    the batch-size curve is (1.0 at the largest batch)."""
    largest = {}
    for r in rows:
        key = (r["method"], r["k"])
        if key not in largest or r["batch"] > largest[key]["batch"]:
            largest[key] = r
    return {i: r["speedup"] / largest[(r["method"], r["k"])]["speedup"] for i, r in enumerate(rows)}


def print_table(rows: list[dict]) -> None:
    flat = of_largest_batch(rows)
    print("| method | k | batch | engine | dense ms | sparse ms | speedup | byte bound | of bound "
          "| of the largest batch's speedup | max abs err |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rows):
        print(f"| {r['method']} | {r['k']:g} | {r['batch']} | {r['engine']} | {r['dense']:.4g} | {r['sparse']:.4g} "
              f"| {r['speedup']:.2f} | {r['bound']:.1f}x | {r['of_bound']:.0%} | {flat[i]:.0%} | {r['err']:.1e} |")


Forward = Callable[[np.ndarray], np.ndarray]


def _chain(matmul: Callable[[int, np.ndarray], np.ndarray], n_layers: int, transpose: bool) -> Forward:
    """ReLU MLP forward from a per-layer sparse product; ``transpose``: activations kept as (features, N)."""
    def fn(x: np.ndarray) -> np.ndarray:
        h = np.ascontiguousarray(x.T) if transpose else x
        for i in range(n_layers):
            h = np.asarray(matmul(i, h))
            h = np.maximum(h, 0) if i < n_layers - 1 else h
        return h.T if transpose else h
    return fn


def _scipy_csr(ws: list[np.ndarray]) -> Forward:
    import scipy.sparse as sp
    mats = [sp.csr_array(w.T) for w in ws]
    return _chain(lambda i, h: mats[i] @ h, len(ws), transpose=True)


def _scipy_csc(ws: list[np.ndarray]) -> Forward:
    import scipy.sparse as sp
    mats = [sp.csc_array(w) for w in ws]
    return _chain(lambda i, h: h @ mats[i], len(ws), transpose=False)


def _mkl(ws: list[np.ndarray]) -> Forward:
    import scipy.sparse as sp
    from sparse_dot_mkl import dot_product_mkl
    mats = [sp.csr_matrix(w.T) for w in ws]
    return _chain(lambda i, h: dot_product_mkl(mats[i], h), len(ws), transpose=True)


def _pydata(ws: list[np.ndarray]) -> Forward:
    import sparse
    mats = [sparse.GCXS.from_numpy(w, compressed_axes=[1]) for w in ws]
    return _chain(lambda i, h: h @ mats[i], len(ws), transpose=False)


def _tensorflow(ws: list[np.ndarray]) -> Forward:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    mats = [tf.sparse.from_dense(w.T) for w in ws]

    @tf.function
    def forward(h):
        h = tf.transpose(h)
        for i, m in enumerate(mats):
            h = tf.sparse.sparse_dense_matmul(m, h)
            h = tf.nn.relu(h) if i < len(mats) - 1 else h
        return tf.transpose(h)
    return lambda x: forward(tf.constant(x)).numpy()


def _tensorflow_csr(ws: list[np.ndarray]) -> Forward:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from tensorflow.python.ops.linalg.sparse import sparse_csr_matrix_ops as csr  # TF's CSR kernels (no public API)
    mats = [csr.CSRSparseMatrix(w.T) for w in ws]

    @tf.function
    def forward(h):
        h = tf.transpose(h)
        for i, m in enumerate(mats):
            h = csr.matmul(m, h)
            h = tf.nn.relu(h) if i < len(mats) - 1 else h
        return tf.transpose(h)
    return lambda x: forward(tf.constant(x)).numpy()


# Weight-pruned nets (no biases) through each library. TensorFlow last: its thread pools keep spinning after use.
CANDIDATES: dict[str, Callable[[list[np.ndarray]], Forward]] = {
    "numba scatter-numba": lambda ws: build_engine(ws, None, 1, "scatter-numba"),
    "numba csr-numba": lambda ws: build_engine(ws, None, 10000, "csr-numba"),
    "scipy csr(W.T) @ x.T": _scipy_csr, "scipy x @ csc(W)": _scipy_csc, "sparse_dot_mkl csr(W.T) @ x.T": _mkl,
    "pydata sparse x @ GCXS(W)": _pydata, "tf.sparse.sparse_dense_matmul(W.T, x.T)": _tensorflow,
    "tf CSRSparseMatrix matmul(W.T, x.T)": _tensorflow_csr,
}


def candidate_rows(name: str, net: Net, xs: dict[int, np.ndarray], ks: list[float], repeats: int) -> None:
    """Print one candidate's table rows: weight pruning at each k > 0 (k=0 has nothing to skip), each batch."""
    for batch, x in xs.items():
        for k in [k for k in ks if k > 0]:
            ws = prune((net[0], [None] * len(net[0])), "weight", k)[0]
            try:
                fn = CANDIDATES[name](ws)
            except ImportError as exc:
                print(f"| {name} | - | - | - | not installed ({exc.name}) | - | - |")
                return
            err = float(np.max(np.abs(fn(x) - forward_dense(ws, None, x))))
            reps = 3 if batch >= 1000 else repeats
            t = time_alternating({"dense": in_calls(lambda xb, ws=ws: forward_dense(ws, None, xb), x, batch),
                                  "c": in_calls(fn, x, batch)}, reps, 1, SETTLE_S, per_round(batch))
            calls = -(-len(x) // batch)
            print(f"| {name} | {k:g} | {batch} | {t['dense'] / calls:.4g} | {t['c'] / calls:.4g} "
                  f"| {t['dense'] / t['c']:.2f} | {err:.1e} |", flush=True)


def candidates_table(argv: list[str]) -> None:
    """Each candidate in a fresh process: MKL's OpenMP and TF's pools spin after use and would skew the rest."""
    print("\n| candidate | k | batch | dense ms | candidate ms | speedup | max abs err |")
    print("|---|---:|---:|---:|---:|---:|---:|", flush=True)
    for name in CANDIDATES:
        subprocess.run([sys.executable, __file__, *argv, "--candidate", name], check=True)


def child_error(stderr: str) -> str:
    """What a failed child process said: its ``error:`` lines (bad input), else the last line of its traceback."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    return "; ".join(errors) if errors else (lines[-1] if lines else "no output on stderr")


def stolen(row: dict) -> str:
    """``, host took 7%``: the share of the vCPUs' time the hypervisor gave to others while ``row`` was timed (from 1%;
    empty below)."""
    return f", host took {row['steal']:.0%}" if row["steal"] >= 0.01 else ""


def processes_table(argv: list[str], n: int) -> list[dict]:
    """Run this benchmark with ``argv`` in ``n`` fresh processes in turn; print each row's sparse ms and speedup in
    every process, and the spread of the sparse time (max / min - 1). Returns the rows with each process's median
    dense ms, sparse ms and speedup (what --plot draws). A process that fails ends the run: its own error line,
    exit code 1 (2 if it refused its input)."""
    runs = []
    for _ in range(n):
        out = subprocess.run([sys.executable, __file__, *argv, "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            code = out.returncode if out.returncode > 0 else 1
            fail(f"process {len(runs) + 1} of {n} failed (exit code {out.returncode}): {child_error(out.stderr)} "
                 f"(run without --processes to see the whole output)", code)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"- process {len(runs)}: " + ", ".join(
            f"{r['method']} k={r['k']:g} b={r['batch']}: {r['sparse']:.3g} ms ({r['speedup']:.2f}x{stolen(r)})"
            for r in runs[-1]), flush=True)
    medians = [{**first, **{key: statistics.median(run[i][key] for run in runs) for key in ("dense", "sparse",
                                                                                           "speedup")}}
               for i, first in enumerate(runs[0])]
    flat = of_largest_batch(medians)
    print("\n| method | k | batch | engine | sparse ms: min / median / max | sparse spread "
          "| fastest sparse pass: min / max | its spread | dense ms spread (the machine) "
          "| speedup: min / median / max | speedup spread | of byte bound: min / median "
          "| median speedup / the largest batch's |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, first in enumerate(runs[0]):
        sparse, speedup = [run[i]["sparse"] for run in runs], [run[i]["speedup"] for run in runs]
        dense, best = [run[i]["dense"] for run in runs], [run[i]["sparse_best"] for run in runs]
        print(f"| {first['method']} | {first['k']:g} | {first['batch']} | {first['engine']} | {min(sparse):.3g} / "
              f"{statistics.median(sparse):.3g} / {max(sparse):.3g} | {max(sparse) / min(sparse) - 1:.0%} | "
              f"{min(best):.3g} / {max(best):.3g} | {max(best) / min(best) - 1:.0%} | "
              f"{max(dense) / min(dense) - 1:.0%} | "
              f"{min(speedup):.2f} / {statistics.median(speedup):.2f} / {max(speedup):.2f} | "
              f"{max(speedup) / min(speedup) - 1:.0%} | {min(speedup) / first['bound']:.0%} / "
              f"{statistics.median(speedup) / first['bound']:.0%} | {flat[i]:.0%} |")
    return medians


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: no plot written to {path})")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    batches = sorted({r["batch"] for r in rows})
    if len(batches) > 2:  # a batch sweep: speedup against batch size, a line per k, 60% of its byte bound dotted
        for method, k in sorted({(r["method"], r["k"]) for r in rows}):
            sel = sorted((r for r in rows if r["method"] == method and r["k"] == k), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in sel], [r["speedup"] for r in sel], "o-", label=f"{method} k={k:g}")
            ax.axhline(sel[0]["bound"] * 0.6, ls=":", lw=0.8, color=ax.lines[-1].get_color())
        ax.set(xlabel="batch size (examples per call)", xscale="log", title="Speedup by batch size (dotted: 60% of "
               "the byte bound)")
        ax.set_xticks(batches, [str(b) for b in batches], fontsize=8)
        ax.minorticks_off()
    else:
        ks = sorted({r["k"] for r in rows})
        ax.plot(ks, [1 / (1 - k / 100) for k in ks], "k--", label="ideal 1/(1-k/100)")
        for method in ("weight", "unit"):
            for batch in batches:
                sel = [r for r in rows if r["method"] == method and r["batch"] == batch]
                if sel:
                    ax.plot([r["k"] for r in sel], [r["speedup"] for r in sel], "o-", label=f"{method}, batch {batch}")
        ax.set(xlabel="pruned k (%)", title="Pruned MLP inference")
    ax.set(ylabel="speedup vs dense numpy", yscale="log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def settings(args: argparse.Namespace) -> dict:
    """The checked settings of the parsed ``args``: ks, batches, methods; BadInput (one line naming the option)
    for a value the benchmark cannot run. Reads nothing but the --plot folder's existence."""
    ks = number_list("--ks", args.ks, float, 0, 100, "a pruning percentage: give numbers from 0 to 100, e.g. "
                     "--ks 50,90")
    batches = number_list("--batches", args.batches, int, 1, None, "a batch size: give whole numbers of at least 1, "
                          "e.g. --batches 1,256,10000")
    methods = [m.strip() for m in args.methods.split(",")]
    if unknown := [m for m in methods if m not in METHODS]:
        raise BadInput(f"--methods {args.methods}: unknown method {unknown[0] or '(empty)'}; choose from "
                       f"{', '.join(METHODS)}, e.g. --methods weight,unit")
    if args.repeats < 1:
        raise BadInput(f"--repeats {args.repeats}: give at least 1 timed round")
    if args.candidate and args.processes:
        raise BadInput("--candidate times one library in this process: give it without --processes (--candidates "
                       "with --processes times every candidate once, after the processes' table)")
    if args.processes < 0:
        raise BadInput(f"--processes {args.processes}: give a number of processes of at least 1 (0, the default: "
                       "measure in this process)")
    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        raise BadInput(f"--plot {args.plot}: folder {Path(args.plot).resolve().parent} does not exist: create it "
                       "or give a path in an existing folder")
    return {"ks": ks, "batches": batches, "methods": methods}


def child_argv(argv: list[str]) -> list[str]:
    """``argv`` without the options the parent of --processes handles itself: --processes N, --plot PATH,
    --candidates."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--processes", "--plot"):
            skip = True
        elif a != "--candidates" and not a.startswith(("--processes=", "--plot=")):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = Parser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help=".keras file of a Dense-only ReLU MLP (784 inputs for --input mnist) whose "
                    "kernels/biases to use (default: random weights of the 784-1000-1000-500-200-10 MLP)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds, at least 1 (each side is timed per round "
                    "over 5 passes of its input at batches below 1000, over 1 pass from 1000 on; default %(default)s)")
    ap.add_argument("--ks", default=",".join(map(str, KS)), help="comma-separated pruning percentages, 0 to 100 "
                    "(default %(default)s)")
    ap.add_argument("--engine", default="auto", choices=ENGINES, help="engine passed to build_engine (default auto)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated pruning methods: weight, unit "
                    "(default %(default)s)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes, at least 1 "
                    "(default %(default)s); a batch larger than the 10000 MNIST test images repeats them in order to "
                    "fill it")
    ap.add_argument("--biases", action="store_true", help="random weights get small random biases")
    ap.add_argument("--input", choices=("mnist", "random"), default="mnist",
                    help="mnist: the MNIST test images scaled to 0..1; random: uniform 0..1 (default mnist)")
    ap.add_argument("--plot", help="write a PNG of speedup vs k (vs batch size, given 3+ batches) here; with "
                    "--processes, of each row's median speedup")
    ap.add_argument("--candidates", action="store_true", help="also time library candidates (slow), each in a fresh "
                    "process (after the processes' table with --processes)")
    ap.add_argument("--candidate", choices=list(CANDIDATES), metavar="NAME",
                    help="only print this candidate's table rows (internal: --candidates runs each in its own "
                    "process with this); one of: " + "; ".join(CANDIDATES))
    ap.add_argument("--processes", type=int, default=0, help="run the measurement in N fresh processes, one after "
                    "another, and print each row's spread across them (max / min - 1), medians and each process's "
                    "fastest sparse pass; a process's line says how much of the vCPUs' time the host took (steal) "
                    "when 1%% or more (default 0: in this process)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one process of --processes
    args = ap.parse_args(argv)
    own = list(sys.argv[1:] if argv is None else argv)
    try:
        checked = settings(args)
        net = keras_net(args.model, args.input) if args.model else random_net(args.biases)
    except BadInput as e:
        fail(str(e))
    ks, batches, methods = checked["ks"], checked["batches"], checked["methods"]
    if args.processes:
        print("\n".join(machine_header()))
        print(f"- weights: {args.model or 'random He-Gaussian'}; {args.processes} fresh processes\n")
        medians = processes_table(child_argv(own), args.processes)
        if args.plot:
            plot(medians, args.plot)
        if args.candidates:
            candidates_table(child_argv(own))
        return
    x = load_input(args.input, max(*batches, LATENCY_EXAMPLES), net[0][0].shape[0])
    xs = {b: np.ascontiguousarray(x[:max(b, LATENCY_EXAMPLES)]) for b in batches}
    if args.candidate:
        candidate_rows(args.candidate, net, xs, ks, args.repeats)
        return
    if args.json:
        print(json.dumps([bench_row(net, method, k, xs[b], b, args.repeats, args.engine)
                          for method in methods for k in ks for b in batches]))
        return
    start = busy_seconds()
    print("\n".join(machine_header()))
    print(f"- weights: {args.model or 'random He-Gaussian'}; input: {args.input}; repeats: {args.repeats}\n")
    rows = [bench_row(net, method, k, xs[b], b, args.repeats, args.engine) for method in methods
            for k in ks for b in batches]
    print_table(rows)
    busy, own_cpu = (b - a for a, b in zip(start, busy_seconds(), strict=True))
    print(f"\n{numba_threads()}; load average after: {Path('/proc/loadavg').read_text().split()[:3]}; "
          f"CPU used by other processes during the run: {max(0.0, busy - own_cpu):.1f} s (this run: {own_cpu:.1f} s)")
    if args.plot:
        plot(rows, args.plot)
    if args.candidates:
        candidates_table([a for a in own if a != "--candidates"])


if __name__ == "__main__":
    main()
