"""Ctrl-C (SIGINT) and SIGTERM (what Slurm and `kill` send): stop the sweep, close its runs, say one line.

:func:`install` makes both signals raise :class:`Interrupted` (a KeyboardInterrupt, so every ``except
BaseException`` that closes an MLflow run as KILLED sees it) and remembers the signal, so an interrupt that
Python swallowed (raised inside a garbage-collection callback, say) is raised again at the next job start
(:func:`raise_if_received`). :func:`stop` runs the hooks registered with :func:`on_stop` (the sweep
report), then returns the shell's exit code for the signal: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

RESEND_S = 0.01  # delay before a swallowed interrupt's signal is sent again
_received: int | None = None
_hooks: list[Callable[[], str]] = []


class Interrupted(KeyboardInterrupt):
    """Raised by the signal handler; ``signum`` is the signal received."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    raise Interrupted(signum)


def _unraisable(info: sys.UnraisableHookArgs) -> None:
    """An interrupt raised where Python cannot propagate it (a ctypes callback of numba's compiler, a __del__)
    is not printed as "Exception ignored ..."; the signal is sent again, to land in ordinary code."""
    if isinstance(info.exc_value, KeyboardInterrupt) and _received is not None:
        timer = threading.Timer(RESEND_S, os.kill, (os.getpid(), _received))  # after this hook has returned
        timer.daemon = True
        timer.start()
        return
    _default_unraisable(info)


_default_unraisable = sys.unraisablehook


def install() -> None:
    """Route SIGINT and SIGTERM to :class:`Interrupted` (main thread only, as Python requires)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = _unraisable


def raise_if_received() -> None:
    """Raise :class:`Interrupted` if a signal arrived earlier (its first raise may have been swallowed)."""
    if _received is not None:
        raise Interrupted(_received)


def on_stop(hook: Callable[[], str], first: bool = False) -> None:
    """Run ``hook`` when the process stops on a signal (``first``: before the hooks already registered); it
    returns a short summary (or "") for the line."""
    _hooks.insert(0, hook) if first else _hooks.append(hook)


def signal_number(ex: BaseException) -> int:
    """The signal behind ``ex``: its own, the last received, or SIGINT for a plain KeyboardInterrupt."""
    return getattr(ex, "signum", None) or _received or signal.SIGINT


def received_name() -> str:
    """Name of the signal received (SIGINT when none was: a plain KeyboardInterrupt)."""
    return signal.Signals(_received or signal.SIGINT).name


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + signal number (130 SIGINT, 143 SIGTERM)."""
    return 128 + signum


def stop(ex: BaseException) -> int:
    """Ignore further signals, run the stop hooks, print one line on stderr; return the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signum = signal_number(ex)
    summaries = []
    while _hooks:
        try:
            summaries.append(_hooks.pop(0)())
        except Exception as e:  # noqa: BLE001 - the line below must still be printed
            summaries.append(f"the report could not be built ({type(e).__name__}: {e})")
    summary = "; ".join(s for s in summaries if s)
    print(f"interrupted ({signal.Signals(signum).name}): {summary + '; ' if summary else ''}"
          "run the same command to resume", file=sys.stderr, flush=True)
    return exit_code(signum)
