"""Probe prunesweep on the model zoo (tests/zoo.py) as a user would: build each model, train it one epoch,
save it, and run ``python -m src.run model=keras model.path=... prune=weight|unit prune.k=80`` on the file.

    python benchmarks/zoo_probe.py --out /tmp/zoo                        # every zoo model, weight and unit
    python benchmarks/zoo_probe.py --out /tmp/zoo --models resnet,mlp_bn --runs weight,unit,untrained
    python benchmarks/zoo_probe.py --out /tmp/zoo --reuse                # CLI runs only, on the saved files

Per model it saves ``<out>/<name>-untrained.keras`` (seed 0, as built) and ``<out>/<name>.keras`` (one epoch
of Adam on the first ``--train-size`` MNIST images), checks that the trained file reloads in Keras's safe mode
with identical outputs, then runs the CLI once per ``--runs`` entry, each in its own process with a timeout:
``weight`` / ``unit`` prune the trained file (``model.trained=true``); ``untrained`` hands the untrained file to
the harness to train (``model.trained=false``, ``train.epochs=1``) and weight-prunes it. A run's result is its
``[prune]`` line on success, else the ``error:`` line or the traceback's last line, with where it was raised
(``file:line``: the raising frame, then the project's frames that called it). The table goes to stdout and to
``<out>/zoo_probe.md``; everything (with each run's stderr tail) to ``<out>/zoo_probe.json``, which keeps the
rows of an earlier probe's other models (same ``--runs``), so ``--models`` re-runs a few of them.
Re-run it after a change to the pruning core to compare; ``--render`` prints the table of a finished probe again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RUNS = {"weight": ("prune=weight", "model.trained=true"), "unit": ("prune=unit", "model.trained=true"),
        "untrained": ("prune=weight", "model.trained=false", "train.epochs=1")}
# Runs the CLI exactly as ``python -m src.run``; when it exits with an error while handling an exception (the
# one-line ``error:`` path of src/run.py), first prints where that exception was raised.
LAUNCHER = """
import runpy, sys, traceback
_exit = sys.exit
def _exit_with_origin(code=0):
    ex = sys.exc_info()[1]
    if ex is not None and code not in (0, None):
        frames = traceback.extract_tb(ex.__traceback__)
        print("[probe] raised at: " + " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in frames[::-1][:4]),
              file=sys.stderr, flush=True)
    _exit(code)
sys.exit = _exit_with_origin
sys.argv = ["src.run", *sys.argv[1:]]
runpy.run_module("src.run", run_name="__main__", alter_sys=True)
"""
FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')
CACHED = re.compile(r"\S*prunesweep-models-\w+/\w+/model\.keras")  # the job's copy of the model file
PRUNE_LINE = re.compile(r"^\[prune\] (?:\S+ k=\S+ lr=\S+: )?")  # "[prune] weight k=80 lr=0.001: " (the column says)


def _short(path: str) -> str:
    """A frame's file relative to the project or to site-packages."""
    p = Path(path)
    try:
        return str(p.relative_to(PROJECT))
    except ValueError:
        parts = p.parts
        return str(Path(*parts[parts.index("site-packages") + 1:])) if "site-packages" in parts else path


def _origin(stderr: str) -> list[str]:
    """Where the error came from, innermost first, as ``file:line``: the frame that raised it, then up to three
    frames of this project that called it (from ``[probe] raised at`` for error: lines, else the traceback)."""
    for line in stderr.splitlines():
        if line.startswith("[probe] raised at: "):
            frames = [f.rsplit(" in ", 1)[0].rsplit(":", 1) for f in line.removeprefix("[probe] raised at: ")
                      .split(" <- ")]
            break
    else:
        frames = [[m.group(1), m.group(2)] for m in map(FRAME.match, stderr.splitlines()) if m][::-1]
    if not frames:
        return []
    callers = [f"{_short(f)}:{n}" for f, n in frames[1:] if Path(f).is_relative_to(PROJECT)]
    return [f"{_short(frames[0][0])}:{frames[0][1]}", *callers[:3]]


def summarize(returncode: int | None, stdout: str, stderr: str) -> tuple[bool, str, list[str]]:
    """(succeeded, one-line result, where an error was raised: ``file:line`` innermost first) of a CLI run."""
    stderr = CACHED.sub("<cached model.keras>", stderr).replace("error: <cached model.keras>: ", "error: ")
    if returncode is None:
        return False, "timeout", []
    if returncode == 0:
        lines = [ln for ln in stdout.splitlines() if ln.startswith("[prune]")]
        return True, ("ok: " + PRUNE_LINE.sub("", lines[-1])) if lines else "ok (no [prune] line)", []
    error = next((ln.strip() for ln in stderr.splitlines() if ln.startswith("error:")), None)
    if error is None:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("[probe]", "I0000",
                                                                                            "WARNING: All log"))]
        error = lines[-1] if lines else f"exit code {returncode}, no stderr"
    return False, error, _origin(stderr)


def run_cli(model_file: Path, run: str, out: Path, args: argparse.Namespace) -> dict:
    """One CLI run in its own process group (killed whole on timeout); its result and stderr tail."""
    overrides = ["model=keras", f"model.path={model_file}", *RUNS[run], f"data.train_size={args.train_size}",
                 f"data.test_size={args.test_size}", f"prune.k={args.k}", f"tracking.uri=sqlite:///{out}/mlflow.db",
                 f"tracking.artifact_root={out}/artifacts", "tracking.force=true",  # a re-run runs again
                 f"hydra.run.dir={out}/runs/{model_file.stem}-{run}",
                 *args.override]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)  # as a user runs it: src/run.py decides what is one line
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *overrides], cwd=PROJECT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=args.timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this call started
        stdout, stderr = proc.communicate()
        code = None
    ok, result, where = summarize(code, stdout, stderr)
    return {"run": run, "ok": ok, "result": result, "raised_at": where, "returncode": code,
            "seconds": time.perf_counter() - start, "command": "python -m src.run " + " ".join(overrides),
            "stderr_tail": stderr[-3000:], "stdout_tail": stdout[-1500:]}


def fit_clock():
    """A Keras callback whose ``seconds`` is the wall time of ``fit`` (Keras imported here: --help stays fast)."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    return Clock()


def prepare(name: str, out: Path, args: argparse.Namespace, data) -> dict:
    """Build, train, save and check one zoo model (or, with --reuse, read its saved file); its row's facts."""
    import keras
    import numpy as np

    from tests.zoo import ZOO, build_trained, feed, save

    x, y, x_test, _ = data
    untrained, trained = out / f"{name}-untrained.keras", out / f"{name}.keras"
    row: dict = {"model": name, "file": str(trained)}
    if args.reuse and trained.is_file() and untrained.is_file():
        model = keras.models.load_model(trained, safe_mode=True)
        row.update(epoch_s=None, reused=True)
    else:
        keras.backend.clear_session()  # fresh name counters before each build: the applications' auto-named
        keras.utils.set_random_seed(0)  # layers (input_layer, rescaling, ...) are named alike in both files
        save(ZOO[name](), untrained)
        keras.backend.clear_session()
        clock = fit_clock()
        model = build_trained(name, trained, x, y, epochs=args.epochs, callbacks=[clock])
        row["epoch_s"] = clock.seconds / args.epochs  # the first epoch includes tracing the train step
    row["params"] = int(model.count_params())
    row["layer_families"] = sorted({type(layer).__name__ for layer in model.layers})
    batch = feed(model, x_test[:32])
    reloaded = keras.models.load_model(trained, safe_mode=True)
    row["reload_max_abs_diff"] = float(np.abs(keras.ops.convert_to_numpy(reloaded(batch, training=False)) -
                                              keras.ops.convert_to_numpy(model(batch, training=False))).max())
    return row


def resummarized(rows: list[dict]) -> list[dict]:
    """Rows of a probe's json with each run's result read again from its output (as this version reads it)."""
    for row in rows:
        for c in row.get("cli", []):
            c["ok"], c["result"], c["raised_at"] = summarize(c["returncode"], c["stdout_tail"], c["stderr_tail"])
    return rows


def _cell(text: str, width: int = 230) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def table(rows: list[dict], runs: list[str], k: float) -> str:
    head = ["model", "params", "1 epoch (s)", "safe-mode reload", *(f"{r} k={k:g}" for r in runs), "seconds"]
    align = ["---", "---:", "---:", "---", *(["---"] * len(runs)), "---:"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | | | {_cell(row['error'])} |" + " |" * len(runs) + " |")
            continue
        reload = "exact" if row["reload_max_abs_diff"] == 0 else f"max diff {row['reload_max_abs_diff']:.2g}"
        epoch = "" if row.get("epoch_s") is None else f"{row['epoch_s']:.1f}"
        results = [f"ok {_cell(c['result'].removeprefix('ok: '))}" if c["ok"] else
                   f"**fails** {_cell(c['result'], 170)}" + (f" (at {' <- '.join(c['raised_at'][:2])})"
                                                             if c.get("raised_at") else "") for c in row["cli"]]
        seconds = " / ".join(f"{c['seconds']:.0f}" for c in row["cli"])
        lines.append(f"| {row['model']} | {row['params']:,} | {epoch} | {reload} | " + " | ".join(results) +
                     f" | {seconds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zoo"), help="folder for models, store, runs, table")
    parser.add_argument("--models", default=None, help="comma-separated zoo names (default: all of tests/zoo.ZOO)")
    parser.add_argument("--runs", default="weight,unit", help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--k", type=float, default=80)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per CLI run")
    parser.add_argument("--reuse", action="store_true", help="use the saved model files of an earlier probe")
    parser.add_argument("--override", action="append", default=[], help="an extra CLI override (repeatable)")
    parser.add_argument("--render", action="store_true",
                        help="run nothing: print the table of <out>/zoo_probe.json again (results re-read)")
    args = parser.parse_args()
    if args.render:
        rows = resummarized(json.loads((args.out / "zoo_probe.json").read_text()))
        runs = next(([c["run"] for c in row["cli"]] for row in rows if "cli" in row), [])
        print(table(rows, runs, args.k))
        return
    runs = [r for r in args.runs.split(",") if r]
    if unknown := sorted(set(runs) - set(RUNS)):
        parser.error(f"--runs: unknown {', '.join(unknown)}; choose from {', '.join(RUNS)}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(PROJECT))
    from tests.zoo import ZOO, mnist

    names = args.models.split(",") if args.models else list(ZOO)
    if unknown := sorted(set(names) - set(ZOO)):
        parser.error(f"--models: unknown {', '.join(unknown)}; the zoo has {', '.join(ZOO)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = mnist(args.train_size, args.test_size)
    results = out / "zoo_probe.json"
    earlier = json.loads(results.read_text()) if results.is_file() else []
    kept = {row["model"]: row for row in resummarized(earlier) if row["model"] not in names and row["model"] in ZOO
            and [c["run"] for c in row.get("cli", [])] == runs}  # an earlier probe's other models, same runs
    rows = []
    for name in names:
        try:
            row = prepare(name, out, args, data)
        except Exception as e:  # noqa: BLE001 - a model that does not build is a row, not the end of the probe
            rows.append({"model": name, "error": f"{type(e).__name__}: {e}"})
            print(f"[zoo] {name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            continue
        row["cli"] = []
        for run in runs:
            model_file = out / f"{name}-untrained.keras" if run == "untrained" else out / f"{name}.keras"
            result = run_cli(model_file, run, out, args)
            row["cli"].append(result)
            where = f" [at {' <- '.join(result['raised_at'])}]" if result["raised_at"] else ""
            print(f"[zoo] {name} {run}: {result['result']}{where} ({result['seconds']:.0f} s)", file=sys.stderr,
                  flush=True)
        rows.append(row)
        merged = {**kept, **{r["model"]: r for r in rows}}
        results.write_text(json.dumps([merged[n] for n in ZOO if n in merged], indent=1))
    rows = json.loads(results.read_text())
    text = table(rows, runs, args.k)
    (out / "zoo_probe.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
