"""The package's import direction: subpackages import only those below them, and the pure wings (pruning, engine)
run without TensorFlow, Keras, MLflow or Hydra."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Bottom to top: a subpackage may import those before it in this list, never one after it.
LAYERS = ["pruning", "engine", "training", "store", "cli", "report", "records"]
PURE = {"pruning": set(), "engine": set()}  # the bottom wings: they import no other subpackage at all
HEAVY = ("tensorflow", "keras", "mlflow", "hydra", "omegaconf")


def src_imports(path: Path) -> set[str]:
    """The ``src.<subpackage>`` names a module imports, anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "src":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("src.")}
    return found


def test_every_module_lives_in_a_known_subpackage_or_is_an_entry_point() -> None:
    top = {p.stem for p in SRC.glob("*.py")}
    assert top == {"__init__", "run", "export", "layers", "job"}, "a new top-level module: put it in its wing"
    assert {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((SRC / layer / "__init__.py").read_text()))
        assert doc and "import" in doc, f"src/{layer}/__init__.py: say what lives here and what it may import"


@pytest.mark.parametrize("layer", LAYERS)
def test_no_subpackage_imports_one_above_it(layer: str) -> None:
    allowed = PURE.get(layer, set(LAYERS[:LAYERS.index(layer)]))
    for module in sorted((SRC / layer).glob("*.py")):
        upward = src_imports(module) - allowed - {layer}
        assert not upward, f"{module.relative_to(SRC.parent)} imports src.{sorted(upward)} (above or beside it)"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from src.records.replay import pruned_net\nfrom src.engine import choice\n")
    assert src_imports(module) == {"records", "engine"}


def test_engine_and_pruning_import_without_tensorflow_keras_mlflow_or_hydra() -> None:
    """Every module of the two pure wings imports in a process where the heavy libraries cannot be imported."""
    modules = [f"src.{layer}.{p.stem}" for layer in PURE for p in sorted((SRC / layer).glob("*.py"))
               if p.stem != "__init__"]
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import importlib
for m in {modules!r}:
    importlib.import_module(m)
print("imported", len({modules!r}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=SRC.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"imported {len(modules)}" in done.stdout and len(modules) >= 8
