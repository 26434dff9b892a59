"""Exporting the inputs: segmentations as label maps on the reference volume's grid (one value per segment
name, mapped to the model's classes), the snapshot an edit is compared with, and the grids they lie on."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import slicer
import vtk

from .engine import GenerationError, useEngine
from .models import PathLike, findClass, mapFileTargets, modelClasses

useEngine()
from MedLSDMLib.io.grids import grid_differences  # noqa: E402
from MedLSDMLib.io.names import name_key  # noqa: E402

GEOMETRY_TOLERANCE = 1e-4  # mm for spacing and origin, and for the direction cosines
EDIT_SNAPSHOT_REFERENCE = "MedLSDMEditOriginal"  # segmentation -> its copy taken by startEditing


def sameNode(a: Any, b: Any) -> bool:
    """Whether two MRML nodes (either may be None) are the same node."""
    return a is not None and b is not None and a.GetID() == b.GetID()


@dataclass
class Geometry:
    """A volume's voxel grid: dimensions, spacing, origin and IJK-to-RAS directions."""

    dimensions: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    directions: Tuple[float, ...]

    @classmethod
    def of(cls, node: Any) -> "Geometry":
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASDirectionMatrix(matrix)
        directions = tuple(matrix.GetElement(r, c) for r in range(3) for c in range(3))
        return cls(tuple(node.GetImageData().GetDimensions()), tuple(node.GetSpacing()), tuple(node.GetOrigin()),
                   directions)

    def differences(self, other: "Geometry") -> List[str]:
        """What differs from ``other`` beyond GEOMETRY_TOLERANCE, in words (the engine's comparison)."""
        return grid_differences((self.dimensions, self.spacing, self.origin, self.directions),
                                (other.dimensions, other.spacing, other.origin, other.directions), GEOMETRY_TOLERANCE)


def writeVolume(volumeNode: Any, path: PathLike) -> None:
    """Write a volume node uncompressed (the worker reads it at once), or GenerationError."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.UseCompressionOff()
    if not storage.WriteData(volumeNode):
        raise GenerationError(f"{volumeNode.GetName()} could not be written to {path}: check the disk")


class InputExport:
    """The logic's exports (a mixin of GenerationLogic: ``temporaryRoot`` is its)."""

    temporaryRoot: Optional[str] = None

    def labelValues(self, segmentationNode: Any, segmentIds: Sequence[str], model: Optional[str],
                    mapping: Optional[Mapping[str, str]] = None,
                    mapFile: Optional[PathLike] = None) -> Tuple[Dict[str, int], List[str]]:
        """Label value of each segment name in the exported map (1, 2, ... in segment order) and the
        worker's ``--map VALUE=CLASS`` arguments. A segment maps to the class of its name, or of
        ``mapping[name]``, or of its row in ``mapFile`` (by name; a ``*`` row for the others).
        When the model's classes are known here, every unmatched segment is named in one
        GenerationError; otherwise the worker matches the names."""
        segmentation = segmentationNode.GetSegmentation()
        names: List[str] = []
        for segmentId in segmentIds:
            name = segmentation.GetSegment(segmentId).GetName()
            if name not in names:
                names.append(name)
        mapping = dict(mapping or {})
        byKey = {name_key(k): v for k, v in mapping.items()}
        unknown = [k for k in mapping if name_key(k) not in {name_key(n) for n in names}]
        if unknown:
            raise GenerationError(f"the mapping names segment(s) {', '.join(map(repr, unknown))} that "
                                  f"{segmentationNode.GetName()} does not have: its segments are {', '.join(names)}")
        classes = modelClasses(model)
        values = {name: index + 1 for index, name in enumerate(names)}
        byFile = {name_key(k) if k != "*" else k: v for k, v in (mapFileTargets(mapFile) if mapFile else {}).items()}
        targets = {name: byKey.get(name_key(name), byFile.get(name_key(name), byFile.get("*", name))) for name in names}
        if classes is None:
            return values, [f"{values[n]}={targets[n]}" for n in names]
        found = {name: findClass(targets[name], classes) for name in names}
        unmatched = [name for name in names if found[name] is None]
        if unmatched:
            table = ", ".join(f"{v}={n}" for v, n in classes)
            raise GenerationError(f"segment(s) {', '.join(map(repr, unmatched))} of {segmentationNode.GetName()} "
                                  f"match no class of the model ({table}): rename them, or map them to a class")
        return values, [f"{values[n]}={found[n]}" for n in names]

    def exportLabelmap(self, segmentationNode: Any, referenceVolumeNode: Any, segmentIds: Sequence[str],
                       values: Mapping[str, int], path: PathLike, voxels: Optional[List[Any]] = None) -> Geometry:
        """Write the segments as a label map (value per segment name, later segments on top) on the
        reference volume's grid, or on the segmentation's own grid; returns that grid. ``voxels``: a
        list that receives a copy of the label map's voxels (a k, j, i numpy array)."""
        scene = segmentationNode.GetScene()
        # In the scene, with its names marked as set: Slicer 5.8's export looks the table up by its ID
        # and, without the mark, renames every colour before matching segment names.
        colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "MedLSDM export colours")
        colors.SetTypeToUser()
        colors.SetNumberOfColors(max(values.values()) + 1)
        colors.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
        for name, value in values.items():
            colors.SetColor(value, name, 1.0, 1.0, 1.0, 1.0)
        if hasattr(colors, "NamesInitialisedOn"):
            colors.NamesInitialisedOn()
        ids = vtk.vtkStringArray()
        for segmentId in segmentIds:
            ids.InsertNextValue(segmentId)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MedLSDM export")
        try:
            exported = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmap, referenceVolumeNode, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
                colors)
            where = f"the grid of {referenceVolumeNode.GetName()}" if referenceVolumeNode else "its own grid"
            if not exported or labelmap.GetImageData() is None:
                raise GenerationError(f"segmentation {segmentationNode.GetName()} could not be exported on {where}")
            if labelmap.GetImageData().GetScalarRange()[1] <= 0:
                raise GenerationError(f"segmentation {segmentationNode.GetName()} is empty on {where}: paint at "
                                      "least one segment (Segment Editor), or choose the volume it was painted on")
            geometry = Geometry.of(labelmap)
            if voxels is not None:
                voxels.append(slicer.util.arrayFromVolume(labelmap).copy())
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(str(path))
            storage.UseCompressionOff()
            if not storage.WriteData(labelmap):
                raise GenerationError(f"the exported label map could not be written to {path}: check the disk")
            return geometry
        finally:
            display = labelmap.GetDisplayNode()
            colorNode = display.GetColorNode() if display is not None else None
            for node in (colorNode, display, labelmap, colors):
                if node is not None and node.GetScene() is scene:
                    scene.RemoveNode(node)

    def startEditing(self, segmentationNode: Any) -> Any:
        """Snapshot ``segmentationNode`` before the user edits it: a hidden copy in the same scene (saved
        with it), referenced from the segmentation; a previous snapshot is replaced. Returns the copy."""
        if segmentationNode is None:
            raise GenerationError("choose the segmentation of the real volume before starting to edit")
        segmentation = segmentationNode.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            raise GenerationError(f"segmentation {segmentationNode.GetName()} has no segments: editing needs the "
                                  "segmentation of the real volume (load it, or paint it in Segment Editor)")
        scene = segmentationNode.GetScene()
        previous = self.editSnapshot(segmentationNode)
        snapshot = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                           scene.GenerateUniqueName(f"{segmentationNode.GetName()} before editing"))
        snapshot.GetSegmentation().DeepCopy(segmentation)
        snapshot.SetHideFromEditors(True)
        segmentationNode.SetNodeReferenceID(EDIT_SNAPSHOT_REFERENCE, snapshot.GetID())
        if previous is not None:
            scene.RemoveNode(previous)
        return snapshot

    @staticmethod
    def editSnapshot(segmentationNode: Any) -> Any:
        """The snapshot ``startEditing`` took of ``segmentationNode`` (None when there is none)."""
        if segmentationNode is None:
            return None
        return segmentationNode.GetNodeReference(EDIT_SNAPSHOT_REFERENCE)

    def _editLabelValues(self, edited: Any, editedIds: Sequence[str], original: Any, originalIds: Sequence[str],
                         model: Optional[str], mapping: Optional[Mapping[str, str]],
                         mapFile: Optional[PathLike]) -> Tuple[Dict[str, int], List[str]]:
        """One label value per segment name over both segmentations (a segment removed by the edit
        keeps its value), and the worker's ``--map VALUE=CLASS`` arguments."""
        values, mapArgs = self.labelValues(edited, editedIds, model, mapping, mapFile)
        known = {name_key(name) for name in values}
        originalNames = {original.GetSegmentation().GetSegment(i).GetName() for i in originalIds}
        if any(name_key(name) not in known for name in originalNames):
            restricted = {k: v for k, v in (mapping or {}).items()
                          if name_key(k) in {name_key(n) for n in originalNames}}
            originalValues, originalArgs = self.labelValues(original, originalIds, model, restricted, mapFile)
            classes = {name: arg.split("=", 1)[1] for name, arg in zip(originalValues, originalArgs)}
            for name in originalValues:
                if name_key(name) not in known:
                    values[name] = max(values.values()) + 1
                    mapArgs.append(f"{values[name]}={classes[name]}")
                    known.add(name_key(name))
        return values, mapArgs

    def changedRegion(self, volumeNode: Any, segmentationNode: Any, originalSegmentation: Any = None) -> Any:
        """The voxels of ``volumeNode``'s grid (a k, j, i boolean numpy array) where the segmentation's
        label differs from the original's (default: its ``startEditing`` snapshot)."""
        original = originalSegmentation if originalSegmentation is not None else self._snapshotOf(segmentationNode)
        folder = self._makeTemporaryFolder()
        try:
            edited, before = self._exportPair(volumeNode, segmentationNode, original, None, None, None, Path(folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return edited != before

    def _snapshotOf(self, segmentationNode: Any) -> Any:
        snapshot = self.editSnapshot(segmentationNode)
        if snapshot is None:
            raise GenerationError(f"no snapshot of {segmentationNode.GetName()}: click Start editing before "
                                  "changing the segmentation (or pass originalSegmentation)")
        return snapshot

    def _exportPair(self, volumeNode: Any, segmentationNode: Any, original: Any, model: Optional[str],
                    mapping: Optional[Mapping[str, str]], mapFile: Optional[PathLike], folder: Path,
                    mapArgs: Optional[List[str]] = None) -> Tuple[Any, Any]:
        """Export the edited and the original segmentation on the volume's grid with the same label
        values, as folder/labels.nrrd and folder/original.nrrd; returns both voxel arrays."""
        editedIds, originalIds = self._segmentIds(segmentationNode), self._segmentIds(original)
        values, args = self._editLabelValues(segmentationNode, editedIds, original, originalIds, model, mapping,
                                             mapFile)
        if mapArgs is not None:
            mapArgs.extend(args)
        voxels: List[Any] = []
        self.exportLabelmap(segmentationNode, volumeNode, editedIds, values, folder / "labels.nrrd", voxels)
        self.exportLabelmap(original, volumeNode, originalIds, values, folder / "original.nrrd", voxels)
        return voxels[0], voxels[1]

    @staticmethod
    def _segmentIds(segmentationNode: Any, chosen: Optional[Sequence[str]] = None) -> List[str]:
        """The chosen segment IDs (default: all), checked to exist; at least one."""
        segmentation = segmentationNode.GetSegmentation()
        if chosen is None:
            ids = vtk.vtkStringArray()
            segmentation.GetSegmentIDs(ids)
            chosen = [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]
        unknown = [segmentId for segmentId in chosen if segmentation.GetSegment(segmentId) is None]
        if unknown:
            raise GenerationError(f"segmentation {segmentationNode.GetName()} has no segment(s) with ID "
                                  f"{', '.join(unknown)}")
        if not chosen:
            raise GenerationError(f"segmentation {segmentationNode.GetName()} has no segments: add and paint "
                                  "at least one segment (Segment Editor)")
        return list(chosen)

    def _makeTemporaryFolder(self) -> str:
        root = self.temporaryRoot or getattr(slicer.app, "temporaryPath", None) or None
        return tempfile.mkdtemp(prefix="MedLSDM-", dir=root)
