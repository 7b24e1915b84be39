"""Per-CPU calibration of ``auto``'s density thresholds: where the sparse kernels start to beat dense numpy.

Whether a pruned net runs faster through the sparse kernels or through numpy's BLAS depends on the CPU: on the
AMD EPYC host the batched kernel broke even with numpy at ~55% nonzeros, on the Intel Xeon with AVX-512 (whose
BLAS runs nearer a wider peak) at ~40%. So the thresholds are measured on the machine at hand, once per CPU, and
cached:

- what: for the classic MLP's shapes (784-1000-1000-500-200-10, He-scaled random weights pruned by magnitude per
  layer), the largest density on :data:`DENSITIES` at which the sparse kernel of each batch size in
  :data:`BATCHES` (``scatter-numba`` at 1, ``csr-numba`` from 8 on) is at least :data:`MARGIN` times faster than
  dense numpy, and so at every lower density on the grid (0.0: at none). Timed alternately in one process
  (src/engine/timing.time_alternating, the cores left to settle at each handover: OpenBLAS's threads spin after a
  call and halved the sparse kernel's measured speed, numba's halved numpy's), on random inputs of which 80% are
  zeros at batch 1 (MNIST's pixels are); :func:`measure` walks the grid from the last batch's threshold.
- where: ``$PRUNESWEEP_CACHE_DIR/engine_calibration.json`` (default ``~/.cache/prunesweep``), one entry per
  :func:`cpu_key` (CPU model, widest vector extension, usable cores, numpy version). A file that is unreadable
  or not this format is measured again and rewritten, never trusted.
- use: :func:`max_density` (src/engine/choice's rule with no inputs to time on). A prune job, which has its test
  set, also times numpy against the sparse kernel on it in the band around the threshold, so a job never reports
  a kernel slower than dense numpy (src/engine/choice.engine_candidates).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from src.engine.dense import forward_dense
from src.engine.kernels import SMALL_BATCH, sparse_forward
from src.engine.timing import SETTLE_S, in_calls, time_alternating

SHAPES = ((784, 1000), (1000, 1000), (1000, 500), (500, 200), (200, 10))
DENSITIES = (0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05)
MAX_DENSITY = max(DENSITIES)  # above it no threshold can take the sparse kernel: nothing to look up
BATCHES = (1, 7, 8, 16, 32, 64, 65, 128, 129, 256, 257, 1000)  # either side of where the kernels' cost steps (on two
# threads: one 64-sample block | one a thread at 65-128 | 128-sample blocks | a block and a narrow one at 257)
MARGIN = 1.1  # the sparse kernel must be this much faster to be chosen without timing
FORMAT = 4  # raise it when a kernel's speed changes: caches of another format are measured again
_loaded: dict[str, dict[int, float]] = {}


def cpu_key() -> str:
    """What the thresholds depend on: the CPU (model name, family / model / stepping or ARM part, widest vector
    extension), usable cores, BLAS threads asked for, numpy's and numba's versions."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            info.setdefault(name.strip(), value.strip())
            if not line.strip() and info:
                break  # the first CPU is enough
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    ident = "/".join(info.get(k, "") for k in ("cpu family", "model", "stepping", "CPU implementer", "CPU part"))
    flags = set((info.get("flags") or info.get("Features") or "").split())
    vector = next((f for f in ("avx512f", "avx2", "asimd") if f in flags), "baseline")
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    import numba
    return (f"{model} ({ident.strip('/')}) | {vector} | {len(os.sched_getaffinity(0))} cores | BLAS threads {blas} | "
            f"numpy {np.__version__} | numba {numba.__version__}")


def cache_path() -> Path:
    return Path(os.environ.get("PRUNESWEEP_CACHE_DIR") or Path.home() / ".cache" / "prunesweep") / \
        "engine_calibration.json"


def _random_net(rng: np.random.Generator) -> list[np.ndarray]:
    return [(rng.standard_normal(s) * np.sqrt(2.0 / s[0])).astype(np.float32) for s in SHAPES]


def _pruned(kernels: list[np.ndarray], density: float) -> list[np.ndarray]:
    """Each kernel with all but its ``density`` largest-magnitude weights set to zero."""
    out = []
    for w in kernels:
        cut = np.quantile(np.abs(w), 1.0 - density)
        out.append(np.where(np.abs(w) >= cut, w, np.float32(0)))
    return out


def _inputs(rng: np.random.Generator, batch: int) -> np.ndarray:
    x = rng.random((batch, SHAPES[0][0]), dtype=np.float32)
    if batch == 1:  # the per-sample kernel skips zero inputs: give it MNIST's share of them
        x[rng.random(x.shape) < 0.8] = 0.0
    return x


def measure(densities: tuple[float, ...] = DENSITIES, batches: tuple[int, ...] = BATCHES,
            repeats: int = 3) -> dict[int, float]:
    """{batch: largest density on the grid at which the batch's sparse kernel beats dense numpy by MARGIN, as at
    every lower one (0.0: none)} for this machine, timed now. The first batch of each kernel walks the grid up from
    its sparsest point and stops at the first loss; the next batches of the same kernel start from the last one's
    threshold (they mostly rise with the batch) and walk up while it wins, or down until it does."""
    rng = np.random.default_rng(0)
    net, grid = _random_net(rng), sorted(densities)
    found, kernel, start, built = {}, None, 0, {}
    for batch in batches:
        name = "scatter-numba" if batch < SMALL_BATCH else "csr-numba"
        x = np.tile(_inputs(rng, batch), (max(1, 64 // batch), 1))  # small batches: several calls per timed turn

        def wins(d: float, name: str = name, x: np.ndarray = x, batch: int = batch) -> bool:
            if (name, d) not in built:  # each net pruned and packed once, whatever the batches it is timed at
                ws = _pruned(net, d)
                built[name, d] = (functools.partial(forward_dense, ws, None),
                                  sparse_forward(name, ws, [None] * len(ws), 1.0))
            dense, sparse = built[name, d]
            t = time_alternating({"dense": in_calls(dense, x, batch), "sparse": in_calls(sparse, x, batch)},
                                 repeats=repeats, warmup=1, settle_s=SETTLE_S, settle="switch")
            return t["dense"] >= MARGIN * t["sparse"]
        i = start if name == kernel else 0
        if wins(grid[i]):
            while i + 1 < len(grid) and wins(grid[i + 1]):
                i += 1
            found[batch] = grid[i]
        else:
            i = next((j for j in range(i - 1, -1, -1) if wins(grid[j])), -1)
            found[batch] = grid[i] if i >= 0 else 0.0
        kernel, start = name, max(i, 0)
    return found


def _read(path: Path) -> dict:
    """The cache file's content if it is this format (``{"format", "cpus": {key: entry}}``), else {}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("cpus"), dict)
    return data if ok else {}


def _valid(entry: object) -> bool:
    table = entry.get("max_density") if isinstance(entry, dict) else None
    return (isinstance(table, dict) and all(isinstance(b, str) and b.isdigit() for b in table)
            and {str(b) for b in BATCHES} <= set(table)
            and all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in table.values()))


def thresholds() -> dict[int, float]:
    """This CPU's {batch: max density}: from the cache, else measured now (a line on stderr says so) and cached.
    Processes that start together (a parallel sweep) take turns through a lock file, so one measures on a quiet
    machine and the others read its result."""
    key = cpu_key()
    if key not in _loaded:
        path = cache_path()
        entry = _read(path).get("cpus", {}).get(key)
        if not _valid(entry):
            with _locked(path):
                entry = _measured_and_saved(path, key)
        _loaded[key] = {int(b): float(d) for b, d in entry["max_density"].items()}
    return _loaded[key]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s lock file while the block runs (none where the folder cannot be written or
    the platform has no ``fcntl``)."""
    try:
        import fcntl
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "w")
        fcntl.flock(handle, fcntl.LOCK_EX)
    except (ImportError, OSError):  # no fcntl, an unwritable folder, a file system without locks
        yield
        return
    with handle:
        yield


def _measured_and_saved(path: Path, key: str) -> dict:
    """This CPU's entry: the cache's, if another process wrote it meanwhile, else measured now and written."""
    data = _read(path)
    entry = data.get("cpus", {}).get(key)
    if _valid(entry):
        return entry
    stale = " (the cache there is unreadable or from another version)" if path.is_file() and not data else ""
    print(f"[engine] timing the sparse kernels against numpy on this CPU, once (30-60 s; cached in {path}{stale}, "
          "delete it to time again)", file=sys.stderr, flush=True)
    started = time.perf_counter()
    entry = {"max_density": {str(b): d for b, d in measure().items()},
             "measured": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.perf_counter() - started, 1)}
    data = {"format": FORMAT, "cpus": {**data.get("cpus", {}), key: entry}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)
    except OSError as exc:  # a read-only home: use the measurement, say why it is not kept
        why = f"{path.parent} is not a folder" if path.parent.exists() and not path.parent.is_dir() else str(exc)
        print(f"[engine] could not cache the timing ({why}): every process will time again; set "
              "PRUNESWEEP_CACHE_DIR to a writable folder", file=sys.stderr, flush=True)
    return entry


def max_density(batch_size: int) -> float:
    """The largest density at which ``auto`` takes the sparse kernel for calls of ``batch_size`` rows without timing:
    the calibrated batches' on either side of it, the lower of the two where both run the same kernel (a kernel's
    cost steps between them: the per-sample one grows with each row, a batched one by blocks), else the one below."""
    table = thresholds()
    below = max((b for b in table if b <= batch_size), default=min(table))
    above = min((b for b in table if b >= batch_size), default=below)
    same_kernel = (below < SMALL_BATCH) == (above < SMALL_BATCH)
    return min(table[below], table[above]) if same_kernel else table[below]


def may_take_sparse(density: float) -> bool:
    """Whether a net of this density could take a sparse kernel without timing at any batch size (False for a net
    denser than the grid's top: then the thresholds are not looked up, nor measured)."""
    return density <= MAX_DENSITY
