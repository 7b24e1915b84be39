"""Command-line errors of the benchmark scripts, as the project's CLI reports them (src/cli/errors.py): one
``error: ...`` line on stderr naming the option and what it takes, exit code 2, no traceback, no usage block.

Importing this module is cheap (argparse and sys only): a script can check its options before its heavy imports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
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


def number_list(flag: str, text: str, kind: type, low: float, high: float | None, allowed: str) -> list:
    """The comma-separated numbers of option ``flag``, each of type ``kind`` in [low, high]; BadInput naming the
    flag and ``allowed`` otherwise."""
    values = []
    for item in text.split(","):
        try:
            value = kind(item.strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= (high if high is not None else value) or value != value:
            raise BadInput(f"{flag} {text}: {item.strip() or 'an empty item'} is not {allowed}")
        values.append(value)
    return values


def name_list(flag: str, text: str, known: Iterable[str], what: str, example: str) -> list[str]:
    """The comma-separated names of option ``flag``, each one of ``known`` (names of a ``what``) and none twice;
    BadInput naming the flag, the known names and ``example`` otherwise."""
    names, known = [n.strip() for n in text.split(",")], list(known)
    if unknown := [n for n in names if n not in known]:
        raise BadInput(f"{flag} {text}: unknown {what} {unknown[0] or '(empty)'}; choose from {', '.join(known)}, "
                       f"e.g. {flag} {example}")
    if twice := [n for i, n in enumerate(names) if n in names[:i]]:
        raise BadInput(f"{flag} {text}: {twice[0]} is given twice; give each {what} once, e.g. {flag} {example}")
    return names
