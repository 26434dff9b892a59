"""Fixtures of the Slicer module suite: ``MedLSDM/MedLSDM.py`` itself (Module, Widget, Logic, Test) run
on real MRML from the ``slicer-core`` package, with the project's own stand-ins (standins/) for what
only the Slicer application has: ``qt`` (PythonQt's habits over PySide6, offscreen), ``ctk`` and the
qMRML widgets the .ui names, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``,
``slicer.app`` with its layout manager, and the dialogs of ``slicer.util``.

Run in the Slicer environment, from the repository root (make test does):

    MEDLSDM_WORKER_PYTHON=.venv/bin/python .venv-slicer/bin/python -m pytest Testing/SlicerModule \\
        --confcutdir=Testing/SlicerModule
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Iterator

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt loads

import pytest  # noqa: E402
import slicer  # noqa: E402
import slicer.util  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE / "standins"), str(REPO / "MedLSDM"), str(REPO / "Testing" / "Slicer")]

from PySide6 import QtWidgets  # noqa: E402

import application  # noqa: E402
import ctk  # noqa: E402,F401
import parameterNodeWrapper  # noqa: E402
import qt  # noqa: E402
import ScriptedLoadableModule  # noqa: E402

QT_APPLICATION = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["MedLSDM tests"])
for name, module in (("qt", qt), ("ctk", ctk), ("slicer.ScriptedLoadableModule", ScriptedLoadableModule),
                     ("slicer.parameterNodeWrapper", parameterNodeWrapper)):
    sys.modules[name] = module
slicer.ScriptedLoadableModule = ScriptedLoadableModule
slicer.parameterNodeWrapper = parameterNodeWrapper

WORKER_PYTHON = os.environ.get("MEDLSDM_WORKER_PYTHON") or str(REPO / ".venv" / "bin" / "python")
os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
TIMESTEPS = 1000


@pytest.fixture
def dialogs(monkeypatch: pytest.MonkeyPatch) -> application.Dialogs:
    shown = application.Dialogs()
    application.install(monkeypatch, shown)
    return shown


@pytest.fixture
def scene(tmp_path: Path, dialogs: application.Dialogs, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh scene as slicer.mrmlScene, with slicer.app (temporary folder, layout manager),
    slicer.modules and no worker Python (MEDLSDM_WORKER_PYTHON unset: the module's own
    dependency handling runs; tests that run the worker set logic.pythonExecutable)."""
    monkeypatch.delenv("MEDLSDM_WORKER_PYTHON", raising=False)
    mrmlScene = slicer.vtkMRMLScene()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(mrmlScene)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(mrmlScene)
    temporary = tmp_path / "slicer-temp"
    temporary.mkdir()
    slicer.mrmlScene = mrmlScene
    slicer.app = application.App(str(temporary), mrmlScene)
    slicer.modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=lambda: segmentations),
                                           volumes=types.SimpleNamespace(logic=lambda: volumes))
    import MedLSDM

    monkeypatch.setattr(MedLSDM.MedLSDMLogic, "_dependenciesReady", False)
    yield mrmlScene
    qt.clearTimers()
    for name in ("mrmlScene", "app", "modules"):
        delattr(slicer, name)


@pytest.fixture(params=["5.8", "5.10", "5.12"])
def slicerVersion(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The parameter node wrapper's GUI binding as each Slicer version has it."""
    monkeypatch.setattr(parameterNodeWrapper, "BEHAVIOUR", request.param)
    return request.param


@pytest.fixture
def widget(scene: Any) -> Iterator[Any]:
    """The module's panel, set up and entered, as Slicer does when the user opens the module."""
    import MedLSDM

    parameterNodeWrapper.liveConnectors.clear()
    module = MedLSDM.MedLSDM(ScriptedLoadableModule.ModuleParent())
    assert module.parent.title == "MedLSDM"
    panel = MedLSDM.MedLSDMWidget()
    panel.setup()
    panel.parent.isEntered = True
    panel.enter()
    yield panel
    panel.cleanup()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine suite's tiny random-weight bundle, saved by the worker's Python."""
    if not Path(WORKER_PYTHON).is_file():
        pytest.skip(f"no Python to run the worker at {WORKER_PYTHON}: set MEDLSDM_WORKER_PYTHON")
    folder = tmp_path_factory.mktemp("model") / "tiny-brain"
    subprocess.run([WORKER_PYTHON, str(REPO / "Testing" / "Slicer" / "tiny_bundle.py"), str(folder), str(TIMESTEPS)],
                   check=True)
    return folder
