"""Static checks of the module's files, for what cannot run outside Slicer's GUI: Python 3.9 syntax
(Slicer 5.8), no engine import in Slicer's process, and a .ui that matches the code using it."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "MedLSDM" / "MedLSDM.py"
MODULE_FILES = [MODULE, *sorted((REPO / "MedLSDM" / "MedLSDMSlicer").glob("*.py"))]
UI = REPO / "Resources" / "UI" / "MedLSDM.ui"


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_python_3_9_syntax(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_no_engine_or_torch_import_in_slicer(path: Path) -> None:
    """The engine runs only in the worker process; Slicer's own process never imports it."""
    imported: List[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.append(node.module)
    assert not [name for name in imported if name.split(".")[0] in ("torch", "monai", "MedLSDMLib")]


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
