"""The benchmark scripts start: their imports follow the modules they measure (a moved name breaks them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT


@pytest.mark.parametrize("script", ["sparse_bench.py", "harness_bench.py", "deploy_bench.py", "lenet_bench.py",
                                    "structured_bench.py", "compression_bench.py"])
def test_benchmark_script_starts(script):
    out = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / script), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout


def test_sparse_bench_batch_sweep_reports_the_byte_bound_and_the_batch_curve(tmp_path):
    """Three batch sizes on one net: a row each with its byte bound (4 B per dense weight over 6 B per kept one:
    10 / 1.5 = 6.7x at k=90 of the hidden layers), its share of it and of the largest batch's speedup (100% there),
    and the speedup-vs-batch plot."""
    png = tmp_path / "batches.png"
    args = ["--ks", "90", "--methods", "weight", "--batches", "16,64,256", "--repeats", "1", "--input", "random",
            "--plot", str(png)]
    out = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "sparse_bench.py"), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| weight |")]
    assert [r[2].strip() for r in rows] == ["16", "64", "256"]
    bounds = {float(r[7].strip().rstrip("x")) for r in rows}
    assert len(bounds) == 1 and 6.0 < bounds.pop() < 6.7  # the unpruned logits layer keeps the bound under 6.7x
    assert rows[-1][9].strip() == "100%" and all(r[8].strip().endswith("%") for r in rows)
    assert png.stat().st_size > 10_000


# Bad input to the benchmark scripts: one `error:` line naming the option, exit code 2, no traceback, nothing made.
SPARSE = PROJECT / "benchmarks" / "sparse_bench.py"
DEPLOY = PROJECT / "benchmarks" / "deploy_bench.py"
TINY_BENCH = ["--batches", "8", "--ks", "90", "--methods", "weight", "--repeats", "1", "--input", "random"]


def run_script(script, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=PROJECT)


def assert_refused(out: subprocess.CompletedProcess, option: str) -> str:
    """``out`` refused its input as the project does; returns the error line."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], out.stderr
    assert out.stdout == "", out.stdout  # refused before printing anything
    return lines[0]


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> dict[str, Path]:
    """Untrained .keras files (built, not trained): the 784-input MLP the benchmark takes (784-32-10), an MLP of 100
    inputs, and a LeNet-5 of 4 and 8 filters (its first Dense layer takes 128 inputs, not 784)."""
    import keras

    from tests.zoo import save

    L, folder = keras.layers, tmp_path_factory.mktemp("bench-models")
    mlp = lambda n_in: keras.Sequential([keras.Input((n_in,)), L.Dense(32, activation="relu"), L.Dense(10)])  # noqa: E731
    lenet = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(4, 5, activation="relu"), L.MaxPooling2D(),
                              L.Conv2D(8, 5, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                              L.Dense(32, activation="relu"), L.Dense(10)])
    return {"mlp": save(mlp(784), folder / "mlp.keras"), "mlp100": save(mlp(100), folder / "mlp100.keras"),
            "lenet": save(lenet, folder / "lenet.keras")}


SPARSE_BAD = {  # id: (arguments, the option the error line names); {name} is a file of keras_files
    "batches-negative": (["--batches", "-3"], "--batches"), "batches-zero": (["--batches", "0"], "--batches"),
    "batches-word": (["--batches", "1,x"], "--batches"), "repeats-zero": (["--repeats", "0"], "--repeats"),
    "ks-negative": (["--ks", "-5"], "--ks"), "ks-over-100": (["--ks", "150"], "--ks"),
    "ks-word": (["--ks", "abc"], "--ks"),
    "engine": (["--engine", "bogus"], "--engine"), "methods": (["--methods", "magic"], "--methods"),
    "processes-negative": (["--processes", "-1"], "--processes"), "abbreviation": (["--proc", "1"], "--proc"),
    "model-missing": (["--model", "/nonexistent/model.keras"], "--model"),
    "model-not-keras": (["--model", str(PROJECT / "README.md")], "--model"),
    "model-lenet": (["--model", "{lenet}"], "--model"), "model-not-784": (["--model", "{mlp100}"], "--model"),
    "candidate-with-processes": (["--candidate", "scipy x @ csc(W)", "--processes", "2"], "--candidate"),
}


@pytest.mark.parametrize("case", list(SPARSE_BAD))
def test_sparse_bench_refuses_bad_input_in_one_line(case, keras_files):
    args, option = SPARSE_BAD[case]
    args = [a.format(**keras_files) for a in args]
    line = assert_refused(run_script(SPARSE, *args), option)
    if case == "abbreviation":
        assert "--processes" in line  # names the option spelt out


def test_sparse_bench_plot_into_a_missing_folder_is_refused_before_timing(tmp_path):
    assert_refused(run_script(SPARSE, *TINY_BENCH, "--plot", str(tmp_path / "no" / "plot.png")), "--plot")
    assert not (tmp_path / "no").exists()


def test_sparse_bench_repeats_the_test_images_for_a_batch_larger_than_the_test_set(keras_files):
    """Batch 10001 > the 10000 MNIST test images: timed on the test set repeated (its --help says so)."""
    out = run_script(SPARSE, "--model", str(keras_files["mlp"]), "--batches", "10001", "--ks", "90", "--methods",
                     "weight", "--repeats", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| weight |")]
    assert [r[3].strip() for r in rows] == ["10001"]
    assert "repeats them" in run_script(SPARSE, "--help").stdout


def test_sparse_bench_help_texts_end_and_say_when_five_passes_are_timed():
    text = " ".join(run_script(SPARSE, "--help").stdout.split())
    assert "the spread " not in text and "at batch 1)" not in text
    assert "5 passes of its input at batches below 1000" in text and "N fresh processes" in text


def test_sparse_bench_processes_draw_the_plot_from_the_medians(tmp_path):
    """--plot with --processes: the processes' table, then the plot of each row's median speedup."""
    png = tmp_path / "median.png"
    out = run_script(SPARSE, *TINY_BENCH, "--ks", "0,90", "--processes", "2", "--plot", str(png))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "- process 2:" in out.stdout and f"plot: {png}" in out.stdout
    assert png.stat().st_size > 10_000
    header = next(line for line in out.stdout.splitlines() if line.startswith("| method |")).split("|")
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| weight | 90 |")]
    assert rows
    for row in rows:
        cells = dict(zip((h.strip() for h in header), (c.strip() for c in row), strict=True))
        low, median, high = (float(v) for v in cells["sparse ms: min / median / max"].split(" / "))
        fastest, slowest = (float(v) for v in cells["fastest sparse pass: min / max"].split(" / "))
        assert 0 < fastest <= low and fastest <= slowest <= high  # each process's fastest round: its median or less


def test_sparse_bench_processes_hand_candidates_to_one_run_after_the_table(monkeypatch, capsys):
    """--candidates with --processes: the candidates' table runs once, after the processes' table, with the
    arguments of one process (neither --processes nor --plot nor --candidates)."""
    from benchmarks import sparse_bench

    calls = []
    monkeypatch.setattr(sparse_bench, "processes_table", lambda argv, n: calls.append(("processes", argv, n)) or [])
    monkeypatch.setattr(sparse_bench, "candidates_table", lambda argv: calls.append(("candidates", argv)))
    sparse_bench.main(["--ks", "90", "--processes", "2", "--candidates", "--batches", "8"])
    one = ["--ks", "90", "--batches", "8"]
    assert calls == [("processes", one, 2), ("candidates", one)]


def test_sparse_bench_a_process_line_names_the_time_the_host_took(monkeypatch, capsys):
    """A row timed while /proc/stat's steal grew (the hypervisor ran others): its process line says how much of the
    vCPUs' time the host took; a row timed without steal says nothing."""
    from benchmarks import sparse_bench as sb

    clock = iter([100.0, 101.0, 200.0, 200.0])  # 1 s stolen while the first row was timed, none in the second
    monkeypatch.setattr(sb, "steal_seconds", lambda: next(clock))
    rows = [json.dumps([sb.bench_row(sb.random_net(False), "weight", 90, np.random.default_rng(0).random(
        (8, 784), dtype=np.float32), 8, 1, "csr-numba")]) for _ in range(2)]
    monkeypatch.setattr(sb.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, rows.pop(0), ""))
    sb.processes_table(TINY_BENCH, 2)
    first, second = [line for line in capsys.readouterr().out.splitlines() if line.startswith("- process")]
    assert "host took" in first and "host took" not in second


def test_sparse_bench_a_failed_process_shows_its_own_error_line(monkeypatch, capsys):
    """A process of --processes that fails: its last stderr line (the exception), no CalledProcessError
    traceback, a non-zero exit."""
    from benchmarks import sparse_bench

    crash = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nMemoryError: Unable to allocate\n'
    monkeypatch.setattr(sparse_bench.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", crash))
    with pytest.raises(SystemExit) as exit_:
        sparse_bench.main([*TINY_BENCH, "--processes", "2"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "process 1 of 2 failed" in err[0] and "MemoryError: Unable to allocate" in err[0], err


def test_sparse_bench_byte_bound_of_unpruned_and_unit_pruned_nets():
    """The byte bound is that of the compacted net: 1.0x with nothing pruned (not 4/6 = 0.7x), dense bytes over the
    compacted kernels' dense bytes after unit pruning (its dead units' rows in the next layer do not count)."""
    from benchmarks import sparse_bench as sb

    net = sb.random_net(biases=False)
    assert sb.byte_bound(*sb.prune(net, "weight", 0)) == pytest.approx(1.0)
    ws, bs = sb.prune(net, "unit", 90)
    kept = 784 * 100 + 100 * 100 + 100 * 50 + 50 * 20 + 20 * 10  # 10% of each hidden layer's units
    assert sb.byte_bound(ws, bs) == pytest.approx(sum(w.size for w in ws) / kept, rel=0.01)
    weight90 = sb.prune(net, "weight", 90)[0]
    assert sb.byte_bound(weight90) == pytest.approx(4 * sum(w.size for w in weight90)
                                                    / (6 * sum(int((w != 0).sum()) for w in weight90)))


STRUCTURED = PROJECT / "benchmarks" / "structured_bench.py"
SMALL_STRUCTURED = ["--models", "resnet20", "--batches", "1", "--rounds", "1"]  # what a bad value is added to
STRUCTURED_BAD = {  # id: (arguments, the option the error line names)
    "models-unknown": (["--models", "foo"], "--models"), "models-empty": (["--models", ""], "--models"),
    "models-twice": (["--models", "resnet20,resnet20"], "--models"),
    "rounds-zero": (["--rounds", "0"], "--rounds"), "rounds-word": (["--rounds", "x"], "--rounds"),
    "fraction-over-1": (["--fraction", "2"], "--fraction"), "fraction-1": (["--fraction", "1"], "--fraction"),
    "fraction-negative": (["--fraction", "-0.1"], "--fraction"), "fraction-nan": (["--fraction", "nan"], "--fraction"),
    "batches-zero": (["--batches", "0"], "--batches"), "batches-word": (["--batches", "1,x"], "--batches"),
    "abbreviation": (["--round", "1"], "--round"),
}


@pytest.mark.parametrize("case", list(STRUCTURED_BAD))
def test_structured_bench_refuses_bad_input_in_one_line(case):
    args, option = STRUCTURED_BAD[case]
    line = assert_refused(run_script(STRUCTURED, *SMALL_STRUCTURED, *args, timeout=120), option)
    if case == "models-unknown":
        assert "resnet20, mobilenetv2" in line  # the models it knows


def test_structured_bench_checks_its_options_before_importing_keras():
    """--help and a refused option import neither Keras nor TensorFlow (seconds, and log lines on stderr)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import structured_bench as sb\n"
            "for argv in (['--help'], ['--rounds', '0']):\n"
            "    try:\n        sb.main(argv)\n    except SystemExit:\n        pass\n"
            "print([m for m in ('keras', 'tensorflow') if m in sys.modules], file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(PROJECT)], capture_output=True, text=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "[]", out.stderr[-3000:]
    assert "usage:" in out.stdout


LENET = PROJECT / "benchmarks" / "lenet_bench.py"
SMALL_LENET = ["--init", "random", "--models", "lenet300", "--repeats", "1"]  # what a bad value is added to
LENET_BAD = {  # id: (arguments, the option the error line names); {file}: an existing file
    "models-unknown": (["--models", "foo"], "--models"), "models-twice": (["--models", "lenet5,lenet5"], "--models"),
    "repeats-zero": (["--repeats", "0"], "--repeats"), "epochs-zero": (["--epochs", "0"], "--epochs"),
    "init": (["--init", "pretrained"], "--init"), "clock": (["--clock", "cpu"], "--clock"),
    "cache-file": (["--init", "trained", "--cache", "{file}"], "--cache"),
    "cache-under-file": (["--init", "trained", "--cache", "{file}/sub"], "--cache"),
    "abbreviation": (["--rep", "1"], "--rep"),
}


@pytest.mark.parametrize("case", list(LENET_BAD))
def test_lenet_bench_refuses_bad_input_in_one_line(case, tmp_path, monkeypatch):
    args, option = LENET_BAD[case]
    (tmp_path / "file").write_text("")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)  # --clock cpu needs one thread each side
    line = assert_refused(run_script(LENET, *SMALL_LENET, *[a.format(file=tmp_path / "file") for a in args],
                                     timeout=120), option)
    if case == "models-unknown":
        assert "lenet300, lenet5" in line  # the models it knows


@pytest.mark.parametrize("script", ["structured_bench", "lenet_bench"])
def test_every_option_says_what_it_takes_and_its_default(script):
    import importlib

    module = importlib.import_module(f"benchmarks.{script}")
    for action in module.parser()._actions:
        if action.dest != "help":
            assert action.help, action.option_strings
            assert "default" in action.help, (action.option_strings, action.help)


@pytest.fixture(scope="module")
def prune_store(tmp_path_factory) -> tuple[Path, str]:
    """(an MLflow SQLite store, the id of its one run): a finished per-layer prune run of weight k=90 (its
    records only: deploy_bench's refusals happen before any model is read)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("deploy-store") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("prunesweep", artifact_location=str(db.parent / "artifacts"))
    run = client.create_run(experiment, tags={"role": "prune"})
    for key, value in {"prune.method": "weight", "prune.k": "90.0", "prune.scope": "layer",
                       "prune.layer_k": "None"}.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return db, run.info.run_id


DEPLOY_BAD = {  # id: (arguments, the option the error line names); {store}: prune_store's file, {tmp}: a new folder
    "store-missing": (["--store", "{tmp}/nope.db"], "--store"),
    "store-uri-missing": (["--store", "sqlite:///{tmp}/nope.db"], "--store"),
    "store-not-sqlite": (["--store", str(PROJECT / "README.md")], "--store"),
    "targets-no-k": (["--store", "{store}", "--targets", "weight"], "--targets"),
    "targets-bad-k": (["--store", "{store}", "--targets", "weight:abc"], "--targets"),
    "targets-no-run": (["--store", "{store}", "--targets", "weight:90,weight:33"], "--targets"),
    "experiment": (["--store", "{store}", "--experiment", "nope"], "--experiment"),
    "repeats": (["--store", "{store}", "--repeats", "0"], "--repeats"),
    "abbreviation": (["--store", "{store}", "--target", "weight:90"], "--target"),
}


@pytest.mark.parametrize("case", list(DEPLOY_BAD))
def test_deploy_bench_refuses_bad_input_in_one_line_and_creates_nothing(case, prune_store, tmp_path):
    args, option = DEPLOY_BAD[case]
    store, _ = prune_store
    before = store.stat().st_mtime_ns
    line = assert_refused(run_script(DEPLOY, *[a.format(store=store, tmp=tmp_path) for a in args]), option)
    assert list(tmp_path.iterdir()) == [] and store.stat().st_mtime_ns == before
    if case == "targets-no-run":
        assert "weight:33" in line and "it has: weight:90" in line  # what the store does have


def test_deploy_bench_picks_the_run_of_each_target(prune_store):
    from mlflow.tracking import MlflowClient

    from benchmarks import deploy_bench

    store, run_id = prune_store
    uri = deploy_bench.store_uri(str(store))
    runs = deploy_bench.checked_runs(MlflowClient(uri), uri, "prunesweep", deploy_bench.parse_targets("weight:90"))
    assert [r.info.run_id for r in runs] == [run_id]
