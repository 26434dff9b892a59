"""Scenes for the Slicer suites (the logic's here, the module's in Testing/SlicerModule): an oblique,
anisotropic reference volume, a segmentation painted on it, and checks on real MRML."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import slicer
import slicer.util

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


def livingProcessesInGroup(pgid: int, settle: float = 2.0) -> List[int]:
    """Processes of process group ``pgid`` that still run (zombies, which only wait to be reaped
    by their parent or init, do not count). Reads Linux's /proc. A process killed a moment ago may
    have closed its pipes before it is a zombie: it gets up to ``settle`` seconds to end."""
    deadline = time.monotonic() + settle
    while True:
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
        if not living or time.monotonic() > deadline:
            return living
        time.sleep(0.02)
