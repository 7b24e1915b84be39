"""Export a prune run's network as a sparse model file that runs without the harness.

    python -m src.export --run-id RUN_ID --out model.npz [--tracking-uri URI]

The network, any model prunesweep prunes (MLP, LeNets, a user's Keras chain), is rebuilt from the store
(src/records/replay: the run's own ``model/pruned.keras``, or the trained model with the run's masks) and written by
src/engine/sparse_model (CSR, 16-bit indices, dead units and filters removed; version 1 for an MLP, 2 otherwise).
A quantized run (``quantize=kmeans`` or ``linear``) is written as the file version 3 it measured, byte for byte
(its artifact ``model/compressed.npz``: src/records/quantize_run).
Load it with ``src.engine.sparse_model.load(path).predict(pixels)``. Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from src.cli.config import TrackingConfig  # noqa: E402
from src.cli.errors import OneLineParser  # noqa: E402
from src.store.uri import TrackingError, check_reachable, resolve_uri  # noqa: E402

EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m src.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-id", required=True, help="a FINISHED prune run (see the MLflow UI or report.csv)")
    parser.add_argument("--out", required=True, type=Path, help="the sparse model file to write (.npz)")
    parser.add_argument("--tracking-uri", default=TrackingConfig().uri,
                        help="MLflow store; relative sqlite paths resolve against the cwd (default %(default)s)")
    return parser.parse_args(argv)


def check_writable(out: Path) -> None:
    """Raise ValueError (one line naming --out and the fix) unless ``out`` can be written as a file: checked
    before the network is rebuilt, so a typo costs nothing."""
    problem, parent = None, out.parent
    if out.is_dir():
        problem = "is a directory"
    elif not parent.exists():  # not created: a typo in a path would write somewhere unexpected
        raise ValueError(f"--out {out}: its folder {parent} does not exist: create it first (mkdir -p {parent}) or "
                         "pass a path in an existing folder, e.g. --out weight-k90.npz")
    elif not parent.is_dir():
        problem = f"{parent} is a file, not a folder"
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem = f"{parent} is not writable"
    if problem is None and out.exists() and not os.access(out, os.W_OK):
        problem = "exists and is not writable"
    if problem:
        raise ValueError(f"--out {out}: {problem}: pass a writable file path, e.g. --out weight-k90.npz")


def export(uri: str, run_id: str, out: Path) -> str:
    """Write the run's sparse model to ``out``; return a one-line summary. Raises ValueError (one line)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from src.engine import sparse_model
    from src.engine.network import kernels_of, weighted
    from src.records.replay import pruned_network

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"--run-id {run_id}: no such run in {uri} (pass --tracking-uri for another store)") from None
    if run.data.tags.get("role") != "prune" or run.info.status != "FINISHED":
        raise ValueError(f"--run-id {run_id} is a {run.data.tags.get('role', 'non-prunesweep')} run "
                         f"({run.info.status}): export a FINISHED prune run")
    engine = run.data.params.get("eval.engine_used", "")
    if engine.startswith("keras ("):  # a model only Keras runs (src/records/graph_prune)
        raise ValueError(f"--run-id {run_id} prunes a model the sparse engine does not run ({engine[7:-1]}): its "
                         "pruned model is the run's artifact model/pruned.keras; open it with "
                         "keras.models.load_model")
    if run.data.params.get("quantize.method", "none") != "none":
        return _export_quantized(client, run, out)
    net, input_shape = pruned_network(client, run)
    if input_shape is None:
        raise ValueError(f"--run-id {run_id}: its model file does not say its input shape")
    _write(out, sparse_model.network_to_bytes(net, input_shape))
    model = sparse_model.load(out)  # what a user will load: checked once here
    total = sum(w.size for w in kernels_of(net)[0])
    kernels = model.kernels
    if all(w.ndim == 2 for w in kernels):  # an MLP: its widths, as python -m src.export always printed them
        layers = f"{' x '.join(str(w.shape[0]) for w in kernels)} x {kernels[-1].shape[1]}"
    else:
        layers = ", ".join(f"{model.net[i].name} {'x'.join(str(v) for v in model.net[i].kernel.shape)}"
                           for i in weighted(model.net))
    return (f"[export] {run.info.run_name} -> {out}: {out.stat().st_size:,} bytes, {model.n_weights:,} of {total:,} "
            f"weights kept, layers {layers}")


def _write(out: Path, data: bytes) -> None:
    try:
        out.write_bytes(data)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write it ({e.strerror or e}): pass a writable file path") from None


def _export_quantized(client, run, out: Path) -> str:
    """Write a quantized run's file (its artifact, the bytes it measured) to ``out``; the one-line summary."""
    from src.engine import sparse_model
    from src.records.quantize_run import COMPRESSED_ARTIFACT

    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(client.download_artifacts(run_id, COMPRESSED_ARTIFACT, tmp)).read_bytes()
    except Exception:  # noqa: BLE001 - missing or unreadable artifact
        raise ValueError(f"--run-id {run_id} is quantized but has no readable {COMPRESSED_ARTIFACT}: re-run it with "
                         "tracking.force=true") from None
    _write(out, data)
    model = sparse_model.load(out)  # what a user will load: checked once here
    metrics = run.data.metrics
    return (f"[export] {run.info.run_name} -> {out}: {len(data):,} bytes ({run.data.params['quantize.method']}, "
            f"{metrics.get('bits_per_weight', float('nan')):.2f} bits per weight, "
            f"{metrics.get('compression_ratio', float('nan')):.1f}x smaller than the .keras file), "
            f"{model.n_weights:,} weights kept")


def main(argv: list[str] | None = None) -> int:
    """CLI; returns the exit code (0 written, 2 bad run id, store or --out)."""
    args = parse_args(argv)
    uri = resolve_uri(args.tracking_uri, Path.cwd())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite://"):]).exists():
        print(f"error: no MLflow store at {uri}: pass --tracking-uri (or run from the project folder)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        check_writable(args.out)
        check_reachable(uri, setting="--tracking-uri")
        print(export(uri, args.run_id, args.out))
    except (ValueError, OSError, TrackingError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
