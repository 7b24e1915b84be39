"""Command-line errors of the benchmark scripts, as the project's CLI reports them (src/cli/errors.py): one
``error: ...`` line on stderr naming the option and what it takes, exit code 2, no traceback, no usage block.

Importing this module is cheap (argparse and sys only)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_BAD_INPUT = 2  # as src.cli.errors.EXIT_BAD_INPUT (not imported: that would put src on the path first)


class BadInput(Exception):
    """An option's value cannot be used; the message names the option and what it takes (one line)."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``error: message`` (one line) on stderr and exit with ``code``."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes options only as spelt out (no abbreviations: ``--proc 1`` is refused, not read
    as ``--processes 1``) and reports a bad option or value as one ``error:`` line, exit code 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message += " (options are taken only as spelt out in full, e.g. --processes, not --proc)"
        fail(f"{message} (see {self.prog} --help)")
