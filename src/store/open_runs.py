"""The MLflow runs this process has opened and not yet closed, so that an interrupt closes them as KILLED.

A signal can land between ``create_run`` and the ``try`` that would close the run, or inside the ``except``
that closes it; src/cli/interrupt runs :func:`kill_all` before it exits, so no run of this process stays RUNNING.
"""

from __future__ import annotations

from typing import Any

_OPEN: dict[str, Any] = {}  # run id -> the MlflowClient of its store


def opened(client: Any, run_id: str) -> str:
    """Remember ``run_id`` as open; return it."""
    _OPEN[run_id] = client
    return run_id


def close(client: Any, run_id: str, status: str) -> None:
    """``client.set_terminated(run_id, status)`` and forget the run."""
    client.set_terminated(run_id, status)
    _OPEN.pop(run_id, None)


def kill_all() -> str:
    """Mark every run still open KILLED (errors ignored: the store may be gone); return "" (a stop hook)."""
    for run_id, client in list(_OPEN.items()):
        try:
            client.set_terminated(run_id, "KILLED")
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        _OPEN.pop(run_id, None)
    return ""
