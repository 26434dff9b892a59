"""Stand-in for ``slicer.ScriptedLoadableModule``: the four base classes of a scripted module, with
what MedLSDM uses of them. Written for this project from the documented API, no Slicer code."""
from __future__ import annotations

import unittest
from typing import Any, List

from PySide6 import QtWidgets
from PySide6.QtCore import Property

import qt
import slicer


class ModuleParent:
    """What a module's ``parent`` holds (title, categories, help...)."""

    def __init__(self) -> None:
        self.title = ""
        self.categories: List[str] = []
        self.dependencies: List[str] = []
        self.contributors: List[str] = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.icon = None


class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__


class ModulePanel(QtWidgets.QWidget):
    """The module widget's ``parent``: a panel with a vertical layout and ``isEntered``."""

    def __init__(self) -> None:
        super().__init__()
        self._entered = False
        QtWidgets.QVBoxLayout(self)

    def _getEntered(self) -> bool:
        return self._entered

    def _setEntered(self, entered: bool) -> None:
        self._entered = entered

    isEntered = Property(bool, _getEntered, _setEntered)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent if parent is not None else qt.Wrapper(ModulePanel())
        self.layout = self.parent.layout()
        self.moduleName = type(self).__name__[:-len("Widget")]

    def setup(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent: Any = None) -> None:
        self.moduleName = type(self).__name__[:-len("Logic")]

    def getParameterNode(self) -> Any:
        """The scene's one parameter node of this module (a singleton), made on first use."""
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            node = scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    """Slicer's self-test base: ``delayDisplay`` messages are recorded in ``displayed``."""

    displayed: List[str] = []

    def delayDisplay(self, message: str, msec: int = 1000) -> None:
        ScriptedLoadableModuleTest.displayed.append(message)
