"""The engine's layers: every import of a MedLSDMLib module points to its own layer or one below
(docs/ARCHITECTURE.md), and the modules the Slicer module imports never import torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "MedLSDMLib"
# bottom to top; a module may import from its own layer and those before it
LAYERS = [
    ("errors", "card", "protocol"),
    ("runtime",),
    ("io",),
    ("models",),
    ("sampling",),
    ("evaluation",),
    ("generation",),
    ("training",),
    ("cli", "worker", "__main__", "__init__"),
]
# what the Slicer module imports (Testing/Slicer/test_module_files.py: TORCH_FREE_ENGINE, which also
# keeps numpy and SimpleITK out), and the label and grid code on numpy and SimpleITK beside them
TORCH_FREE = (
    "MedLSDMLib.errors",
    "MedLSDMLib.card",
    "MedLSDMLib.protocol",
    "MedLSDMLib.runtime.progress",
    "MedLSDMLib.io.mapfile",
    "MedLSDMLib.io.names",
    "MedLSDMLib.io.grids",
    "MedLSDMLib.io.labels",
    "MedLSDMLib.io.geometry",
    "MedLSDMLib.models.registry",
    "MedLSDMLib.generation.edit_options",
)


def layer_of(module: str) -> int:
    """Layer index of a dotted module name below MedLSDMLib (``io.volumes`` → the io layer)."""
    first = module.split(".")[0] if module else "__init__"
    for index, names in enumerate(LAYERS):
        if first in names:
            return index
    raise AssertionError(f"MedLSDMLib.{module} belongs to no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def engine_imports(path: Path) -> List[Tuple[int, str]]:
    """(line, module below MedLSDMLib) of every import of the package in a file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "MedLSDMLib":
                found += [(node.lineno, alias.name) for alias in node.names if alias.name != "__version__"]
            elif node.module.startswith("MedLSDMLib."):
                found.append((node.lineno, node.module[len("MedLSDMLib.") :]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "relative import"))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name[len("MedLSDMLib.") :]) for a in node.names if a.name.startswith("MedLSDMLib.")]
    return found


def modules() -> Dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_points_down() -> None:
    upward = []
    for name, path in modules().items():
        own = layer_of(name)
        for line, target in engine_imports(path):
            assert target != "relative import", f"{path}:{line}: use absolute MedLSDMLib imports"
            if layer_of(target) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports MedLSDMLib.{target}")
    assert not upward, "imports from a layer above:\n" + "\n".join(upward)


def test_layer_check_would_catch_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from MedLSDMLib.generation.pipeline import Generator\n")
    assert layer_of(engine_imports(bad)[0][1]) > layer_of("io.volumes")


@pytest.mark.subprocess
@pytest.mark.parametrize("module", TORCH_FREE)
def test_modules_for_the_slicer_module_never_import_torch(module: str) -> None:
    code = (
        "import sys\n"
        "for name in ('torch', 'monai'):\n"
        "    sys.modules[name] = None  # any import of them fails\n"
        f"import {module}\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
