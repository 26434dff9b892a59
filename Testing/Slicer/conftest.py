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


# ---------------------------------------------------------------------------------------------
# An oblique, anisotropic reference volume and a segmentation painted on it
# ---------------------------------------------------------------------------------------------

SIZE = (21, 27, 17)  # i, j, k
SPACING = (1.3, 0.9, 2.5)
ORIGIN = (10.25, -5.5, 3.125)


def rotation(axis: Tuple[float, float, float], degrees: float) -> np.ndarray:
    """A 3x3 rotation about ``axis`` (Rodrigues): a real obliquity, not a flip or a permutation."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * cross + (1 - np.cos(a)) * cross @ cross


OBLIQUE = rotation((1.0, 2.0, 3.0), 25.0)


def addReferenceVolume(scene: slicer.vtkMRMLScene, name: str = "T1", size: Tuple[int, int, int] = SIZE,
                       spacing: Tuple[float, float, float] = SPACING, origin: Tuple[float, float, float] = ORIGIN,
                       directions: np.ndarray = OBLIQUE) -> slicer.vtkMRMLScalarVolumeNode:
    """A volume of noise on the given grid (by default odd-sized, anisotropic and oblique)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    voxels = np.random.default_rng(0).normal(100.0, 20.0, size[::-1]).astype(np.int16)  # k, j, i
    slicer.util.updateVolumeFromArray(node, voxels)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    node.SetIJKToRASDirections(*directions.flatten().tolist())
    return node


def shells() -> List[np.ndarray]:
    """Three nested shells (k, j, i masks) on the reference grid: outer, middle, inner."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in SIZE[::-1]], indexing="ij")
    radius = np.sqrt(sum(g ** 2 for g in grids))
    return [(radius < r).astype(np.uint8) for r in (0.95, 0.7, 0.4)]


def addSegmentation(scene: slicer.vtkMRMLScene, reference: slicer.vtkMRMLScalarVolumeNode,
                    names: Tuple[str, ...] = ("csf", "Grey Matter", "white_matter"),
                    name: str = "brain") -> slicer.vtkMRMLSegmentationNode:
    """A segmentation painted on ``reference``: one nested shell per name (later ones on top)."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for segmentName, mask in zip(names, shells()):
        segmentId = node.GetSegmentation().AddEmptySegment("", segmentName)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, segmentId, reference)
    return node


def ijkToRas(node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def nodesOfClass(scene: slicer.vtkMRMLScene, className: str) -> list:
    return [scene.GetNthNodeByClass(i, className) for i in range(scene.GetNumberOfNodesByClass(className))]


def livingProcessesInGroup(pgid: int) -> List[int]:
    """Processes of process group ``pgid`` that still run (zombies, which only wait to be reaped
    by their parent or init, do not count). Reads Linux's /proc."""
    living = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            living.append(int(entry.name))
    return living
