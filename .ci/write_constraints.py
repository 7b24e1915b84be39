"""Write constraints.txt from the environment this Python runs in (run it with a fresh venv's python).

    python .ci/write_constraints.py                    # write constraints.txt (repository root)
    python .ci/write_constraints.py --diff constraints.txt   # print what differs from a file, write nothing

Every installed distribution as ``name==version``, like ``pip freeze`` but without editable installs (the
project itself) and the venv's own pip and setuptools (pins on those would reach isolated builds).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"pip", "setuptools"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def editable(dist: md.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    return bool(text and json.loads(text).get("dir_info", {}).get("editable"))


def installed() -> dict[str, str]:
    found = {canonical(d.metadata["Name"]): d.version for d in md.distributions() if not editable(d)}
    return {name: found[name] for name in sorted(found) if name not in SKIP}


def read(path: Path) -> dict[str, str]:
    pins = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonical(name): version for name, _, version in (pin.partition("==") for pin in pins if pin)}


def diff(old: dict[str, str], new: dict[str, str]) -> list[str]:
    lines = [f"  {n}: {old[n]} -> {new[n]}" for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
    lines += [f"  {n}: new, {new[n]}" for n in sorted(new.keys() - old.keys())]
    lines += [f"  {n}: gone (was {old[n]})" for n in sorted(old.keys() - new.keys())]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diff", type=Path, help="compare with this constraints file instead of writing")
    parser.add_argument("--out", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args()
    pins = installed()
    if args.diff:
        changes = diff(read(args.diff), pins)
        print(f"{len(changes)} differences from {args.diff} ({len(pins)} packages installed)", *changes, sep="\n")
        return
    header = (
        '# The exact versions CI installs and tests: pip install -e ".[all]" -c constraints.txt\n'
        f"# Written by .ci/write_constraints.py on {datetime.date.today()} from a fresh venv: Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}, pip {md.version('pip')}.\n"
        "# Other Pythons or platforms may need other versions: there, install without -c.\n"
    )
    args.out.write_text(header + "".join(f"{name}=={version}\n" for name, version in pins.items()))
    print(f"wrote {len(pins)} pins to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
