"""The engine's layers: every import of a MedLSDMLib module points to its own layer or one below
(docs/ARCHITECTURE.md), no modules import each other in a circle (inside a layer, where the first rule
allows it), and the modules the Slicer module imports never import torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

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
    "MedLSDMLib.generation.options",
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
def import_graph() -> Dict[str, Set[str]]:
    """Module -> the engine modules it imports (lazy and TYPE_CHECKING imports too); ``from
    MedLSDMLib.generation import edit`` is the module generation.edit, a package alone its __init__."""
    known = modules()

    def resolve(name: str) -> Optional[str]:
        return name if name in known else (f"{name}.__init__" if f"{name}.__init__" in known else None)

    graph: Dict[str, Set[str]] = {}
    for name, path in known.items():
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "MedLSDMLib":
                package = node.module[len("MedLSDMLib.") :] if "." in node.module else ""
                for alias in node.names:
                    child = f"{package}.{alias.name}" if package else alias.name
                    targets.add(resolve(child) or resolve(package or "__init__") or package)
            elif isinstance(node, ast.Import):
                targets |= {resolve(a.name[len("MedLSDMLib.") :]) or a.name for a in node.names
                            if a.name.startswith("MedLSDMLib.")}
        graph[name] = {target for target in targets if target in known and target != name}
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The import circles of a graph, each as the modules along it (depth-first search)."""
    found: List[List[str]] = []
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_module_imports_itself_through_others() -> None:
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_circle_check_would_catch_one() -> None:
    graph = {"generation.pipeline": {"generation.edit"}, "generation.edit": {"generation.runner", "generation.pipeline"},
             "generation.runner": set()}
    assert circles(graph) == [["generation.edit", "generation.pipeline", "generation.edit"]]
    assert import_graph()["generation.pipeline"] >= {"generation.edit", "generation.reconstruct", "generation.runner"}


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
