"""Where the MLflow store is, and whether it answers: no MLflow import, so the command line can check
``tracking.uri`` (and fail with one line) before paying for MLflow, which src/store/tracking.py imports."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names ``tracking.uri`` and the fix."""


def resolve_uri(uri: str, base_dir: Path) -> str:
    """Make a relative ``sqlite:///path`` absolute against ``base_dir`` and create its folder."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        path = (base_dir / uri[len(prefix):]).resolve()
        uri = prefix + str(path)
    if uri.startswith(prefix):
        Path(uri[len(prefix) - 1:]).parent.mkdir(parents=True, exist_ok=True)
    return uri


def check_reachable(uri: str, timeout_s: float = 5.0, setting: str = "tracking.uri") -> None:
    """For an http(s) store, ask the server's /health endpoint; raise TrackingError (naming ``setting``, the
    option the user set the URI with) if it won't answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"{setting}={uri} is unreachable ({reason}): start the MLflow server "
                            f"or set {setting} to a reachable server or a sqlite:/// path") from None
