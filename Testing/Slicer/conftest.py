"""Fixtures of the Slicer logic suite: real MRML from the ``slicer-core`` package, plus stand-ins for
the three things it lacks (``slicer.app``, ``qt`` and the module registry ``slicer.modules``).

Run in its own environment (slicer-core pins its own vtk), from the repository root:

    MEDLSDM_WORKER_PYTHON=.venv/bin/python .venv-slicer/bin/python -m pytest Testing/Slicer --confcutdir=Testing/Slicer

The worker runs for real, as a subprocess of the Python in MEDLSDM_WORKER_PYTHON (the main
environment, which has torch), on the engine suite's tiny random-weight bundle.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import numpy as np
import pytest
import slicer
import slicer.util

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "MedLSDM"))  # the module's folder, as Slicer puts it on sys.path
sys.path.insert(0, str(Path(__file__).resolve().parent))  # mrml_scenes

WORKER_PYTHON = os.environ.get("MEDLSDM_WORKER_PYTHON") or str(REPO / ".venv" / "bin" / "python")
if not Path(WORKER_PYTHON).is_file():
    pytest.exit(f"no Python to run the worker at {WORKER_PYTHON}: set MEDLSDM_WORKER_PYTHON (make test does)",
                returncode=4)
os.environ["MEDLSDM_WORKER_PYTHON"] = WORKER_PYTHON
os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # the tiny networks run fastest on one thread

TIMESTEPS = 1000  # the tiny model's training steps: long enough for a run to be cancelled half-way


# ---------------------------------------------------------------------------------------------
# Stand-ins for what slicer-core lacks
# ---------------------------------------------------------------------------------------------

class StartupEnvironment:
    """What ``slicer.app.startupEnvironment()`` gives (a QProcessEnvironment): here, this process's."""

    def keys(self) -> List[str]:
        return list(os.environ)

    def value(self, name: str) -> str:
        return os.environ[name]


class App:
    """The part of ``slicer.app`` the logic uses."""

    def __init__(self, temporaryPath: str) -> None:
        self.temporaryPath = temporaryPath

    def processEvents(self) -> None:
        runDueTimers()

    def startupEnvironment(self) -> StartupEnvironment:
        return StartupEnvironment()


_timers: List[Tuple[float, Callable[[], None]]] = []


class QTimer:
    """``qt.QTimer.singleShot``: callbacks run by ``runDueTimers`` (the test's event loop)."""

    @staticmethod
    def singleShot(msec: int, callback: Callable[[], None]) -> None:
        _timers.append((time.monotonic() + msec / 1000.0, callback))


def runDueTimers() -> None:
    now = time.monotonic()
    due = [t for t in _timers if t[0] <= now]
    for timer in due:
        _timers.remove(timer)
        timer[1]()


def runEventLoop(until: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run the timers until ``until()`` holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out waiting in the event loop"
        runDueTimers()
        time.sleep(0.01)


sys.modules["qt"] = types.ModuleType("qt")
sys.modules["qt"].QTimer = QTimer  # type: ignore[attr-defined]


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[slicer.vtkMRMLScene]:
    """A fresh MRML scene as slicer.mrmlScene, its module logics in slicer.modules, and
    slicer.app with its temporary folder in tmp_path/slicer-temp."""
    mrmlScene = slicer.vtkMRMLScene()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(mrmlScene)  # also registers the segmentation converter rules
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(mrmlScene)
    temporary = tmp_path / "slicer-temp"
    temporary.mkdir()
    slicer.mrmlScene = mrmlScene
    slicer.app = App(str(temporary))
    slicer.modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=lambda: segmentations),
                                           volumes=types.SimpleNamespace(logic=lambda: volumes))
    yield mrmlScene
    _timers.clear()
    for name in ("mrmlScene", "app", "modules"):
        delattr(slicer, name)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine suite's tiny random-weight bundle, saved by the worker's Python."""
    folder = tmp_path_factory.mktemp("model") / "tiny-brain"
    subprocess.run([WORKER_PYTHON, str(Path(__file__).with_name("tiny_bundle.py")), str(folder), str(TIMESTEPS)],
                   check=True)
    return folder


from mrml_scenes import (ORIGIN, SIZE, SPACING, OBLIQUE, addReferenceVolume, addSegmentation, ijkToRas,  # noqa: E402,F401
                         livingProcessesInGroup, nodesOfClass, rotation, shells)
