"""Stand-ins for the CTK and qMRML widgets that MedLSDM.ui names (ctkCollapsibleButton,
qMRMLNodeComboBox, qMRMLWidget), as PySide6 widgets that QUiLoader creates by class name, and
``loadUI``, which loads a .ui file with them. Only what the module and its .ui use; written for this
project from the widgets' documented behaviour, no Slicer or CTK code.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Dict, List, Optional

from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Property, Signal
from PySide6.QtUiTools import QUiLoader

import qt


class ctkCollapsibleButton(QtWidgets.QWidget):
    """A titled group that folds away; here a plain container with ``text`` and ``collapsed``."""

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._collapsed = False

    def _getText(self) -> str:
        return self._text

    def _setText(self, text: str) -> None:
        self._text = text

    def _getCollapsed(self) -> bool:
        return self._collapsed

    def _setCollapsed(self, collapsed: bool) -> None:
        self._collapsed = collapsed

    text = Property(str, _getText, _setText)
    collapsed = Property(bool, _getCollapsed, _setCollapsed)


class qMRMLWidget(QtWidgets.QWidget):
    """A widget with an MRML scene, handed on to the widgets its .ui connects to mrmlSceneChanged."""

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._scene = None
        self.sceneReceivers: List[QtWidgets.QWidget] = []

    def setMRMLScene(self, scene: Any) -> None:
        self._scene = scene
        for receiver in self.sceneReceivers:  # the .ui's mrmlSceneChanged(vtkMRMLScene*) connections
            receiver.setMRMLScene(scene)

    def mrmlScene(self) -> Any:
        return self._scene


class qMRMLNodeComboBox(QtWidgets.QWidget):
    """A node selector: ``currentNode()``, ``setCurrentNode(node)`` for nodes of ``nodeTypes`` in its
    scene, ``currentNodeChanged(vtkMRMLNode*)`` when the choice changes (also when the chosen node
    leaves the scene). The .ui's nodeTypes, noneEnabled... arrive as dynamic properties."""

    currentNodeChanged = Signal(object)

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self._scene = None
        self._node = None
        self._observer = None

    def setMRMLScene(self, scene: Any) -> None:
        if self._scene is not None and self._observer is not None:
            self._scene.RemoveObserver(self._observer)
        self._scene = scene
        self._observer = None
        if scene is not None:
            self._observer = scene.AddObserver(scene.NodeRemovedEvent, self._onNodeRemoved)
        self.setCurrentNode(None)

    def _onNodeRemoved(self, caller: Any, event: Any) -> None:
        if self._node is not None and not self._scene.IsNodePresent(self._node):
            self.setCurrentNode(None)

    def mrmlScene(self) -> Any:
        return self._scene

    def nodeTypes(self) -> List[str]:
        return [str(t) for t in (self.property("nodeTypes") or [])]

    def nodes(self) -> List[Any]:
        if self._scene is None:
            return []
        found = []
        for nodeType in self.nodeTypes():
            for i in range(self._scene.GetNumberOfNodesByClass(nodeType)):
                node = self._scene.GetNthNodeByClass(i, nodeType)
                if not node.GetHideFromEditors() and node not in found:
                    found.append(node)
        return found

    def currentNode(self) -> Any:
        return self._node

    def currentNodeID(self) -> str:
        return self._node.GetID() if self._node is not None else ""

    def setCurrentNode(self, node: Any) -> None:
        if node is not None:
            if self._scene is None or node.GetScene() is not self._scene:
                raise ValueError(f"{self.objectName()}: node {node.GetName()} is not in the selector's scene")
            if not any(node.IsA(t) for t in self.nodeTypes()):
                raise ValueError(f"{self.objectName()}: node {node.GetName()} is not a {self.nodeTypes()}")
        if node is self._node:
            return
        self._node = node
        self.currentNodeChanged.emit(node)


CUSTOM_WIDGETS = (ctkCollapsibleButton, qMRMLWidget, qMRMLNodeComboBox)


class UiLoadError(AssertionError):
    pass


def qtMessages() -> "MessageCollector":
    return MessageCollector()


class MessageCollector:
    """Collects Qt's warnings (qWarning and friends) while it is open."""

    def __init__(self) -> None:
        self.messages: List[str] = []

    def __enter__(self) -> "MessageCollector":
        self._previous = QtCore.qInstallMessageHandler(lambda mode, context, text: self.messages.append(text))
        return self

    def __exit__(self, *exc: Any) -> None:
        QtCore.qInstallMessageHandler(self._previous)


def loadUI(path: str) -> qt.Wrapper:
    """``slicer.util.loadUI``: the .ui as a widget tree, custom widgets as the stand-ins above. Any
    warning Qt gives while loading fails (an unknown property or class, a broken layout). The
    <connections> between custom widgets' MRML signals and slots are made here."""
    root = ElementTree.parse(path).getroot()
    connections = root.find("connections")
    pending: List[Dict[str, str]] = []
    if connections is not None:
        for connection in list(connections):
            pending.append({child.tag: child.text or "" for child in connection})
        root.remove(connections)
    data = QtCore.QByteArray(ElementTree.tostring(root, encoding="utf-8"))
    buffer = QtCore.QBuffer(data)
    buffer.open(QtCore.QIODevice.ReadOnly)
    loader = QUiLoader()
    for cls in CUSTOM_WIDGETS:
        loader.registerCustomWidget(cls)
    loader.setWorkingDirectory(QtCore.QDir(str(Path(path).parent)))
    with qtMessages() as collected:
        widget = loader.load(buffer)
    if widget is None or collected.messages:
        raise UiLoadError(f"{path} did not load cleanly: {loader.errorString()} {collected.messages}")
    byName = {w.objectName(): w for w in widget.findChildren(QtCore.QObject)}
    byName[widget.objectName()] = widget
    for connection in pending:
        sender, receiver = byName[connection["sender"]], byName[connection["receiver"]]
        if connection["signal"] == "mrmlSceneChanged(vtkMRMLScene*)" and \
                connection["slot"] == "setMRMLScene(vtkMRMLScene*)":
            sender.sceneReceivers.append(receiver)
        else:
            raise UiLoadError(f"the stand-in loader does not make the connection {connection}")
    return qt.Wrapper(widget)


def childWidgetVariables(widget: Any) -> Any:
    """``slicer.util.childWidgetVariables``: every named child as an attribute."""
    import types

    namespace = types.SimpleNamespace()
    for child in qt.unwrap(widget).findChildren(QtCore.QObject):
        if child.objectName():
            setattr(namespace, child.objectName(), qt.Wrapper(child))
    return namespace
