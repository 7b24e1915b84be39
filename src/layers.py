"""List what prunesweep prunes in a Keras 3 model file, by the names ``prune.layer_k`` and the search take.

    python -m src.layers mine.keras [--embeddings] [--groups]

One row per prunable tensor (name, layer class, shape, weights, what one unit of its layer is, pruned by default
or an output layer left whole), then every layer with weights that is kept whole, with why. ``--groups``: what
``prune=unit`` removes together instead, one row per family of dependency groups (its producers, how many groups,
the layers one group's slices touch), then why the other groups are kept whole. The file is loaded in Keras's safe
mode. Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from src.cli.errors import OneLineParser  # noqa: E402
from src.cli.native_stderr import native_stderr_silenced  # noqa: E402


def rows(path: Path, embeddings: bool) -> list[str]:
    """The listing's lines (a markdown table, then the kept layers)."""
    with native_stderr_silenced():  # TensorFlow's start-up log lines
        from src.training.keras_graph import read_graph, unit_kind
        from src.training.model import load_user_model

        graph = read_graph(load_user_model(path), embeddings)
    lines = ["| tensor | layer class | shape | weights | unit | pruned by default |", "|---|---|---|---:|---|---|"]
    for t in graph.tensors:
        if not t.ranked:
            continue
        default = "no: an output layer (prune.prune_last=true)" if t.layer in graph.outputs else "yes"
        unit = "none: weights only" if t.unit_axis is None else f"{unit_kind(t)} ({t.units})"
        lines.append(f"| {t.name} | {t.kind} | {'x'.join(map(str, t.shape))} | {math.prod(t.shape):,} | {unit} "
                     f"| {default} |")
    ranked = sum(math.prod(t.shape) for t in graph.tensors if t.ranked)
    lines.append(f"\n{sum(t.ranked for t in graph.tensors)} prunable tensors ({ranked:,} weights) in "
                 f"{len({t.layer for t in graph.tensors})} layers. Name a layer (or a nested model) to cover all its "
                 "tensors, layer/tensor for one: prune.layer_k='{NAME: 90}'.")
    if graph.kept:
        lines += ["", "Kept whole:", *(f"- {k}" for k in graph.kept)]
    return lines


def group_rows(path: Path) -> list[str]:
    """The ``--groups`` listing: a markdown table of the families, then the reasons groups are kept whole."""

    with native_stderr_silenced():
        from src.pruning.groups import groups
        from src.pruning.structured import families, family_name
        from src.training.channel_graph import channel_graph
        from src.training.model import load_user_model

        found = groups(*channel_graph(load_user_model(path)))
    lines = ["| family (producers) | groups | one group's slices |", "|---|---:|---|"]
    for family in families(found):
        touched = sorted({f"{node} ({side})" for node, side, _ in found[family[0]].slices})
        lines.append(f"| {family_name(found, family)} | {len(family)} | {', '.join(touched)} |")
    kept = sorted({g.kept_why for g in found if not g.prunable})
    lines.append(f"\n{sum(g.prunable for g in found)} of {len(found)} groups prunable, in {len(families(found))} "
                 "families: prune=unit removes k% of each family (prune.layer_k by a producer's name).")
    return lines + (["", "Kept whole:", *(f"- {k}" for k in kept)] if kept else [])


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m src.layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a Keras 3 .keras model file")
    parser.add_argument("--embeddings", action="store_true", help="list Embedding layers as prunable too")
    parser.add_argument("--groups", action="store_true", help="list the dependency groups prune=unit removes")
    args = parser.parse_args(argv)
    from src.cli.config import ConfigError
    from src.cli.model_checks import user_model_config

    with native_stderr_silenced():  # TensorFlow's start-up lines
        from src.training.model import ModelFileError

    try:
        user_model_config(args.path)
        path = args.path.expanduser()
        print("\n".join(group_rows(path) if args.groups else rows(path, args.embeddings)))
    except (ConfigError, ModelFileError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
