"""Identity of a Hydra multirun, shared by its jobs and by the end-of-sweep report."""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"  # written by every job into its Hydra output folder


def sweep_id_for(sweep_dir: str) -> str:
    """12 hex digits naming a sweep: its absolute output folder on this host."""
    key = f"{socket.gethostname()}:{Path(sweep_dir).resolve()}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SweepJob:
    """One job of a multirun: its sweep's id and output folder, and its Hydra job number."""

    sweep_id: str
    sweep_dir: str
    num: int


def write_result(output_dir: str, result: dict[str, Any]) -> None:
    Path(output_dir, RESULT_FILE).write_text(json.dumps(result, indent=1, default=float))


def read_results(sweep_dir: str) -> list[dict[str, Any]]:
    """The result.json of every job folder in ``sweep_dir``, ordered by job number."""
    files = sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}"), key=lambda p: (len(p.parent.name), p.parent.name))
    return [json.loads(f.read_text()) for f in files]
