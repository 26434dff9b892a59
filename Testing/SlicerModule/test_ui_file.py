"""Resources/UI/MedLSDM.ui loaded by Qt itself (PySide6's QUiLoader, offscreen)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from PySide6 import QtCore

from widgets import loadUI

UI = Path(__file__).resolve().parents[2] / "Resources" / "UI" / "MedLSDM.ui"
# The widgets Slicer's own Designer plugins provide: plain Qt cannot make them and says so.
KNOWN_CUSTOM_WIDGETS = {"ctkCollapsibleButton", "qMRMLNodeComboBox", "qMRMLWidget"}


PLAIN_LOAD = """
import json, os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6 import QtCore, QtWidgets
from PySide6.QtUiTools import QUiLoader
app = QtWidgets.QApplication([])
messages = []
QtCore.qInstallMessageHandler(lambda mode, context, text: messages.append(text))
loader = QUiLoader()
widget = loader.load(sys.argv[1])
print(json.dumps({"loaded": widget is not None, "error": loader.errorString(), "messages": messages}))
"""


def test_plain_qt_reports_only_the_known_custom_widget_fallbacks() -> None:
    """In a fresh process: custom widgets registered with QUiLoader stay registered in this one."""
    result = json.loads(subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(UI)], check=True, capture_output=True,
                                       text=True).stdout)
    assert result["loaded"], result["error"]
    fallbacks = set()
    fallbackConnections = 0
    others = []
    for message in result["messages"]:
        match = re.search(r"unable to create a custom widget of the class '(\w+)'; defaulting to base class", message)
        if match:
            fallbacks.add(match.group(1))
        elif message == "QObject::connect: No such signal QWidget::mrmlSceneChanged(vtkMRMLScene*)":
            fallbackConnections += 1  # the scene signal of qMRMLWidget, which fell back to QWidget
        elif not re.fullmatch(r"QObject::connect:  \((sender|receiver) name: +'\w+'\)", message):
            others.append(message)
    assert fallbacks == KNOWN_CUSTOM_WIDGETS
    assert fallbackConnections == 3  # the three node selectors
    assert others == []  # no unknown property, class, layout or connection


def test_the_stand_in_loader_makes_every_widget_and_the_scene_connections() -> None:
    ui = loadUI(str(UI))  # raises on any Qt warning
    top = ui._obj
    names = {w.objectName() for w in top.findChildren(QtCore.QObject)}
    assert {"segmentationSelector", "generateButton", "progressBar", "logTextEdit"} <= names
    assert {r.objectName() for r in top.sceneReceivers} == {"segmentationSelector", "referenceVolumeSelector",
                                                            "outputVolumeSelector"}
