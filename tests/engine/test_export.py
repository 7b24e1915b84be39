"""Export (python -m src.export) and the harness-free loader (src/engine/sparse_model): round trips against Keras for
weight, unit and retrained runs, a loader process that cannot import TensorFlow, damaged files, exactness."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.engine import sparse_model
from src.engine.dense import forward_dense
from src.engine.sparse_model import SparseModelError, load
from src.pruning import masks as M
from tests.conftest import PROJECT, TINY, cases, finished_sweep, run_without_frameworks, seed_store

# One multirun: weight and unit one-shot with the gzip size asked for, and a weight run fine-tuned without it
JOBS = {"weight": ["prune=weight", "tracking.gzip_size=true"], "unit": ["prune=unit", "tracking.gzip_size=true"],
        "finetune": ["prune=weight", "prune.schedule=finetune", "prune.finetune.epochs=1"]}


def export_cli(run, out: Path, tmp: Path) -> tuple[int, str]:
    """``python -m src.export`` of ``run`` in a subprocess, as a user runs it: (exit code, stdout)."""
    done = subprocess.run([sys.executable, "-m", "src.export", "--run-id", run.info.run_id, "--out", str(out),
                           "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"], cwd=PROJECT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.returncode, done.stdout


def export_main(run, out: Path, tmp: Path) -> tuple[int, str]:
    """The same command's ``src.export.main`` in this process (no second TensorFlow start): (exit code, stdout)."""
    from src.export import main

    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = main(["--run-id", run.info.run_id, "--out", str(out), "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"])
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mlflow_client_for, model_store):
    """{weight, unit, finetune: (prune run, exported file)} from one store, and the test images (raw pixels). The
    weight run is exported by the CLI in a subprocess, the other two by the same entry point in this process."""
    tmp = tmp_path_factory.mktemp("export")
    seed_store(model_store, tmp, "tiny")
    _, client, experiment_id = finished_sweep(cases(tmp / "conf", ["-m", "prune.k=90", "eval.timing=off", *TINY], JOBS),
                                              tmp, mlflow_client_for, timeout=1200)  # 2 sweeps' limits
    files = {}
    for run in client.search_runs([experiment_id], "tags.role = 'prune'"):
        name = run.data.params["prune.schedule"] if run.data.params["prune.schedule"] != "oneshot" else \
            run.data.params["prune.method"]
        out = tmp / f"{name}.npz"
        code, stdout = (export_cli if name == "weight" else export_main)(run, out, tmp)
        assert code == 0 and stdout.startswith(f"[export] {run.info.run_name} -> {out}")
        files[name] = (run, out)
    assert set(files) == set(JOBS)
    pixels = np.load(PROJECT / "data" / "mnist.npz")["x_test"][:300]
    return tmp, client, files, pixels


@pytest.mark.slow
@pytest.mark.parametrize("name", ["weight", "unit", "finetune"])
def test_exported_model_predicts_what_the_keras_model_does(exported, name):
    import keras

    tmp, client, files, pixels = exported
    run, path = files[name]
    model = keras.models.load_model(client.download_artifacts(run.info.run_id, "model/pruned.keras", str(tmp / name)))
    expected = model.predict(pixels, verbose=0)
    loaded = load(path)
    batched = loaded.predict(pixels)
    single = np.concatenate([loaded.predict(pixels[i:i + 1]) for i in range(20)])
    assert np.abs(batched - expected).max() < 1e-4 and np.abs(single - expected[:20]).max() < 1e-4
    assert (batched.argmax(axis=1) == expected.argmax(axis=1)).all()
    kept = sum(int(np.count_nonzero(w)) for w in model.get_weights())
    assert 0 < loaded.n_weights <= kept  # weights of dead units are dropped with them, nothing is added
    if name == "unit":  # stored compacted: 90% of every hidden layer's units are gone from the file
        assert [w.shape[1] for w in loaded.kernels[:-1]] == [100, 100, 50, 20]


@pytest.mark.slow
def test_prune_runs_log_their_file_sizes(exported):
    _, _, files, _ = exported
    for name, (run, path) in files.items():
        m = run.data.metrics
        assert m["sparse_file_bytes"] == path.stat().st_size, name
        assert m["dense_file_bytes"] > 4 * 2_386_000  # the dense float32 weights, uncompressed
        if name == "finetune":  # gzip_file_bytes only where asked (tracking.gzip_size=true)
            assert "gzip_file_bytes" not in m
        else:
            assert m["sparse_file_bytes"] < m["gzip_file_bytes"] < m["dense_file_bytes"], name


@pytest.mark.slow
def test_loader_runs_where_tensorflow_cannot_be_imported(exported):
    _, _, files, _ = exported
    printed = run_without_frameworks(f"""
        import numpy as np
        from src.engine.sparse_model import load
        pixels = np.load("data/mnist.npz")["x_test"][:50]
        model = load({str(files["weight"][1])!r})
        out, one = model.predict(pixels), model.predict(pixels[:1])  # the batched and the per-example path
        print(out.shape == (50, 10) and bool(np.abs(out[:1] - one).max() < 1e-4))
    """)
    assert printed == ["True"]


@pytest.mark.slow
def test_export_of_a_missing_run_is_one_line_and_exit_2(exported):
    tmp = exported[0]
    done = subprocess.run([sys.executable, "-m", "src.export", "--run-id", "0" * 32, "--out", str(tmp / "x.npz"),
                           "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"], cwd=PROJECT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no such run" in done.stderr
    assert not (tmp / "x.npz").exists()


def _net(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = [(784, 60), (60, 40), (40, 10)]
    return ([(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes],
            [(rng.standard_normal(s[1]) * 0.1).astype(np.float32) for s in shapes])


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("k", [0, 50, 90, 99, 100])
def test_saved_model_is_exact_at_every_sparsity(tmp_path, method, k):
    kernels, biases = _net()
    masks = M.layer_masks(kernels, method, k)  # hidden layers; the logits layer keeps everything
    kernels, biases = M.apply_masks(kernels, biases, masks, method)
    model = load(sparse_model.save(tmp_path / "m.npz", kernels, biases))
    pixels = np.random.default_rng(1).integers(0, 256, (40, 28, 28)).astype(np.uint8)
    pixels[:, :4] = 0  # MNIST-like zero borders: the per-example kernel skips zero inputs
    expected = forward_dense(kernels, biases, pixels.reshape(40, -1).astype(np.float32) / 255)
    assert np.abs(model.predict(pixels) - expected).max() < 1e-4
    assert np.abs(model.predict(pixels[:3]) - expected[:3]).max() < 1e-4
    assert model.n_weights <= sum(int(np.count_nonzero(w)) for w in kernels)
    # uint8 pixels go to the kernels unconverted; other dtypes and flat rows give the same logits
    for same in (pixels.astype(np.float64), pixels.reshape(40, -1)):
        assert np.abs(model.predict(same) - expected).max() < 1e-4
        assert np.abs(model.predict(same[:3]) - expected[:3]).max() < 1e-4


def test_damaged_files_get_one_line_errors(tmp_path):
    kernels, biases = _net()
    good = sparse_model.to_bytes(kernels, biases)
    cases = {"truncated.npz": good[: len(good) // 2], "garbage.npz": b"not a model at all",
             "empty.npz": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    for name in [*cases, "foreign.npz", "missing.npz", "notes.txt", "folder"]:
        with pytest.raises(SparseModelError) as info:
            load(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / name) in message, message
        assert "export" in message and "allow_pickle" not in message, message  # the fix; no unsafe advice
    assert "is a directory" in str(pytest.raises(SparseModelError, load, tmp_path / "folder").value)
    assert "does not exist" in str(pytest.raises(SparseModelError, load, tmp_path / "missing.npz").value)


def test_inconsistent_layer_is_reported(tmp_path):
    kernels, biases = _net()
    kernels, biases = M.apply_masks(kernels, biases, M.layer_masks(kernels, "weight", 90), "weight")  # stored as CSR
    with np.load(__import__("io").BytesIO(sparse_model.to_bytes(kernels, biases))) as f:
        arrays = {n: f[n] for n in f.files}
    arrays["indices_0"] = arrays["indices_0"] + 1000  # input units beyond 784
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SparseModelError, match="layer 0 is inconsistent"):
        load(tmp_path / "bad.npz")
    negative = arrays["indices_0"].astype(np.int64) - 1000
    negative[0] = -1  # would wrap into the last input
    bad = {"negative.npz": {**arrays, "indices_0": negative}, "no_layers.npz": {**arrays, "n_layers": np.int64(0)},
           "nan_scale.npz": {**arrays, "indices_0": negative.clip(0), "input_scale": np.float32("nan")}}
    for name, content in bad.items():
        np.savez(tmp_path / name, **content)
        message = str(pytest.raises(SparseModelError, load, tmp_path / name).value)
        assert "damaged" in message and "\n" not in message, message


def test_pixels_of_the_wrong_size_are_refused(tmp_path):
    model = load(sparse_model.save(tmp_path / "m.npz", *_net()))
    with pytest.raises(ValueError, match="784"):
        model.predict(np.zeros((2, 27, 28)))
    with pytest.raises(ValueError, match=r"pixels\[None\]"):  # one image without its batch dimension
        model.predict(np.zeros((28, 28), np.uint8))
    empty = model.predict(np.zeros((0, 28, 28), np.uint8))
    assert empty.shape == (0, 10) and empty.dtype == np.float32
    assert Path(tmp_path / "m.npz").stat().st_size > 0


def test_export_refuses_an_unwritable_out_or_an_unreachable_server_in_one_line(tmp_path, capsys):
    from src.export import main

    (tmp_path / "file").write_text("x")
    (tmp_path / "mlflow.db").touch()  # a store is there: --out is what is wrong
    store = f"sqlite:///{tmp_path}/mlflow.db"
    for out in (tmp_path, tmp_path / "file" / "m.npz"):  # a directory; a path under a file
        assert main(["--run-id", "0" * 32, "--out", str(out), "--tracking-uri", store]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --out {out}:") and "writable" in err, err
    typo = tmp_path / "no-such-folder" / "sub" / "m.npz"  # not created: a typo would write somewhere unexpected
    assert main(["--run-id", "0" * 32, "--out", str(typo), "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"its folder {typo.parent} does not exist: create it first" in err, err
    assert not (tmp_path / "no-such-folder").exists()
    assert main(["--run-id", "0" * 32, "--out", str(tmp_path / "m.npz"), "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tracking-uri=http://127.0.0.1:9 is unreachable" in err, err
    assert not (tmp_path / "m.npz").exists()


def test_a_runs_own_pruned_model_is_the_network_exported(tmp_path):
    """replay.pruned_network reads any model a prune run kept (here a LeNet-5), with its input shape."""
    pytest.importorskip("keras")
    from types import SimpleNamespace

    from src.engine.network import forward
    from src.records.replay import pruned_network
    from tests.training.keras_models import lenet5, randomized

    model = randomized(lenet5("relu"), seed=1)
    model.save(tmp_path / "pruned.keras")

    class Client:  # the two calls pruned_network makes of an MlflowClient
        def list_artifacts(self, run_id, folder):
            assert (run_id, folder) == ("r1", "model")
            return [SimpleNamespace(path="model/pruned.keras")]

        def download_artifacts(self, run_id, artifact, dst):
            return str(tmp_path / "pruned.keras")

    run = SimpleNamespace(info=SimpleNamespace(run_id="r1"), data=SimpleNamespace(params={}, tags={}))
    net, shape = pruned_network(Client(), run)
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype(np.float32)
    assert shape == (28, 28, 1)
    np.testing.assert_allclose(forward(net, x), model.predict(x, verbose=0), atol=1e-4, rtol=1e-4)
    loaded = load(sparse_model.save_network(tmp_path / "m.npz", net, shape))
    assert np.abs(loaded.predict(x) - forward(net, x)).max() < 1e-4
