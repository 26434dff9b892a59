"""Static checks of the module's files, for what cannot run outside Slicer's GUI: Python 3.9 syntax
(Slicer 5.8), only the engine's torch-free modules in Slicer's process, and a .ui that matches the code
using it."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "MedLSDM" / "MedLSDM.py"
MODULE_FILES = [MODULE, *sorted((REPO / "MedLSDM" / "MedLSDMSlicer").glob("*.py"))]
UI = REPO / "Resources" / "UI" / "MedLSDM.ui"
# the engine's modules that Slicer's own process imports instead of copies of them: the worker protocol,
# the model registry, label names, grid comparison, the mapping-file parser, the edit options, the errors
TORCH_FREE_ENGINE = ("MedLSDMLib.protocol", "MedLSDMLib.errors", "MedLSDMLib.models.registry", "MedLSDMLib.io.names",
                     "MedLSDMLib.io.grids", "MedLSDMLib.io.mapfile", "MedLSDMLib.generation.edit_options")
HEAVY = ("torch", "monai", "numpy", "SimpleITK", "scipy", "tqdm")


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_python_3_9_syntax(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))


def imports(path: Path) -> List[str]:
    """The absolute modules a file imports (anywhere in it), and its relative ones with their dots."""
    imported: List[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "MedLSDMLib" and not node.level:
            imported += [f"MedLSDMLib.{alias.name}" for alias in node.names]  # from MedLSDMLib import protocol
        elif isinstance(node, ast.ImportFrom):
            imported.append("." * node.level + (node.module or ""))
    return imported


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_no_engine_or_torch_import_in_slicer(path: Path) -> None:
    """The engine runs in the worker process; Slicer's own process imports only its torch-free
    modules (TORCH_FREE_ENGINE), never torch or MONAI."""
    imported = [name for name in imports(path) if not name.startswith(".")]
    assert not [name for name in imported if name.split(".")[0] in ("torch", "monai")]
    assert not [name for name in imported if name.split(".")[0] == "MedLSDMLib" and name not in TORCH_FREE_ENGINE]


def test_slicer_imports_every_listed_engine_module() -> None:
    imported = {name for path in MODULE_FILES for name in imports(path)}
    assert set(TORCH_FREE_ENGINE) - {"MedLSDMLib.errors"} <= imported


@pytest.mark.parametrize("module", TORCH_FREE_ENGINE)
def test_the_engine_modules_slicer_imports_are_torch_free(module: str) -> None:
    """What the Slicer process imports from the engine imports nothing heavy, directly or through the
    engine modules it imports in turn: imported here with those packages made unimportable."""
    code = (
        "import sys\n"
        f"for name in {HEAVY!r}:\n"
        "    sys.modules[name] = None  # any import of them fails\n"
        f"import {module}\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def uiWidgets() -> Dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI).getroot().iter("widget")}


def parameterNames() -> Set[str]:
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedLSDMParameterNode")
    return {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_every_ui_parameter_binding_names_a_parameter() -> None:
    bound = {}
    for name, widget in uiWidgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    assert set(bound.values()) <= parameterNames()
    assert set(bound.values()) == parameterNames() - {"model"}  # the model combo is filled and bound by code


def test_every_widget_the_module_uses_is_in_the_ui() -> None:
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text(encoding="utf-8")))
    assert used and used <= set(uiWidgets())


def test_node_selectors_show_the_right_node_types() -> None:
    widgets = uiWidgets()
    expected = {"segmentationSelector": "vtkMRMLSegmentationNode", "referenceVolumeSelector": "vtkMRMLScalarVolumeNode",
                "outputVolumeSelector": "vtkMRMLScalarVolumeNode"}
    for name, nodeType in expected.items():
        types = [s.text for p in widgets[name].findall("property") if p.get("name") == "nodeTypes"
                 for s in p.iter("string")]
        assert types == [nodeType], name
    connected = {c.findtext("receiver") for c in ElementTree.parse(UI).getroot().iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert connected == set(expected)
