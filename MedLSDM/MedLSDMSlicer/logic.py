"""Generation from Slicer segmentations: export onto the reference grid, the worker process, and
loading the results back with their geometry checked.

The engine (MedLSDMLib) runs in the worker process; this module imports only its torch-free modules
(see engine.py): the worker protocol, the model registry, label names, grid comparison, the mapping-file
parser and the edit options. It works in Slicer and on the MRML classes of the ``slicer-core`` package.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import slicer
import vtk

from .engine import GenerationError, engineFolder, useEngine
from .process import Event, WorkerProcess

useEngine()
# the engine's torch-free modules (Testing/Slicer/test_module_files.py: TORCH_FREE_ENGINE)
from MedLSDMLib import protocol  # noqa: E402
from MedLSDMLib.errors import InputError, MedLSDMError  # noqa: E402
from MedLSDMLib.generation.edit_options import DEFAULT_MARGIN  # noqa: E402
from MedLSDMLib.io.grids import grid_differences  # noqa: E402
from MedLSDMLib.io.mapfile import read_map_file  # noqa: E402
from MedLSDMLib.io.names import class_index, name_key  # noqa: E402
from MedLSDMLib.models.registry import (ModelEntry, known_models, local_model_folder, model_classes,  # noqa: E402
                                        resources_dir)

__all__ = ["DEFAULT_MARGIN", "GenerationError", "engineFolder"]  # re-exported for MedLSDM.py

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[str, int, int], None]
LogCallback = Callable[[str], None]
DEVICES = {"auto": "auto", "gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}
GEOMETRY_TOLERANCE = 1e-4  # mm for spacing and origin, and for the direction cosines
POLL_INTERVAL_MS = 100
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
EDIT_SNAPSHOT_REFERENCE = "MedLSDMEditOriginal"  # segmentation -> its copy taken by startEditing
VARIABILITY_REFERENCE = "MedLSDMVariability"  # edited volume -> its standard-deviation map


# ---------------------------------------------------------------------------------------------
# The models (the engine's registry)
# ---------------------------------------------------------------------------------------------

def resourcesFolder() -> Path:
    """The Resources folder (UI, icons, Models.json, examples, the bundled model), as the engine finds it."""
    folder = resources_dir()
    if not (folder / "Models.json").is_file():
        raise GenerationError(f"{folder / 'Models.json'} was not found beside the module: reinstall MedLSDM")
    return folder


def knownModels() -> List[ModelEntry]:
    """The entries of Resources/Models.json (name, version, description, path or url)."""
    resourcesFolder()
    try:
        return known_models()
    except MedLSDMError as exc:
        raise GenerationError(str(exc)) from None


def modelFolder(model: Optional[str]) -> Optional[Path]:
    """The local bundle folder of ``model`` (a folder, a registered name, or None for the first
    registered model), or None when it is registered but not downloaded yet."""
    resourcesFolder()
    try:
        return local_model_folder(model)
    except MedLSDMError as exc:
        raise GenerationError(str(exc)) from None


def modelClasses(model: Optional[str]) -> Optional[List[Tuple[int, str]]]:
    """(value, name) of each class of ``model``, read from its model.json; None when the model
    is not on this computer yet (the worker downloads it and matches the names then)."""
    folder = modelFolder(model)
    if folder is None:
        return None
    try:
        return model_classes(folder)
    except MedLSDMError as exc:
        raise GenerationError(str(exc)) from None


def sameNode(a: Any, b: Any) -> bool:
    """Whether two MRML nodes (either may be None) are the same node."""
    return a is not None and b is not None and a.GetID() == b.GetID()


def mapFileTargets(mapFile: PathLike) -> Dict[str, str]:
    """Segment name (and ``*``) → model class from a mapping file (a path, or a table shipped in
    Resources/Mappings such as ``freesurfer_tissue``), read by the engine's own parser: its torch-free
    ``mapfile`` module, the one the worker uses."""
    try:
        return read_map_file(mapFile).names()
    except InputError as exc:
        raise GenerationError(str(exc)) from None


def findClass(text: str, classes: Sequence[Tuple[int, str]]) -> Optional[int]:
    """The class value that a class name (or a value written as text) names, or None (the engine's rule:
    names match ignoring case, spaces, hyphens and underscores)."""
    index = class_index(text, classes)
    return None if index is None else classes[index][0]


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------

@dataclass
class GenerationTask:
    """One generation: ``state`` is running, done, error or cancelled; ``message`` says why it
    failed; ``outputNodes`` (or ``outputPaths`` when written to a folder) hold the results."""

    name: str
    state: str = "running"
    message: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    seeds: List[int] = field(default_factory=list)
    outputNodes: List[Any] = field(default_factory=list)
    outputPaths: List[str] = field(default_factory=list)
    temporaryFolder: Optional[str] = None
    process: Optional[WorkerProcess] = None
    variabilityNode: Any = None

    def cancel(self) -> None:
        """Stop the worker and its whole process tree; the task ends in the cancelled state."""
        if self.state == "running" and self.process is not None:
            self.process.cancel()


@dataclass
class _Job:
    """What a started worker needs when it ends: where its output goes and how to check it."""

    task: GenerationTask
    labelName: str
    scene: Any
    load: bool = True
    geometry: Optional[Geometry] = None
    referenceNode: Any = None
    transformNodeId: Optional[str] = None
    outputVolumeNode: Any = None
    progressCallback: Optional[ProgressCallback] = None
    logCallback: Optional[LogCallback] = None
    finishedCallback: Optional[Callable[[GenerationTask], None]] = None
    errorEvent: Optional[Event] = None
    doneEvent: Optional[Event] = None
    resultName: str = "synthetic"  # the loaded volumes are "<labelName> <resultName> seed N"
    variabilityPath: Optional[str] = None  # a standard-deviation map to load beside the results


@dataclass
class BatchItem:
    """The outcome of one input of a batch."""

    input: str
    ok: bool
    output: List[Any]
    message: str = ""

    def __str__(self) -> str:
        if not self.ok:
            return f"FAILED {self.input}: {self.message}"
        names = [o if isinstance(o, str) else o.GetName() for o in self.output]
        return f"ok     {self.input} -> {', '.join(names)}"


class GenerationLogic:
    """Export a segmentation, run the worker on it, load and check what it made.

    ``pythonExecutable``: the Python that runs the worker (default: $MEDLSDM_WORKER_PYTHON, else
    Slicer's PythonSlicer). ``debug``: keep every temporary folder. ``temporaryRoot``: where the
    private temporary folders are made (default: Slicer's temporary folder)."""

    def __init__(self) -> None:
        self.pythonExecutable: Optional[str] = os.environ.get("MEDLSDM_WORKER_PYTHON") or None
        self.debug = False
        self.temporaryRoot: Optional[str] = None

    # -- the worker -------------------------------------------------------------------------

    def _beforeWorker(self) -> None:
        """Called once the inputs are checked and before the worker starts; raise GenerationError to
        stop. Slicer's module makes sure the worker's packages are installed here."""

    def workerPython(self) -> str:
        if self.pythonExecutable:
            return self.pythonExecutable
        found = shutil.which("PythonSlicer")
        if found:
            return found
        beside = Path(sys.executable).with_name("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
        if beside.is_file():
            return str(beside)
        raise GenerationError("PythonSlicer was not found: run MedLSDM inside 3D Slicer, or set "
                              "MEDLSDM_WORKER_PYTHON to a Python that has MedLSDM's requirements")

    def workerEnvironment(self) -> Dict[str, str]:
        """Slicer's startup environment (without Slicer's own Python settings) plus the engine's
        folder on PYTHONPATH and MEDLSDM_RESOURCES."""
        env = dict(slicer.util.startupEnvironment())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(engineFolder()), env.get("PYTHONPATH", "")) if p)
        env["MEDLSDM_RESOURCES"] = str(resourcesFolder())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def workerCommand(self, labels: PathLike, output: PathLike, *, model: Optional[str] = None,
                      steps: Optional[int] = None, guidance: Optional[float] = None, seed: Optional[int] = None,
                      samples: int = 1, device: str = "auto", mapArgs: Sequence[str] = (),
                      mapFile: Optional[PathLike] = None, command: str = "generate") -> List[str]:
        """The worker's command line (a list: never a shell string); ``command``: generate, or synthesize
        (``labels`` is then the job's list of maps, ``output`` its folder)."""
        if device.lower() not in DEVICES:
            raise GenerationError(f"unknown device {device!r}: use auto, GPU or CPU")
        args = [self.workerPython(), "-m", "MedLSDMLib.worker", *([command] if command != "generate" else []),
                str(labels), "-o", str(output),
                "--device", DEVICES[device.lower()], "--samples", str(int(samples))]
        for flag, value in (("--model", model), ("--steps", steps), ("--guidance", guidance), ("--seed", seed)):
            if value is not None:
                args += [flag, str(value)]
        if mapFile is not None:
            args += ["--map-file", str(mapFile)]
        for pair in mapArgs:
            args += ["--map", pair]
        return args

    # -- export ------------------------------------------------------------------------------

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

    # -- generation --------------------------------------------------------------------------

    def generate(self, segmentationNode: Any, referenceVolumeNode: Any = None, *, model: Optional[str] = None,
                 steps: Optional[int] = None, guidance: Optional[float] = None, seed: Optional[int] = None,
                 samples: int = 1, device: str = "auto", mapping: Optional[Mapping[str, str]] = None,
                 mapFile: Optional[PathLike] = None,
                 segmentIds: Optional[Sequence[str]] = None, outputVolumeNode: Any = None,
                 waitForCompletion: bool = True, progressCallback: Optional[ProgressCallback] = None,
                 logCallback: Optional[LogCallback] = None,
                 finishedCallback: Optional[Callable[[GenerationTask], None]] = None) -> Any:
        """Generate synthetic volume(s) from ``segmentationNode`` on the grid of ``referenceVolumeNode``
        (default: the segmentation's own grid).

        Blocking (default): returns the new volume node (a list of nodes when samples > 1) or raises
        GenerationError with a message for the user. With ``waitForCompletion=False`` it returns
        the GenerationTask at once; progress, log lines and the end arrive through the callbacks
        (a bad input too: the task ends in the error state)."""
        if segmentationNode is None:
            raise ValueError("segmentationNode is required")
        task = GenerationTask(segmentationNode.GetName())
        source = segmentationNode if referenceVolumeNode is None else referenceVolumeNode
        job = _Job(task, segmentationNode.GetName(), segmentationNode.GetScene(), referenceNode=referenceVolumeNode,
                   transformNodeId=source.GetTransformNodeID(), outputVolumeNode=outputVolumeNode,
                   progressCallback=progressCallback, logCallback=logCallback, finishedCallback=finishedCallback)
        def prepare() -> List[str]:
            if sameNode(outputVolumeNode, referenceVolumeNode):
                raise GenerationError(f"the output volume is the reference volume {referenceVolumeNode.GetName()}: "
                                      "choose another output volume, or let MedLSDM create one")
            ids = self._segmentIds(segmentationNode, segmentIds)
            values, mapArgs = self.labelValues(segmentationNode, ids, model, mapping, mapFile)
            task.temporaryFolder = self._makeTemporaryFolder()
            labels = Path(task.temporaryFolder) / "labels.nrrd"
            job.geometry = self.exportLabelmap(segmentationNode, referenceVolumeNode, ids, values, labels)
            self._beforeWorker()
            return self.workerCommand(labels, Path(task.temporaryFolder) / "synthetic.nrrd", model=model,
                                      steps=steps, guidance=guidance, seed=seed, samples=samples, device=device,
                                      mapArgs=mapArgs)

        return self._launch(job, task, prepare, waitForCompletion, samples)

    # -- editing a real scan -------------------------------------------------------------------

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

    def editWorkerCommand(self, real: PathLike, labels: PathLike, original: PathLike, output: PathLike, *,
                          margin: float = DEFAULT_MARGIN, variability: Optional[PathLike] = None,
                          **options: Any) -> List[str]:
        """The worker's command line for ``medlsdm edit`` (every outcome, usage errors too, a JSON line)."""
        generate = self.workerCommand(labels, output, **options)
        python, rest = generate[0], generate[6:]  # after: python -m MedLSDMLib.worker LABELS -o OUTPUT
        args = [python, "-m", "MedLSDMLib.worker", "edit", str(real), str(labels), "-o", str(output),
                "--original-labels", str(original), "--margin", repr(float(margin)), *rest]
        if variability is not None:
            args += ["--variability", str(variability)]
        return args

    def edit(self, volumeNode: Any, segmentationNode: Any, originalSegmentation: Any = None, *,
             margin: float = DEFAULT_MARGIN, model: Optional[str] = None, steps: Optional[int] = None,
             guidance: Optional[float] = None, seed: Optional[int] = None, samples: int = 1,
             variability: bool = False, device: str = "auto", mapping: Optional[Mapping[str, str]] = None,
             mapFile: Optional[PathLike] = None, waitForCompletion: bool = True,
             progressCallback: Optional[ProgressCallback] = None, logCallback: Optional[LogCallback] = None,
             finishedCallback: Optional[Callable[[GenerationTask], None]] = None) -> Any:
        """Regenerate the region of the real ``volumeNode`` where ``segmentationNode`` differs from
        ``originalSegmentation`` (default: the snapshot ``startEditing`` took), grown by ``margin`` mm,
        from the edited segmentation; everything else stays the real volume's voxels.

        The result is a new volume "<volume> edited seed N" on the volume's grid (the real volume is
        never changed). With ``samples`` >= 2 and ``variability``, the voxelwise standard deviation of
        the samples is loaded too, as a colour map with a colour bar, referenced from each result
        (``result.GetNodeReference("MedLSDMVariability")``). Blocking (default): returns the volume
        (a list when samples > 1) or raises GenerationError; with ``waitForCompletion=False`` it
        returns the GenerationTask at once, as ``generate`` does."""
        if volumeNode is None or segmentationNode is None:
            raise ValueError("volumeNode and segmentationNode are required")
        task = GenerationTask(f"{volumeNode.GetName()} edit")
        job = _Job(task, volumeNode.GetName(), volumeNode.GetScene(), referenceNode=volumeNode,
                   transformNodeId=volumeNode.GetTransformNodeID(), progressCallback=progressCallback,
                   logCallback=logCallback, finishedCallback=finishedCallback, resultName="edited")
        def prepare() -> List[str]:
            if volumeNode.IsA("vtkMRMLLabelMapVolumeNode") or not volumeNode.IsA("vtkMRMLScalarVolumeNode") or \
                    volumeNode.GetImageData() is None:
                raise GenerationError(f"{volumeNode.GetName()} is not a real image volume: choose the scan to edit")
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
                raise GenerationError(f"margin {margin}: it must be a positive number of mm (default "
                                      f"{DEFAULT_MARGIN:g})")
            if variability and samples < 2:
                raise GenerationError(f"a variability map needs 2 samples or more (samples is {samples})")
            original = originalSegmentation if originalSegmentation is not None else self._snapshotOf(segmentationNode)
            if sameNode(original, segmentationNode):
                raise GenerationError("the original segmentation is the edited one: click Start editing before "
                                      "changing it, then Regenerate")
            task.temporaryFolder = self._makeTemporaryFolder()
            folder = Path(task.temporaryFolder)
            mapArgs: List[str] = []
            edited, before = self._exportPair(volumeNode, segmentationNode, original, model, mapping, mapFile, folder,
                                              mapArgs)
            changed = int((edited != before).sum())
            if changed == 0:
                raise GenerationError(f"{segmentationNode.GetName()} has not changed since Start editing (on the grid "
                                      f"of {volumeNode.GetName()}): edit it in Segment Editor, then Regenerate")
            if logCallback is not None:
                logCallback(f"{changed} voxels changed since Start editing; regenerating them and {margin:g} mm "
                            "around them")
            job.geometry = Geometry.of(volumeNode)
            real = folder / "real.nrrd"
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(str(real))
            storage.UseCompressionOff()
            if not storage.WriteData(volumeNode):
                raise GenerationError(f"{volumeNode.GetName()} could not be written to {real}: check the disk")
            if variability:
                job.variabilityPath = str(folder / "variability.nrrd")
            self._beforeWorker()
            return self.editWorkerCommand(real, folder / "labels.nrrd", folder / "original.nrrd",
                                          folder / "edited.nrrd",
                                          margin=margin, variability=job.variabilityPath, model=model, steps=steps,
                                          guidance=guidance, seed=seed, samples=samples, device=device,
                                          mapArgs=mapArgs)

        return self._launch(job, task, prepare, waitForCompletion, samples)

    def _launch(self, job: "_Job", task: GenerationTask, prepare: Callable[[], List[str]], waitForCompletion: bool,
                samples: int) -> Any:
        """``prepare`` (checks, exports, the command line), then the worker. A GenerationError of prepare ends
        the task in the error state (and is raised when blocking); blocking, the result node(s)."""
        try:
            args = prepare()
        except GenerationError as exc:
            self._finish(job, "error", str(exc))
            if waitForCompletion:
                raise
            return task
        self._start(job, args, waitForCompletion)
        if not waitForCompletion:
            return task
        if task.state != "done":
            raise GenerationError(task.message)
        return task.outputNodes[0] if samples == 1 else list(task.outputNodes)

    def generateBatch(self, inputs: Sequence[Any], outputFolder: Optional[PathLike] = None, *,
                      scene: Any = None, model: Optional[str] = None, steps: Optional[int] = None,
                      guidance: Optional[float] = None, seed: Optional[int] = None, samples: int = 1,
                      device: str = "auto", mapping: Optional[Mapping[str, str]] = None,
                      mapFile: Optional[PathLike] = None,
                      logCallback: Optional[LogCallback] = None) -> List[BatchItem]:
        """Generate from each input and go on past failures.

        ``inputs``: segmentation nodes, or files (.seg.nrrd segmentations, label maps) that the
        worker reads directly. With ``outputFolder`` all inputs go through one ``medlsdm synthesize`` job
        (one worker, one model load; input i's sample k uses seed + i*samples + k-1, seed 0 by default)
        that writes NAME_sNN_image.nii.gz, NAME_sNN_label.nii.gz and manifest.csv there, and skips pairs a
        previous run made; without it, results are loaded into ``scene`` (default: Slicer's scene; for nodes,
        the node's scene). Returns one BatchItem per input."""
        if outputFolder is not None and not Path(outputFolder).is_dir():
            raise GenerationError(f"output folder {outputFolder} does not exist: create it first")
        options = dict(model=model, steps=steps, guidance=guidance, seed=seed, samples=samples, device=device)
        if outputFolder is not None:
            return self._synthesizeBatch(inputs, Path(outputFolder), mapping, mapFile, logCallback, options)
        results = []
        for item in inputs:
            isFile = isinstance(item, (str, os.PathLike))
            name = str(item)
            try:
                name = str(item) if isFile else item.GetName()
                if isFile:
                    outputs = self._generateFromFile(Path(item), scene, mapping, logCallback,
                                                     dict(options, mapFile=mapFile))
                else:
                    result = self.generate(item, mapping=mapping, mapFile=mapFile, logCallback=logCallback, **options)
                    outputs = result if isinstance(result, list) else [result]
                results.append(BatchItem(name, True, outputs))
            except GenerationError as exc:
                logging.error(f"MedLSDM: {name}: {exc}")
                results.append(BatchItem(name, False, [], str(exc)))
            except Exception as exc:  # a broken input (not a node, a deleted node, ...) must not end the batch
                logging.exception(f"MedLSDM: {name}")
                results.append(BatchItem(name, False, [], f"unexpected error: {exc}"))
        return results

    def _synthesizeBatch(self, inputs: Sequence[Any], outputFolder: Path, mapping: Optional[Mapping[str, str]],
                         mapFile: Optional[PathLike], logCallback: Optional[LogCallback],
                         options: Dict[str, Any]) -> List[BatchItem]:
        """Every input through one ``medlsdm synthesize`` job (one worker, one model load): label map files as
        they are, segmentation nodes exported into a private folder with their segments' classes. Each
        input's outcome: its pairs in the job's manifest, or its line of the job's summary."""
        folder = Path(self._makeTemporaryFolder())
        results: List[BatchItem] = []
        rows: Dict[int, Dict[str, Any]] = {}
        try:
            for index, item in enumerate(inputs):
                name = str(item)
                try:
                    name = str(item) if isinstance(item, (str, os.PathLike)) else item.GetName()
                    row = self._batchRow(item, index, folder, mapping, mapFile, options["model"])
                except GenerationError as exc:
                    logging.error(f"MedLSDM: {name}: {exc}")
                    results.append(BatchItem(name, False, [], str(exc)))
                    continue
                except Exception as exc:  # a broken input (not a node, a deleted node, ...) must not end the batch
                    logging.exception(f"MedLSDM: {name}")
                    results.append(BatchItem(name, False, [], f"unexpected error: {exc}"))
                    continue
                taken = {r["name"] for r in rows.values()}
                row["name"] = next(n for n in [row["name"]] + [f"{row['name']}_{k}" for k in range(2, len(inputs) + 2)]
                                   if n not in taken)
                rows[index] = row
                results.append(BatchItem(name, False, []))
            if rows:
                failures, message = self._runSynthesis(list(rows.values()), folder, outputFolder, mapFile, logCallback,
                                                        options)
                made = self._madePairs(outputFolder)
                for index, row in rows.items():
                    width = max(2, len(str(options["samples"])))
                    names = [f"{row['name']}_s{k:0{width}d}" for k in range(1, options["samples"] + 1)]
                    outputs = [made[n] for n in names if n in made]
                    item = results[index]
                    if len(outputs) == len(names):
                        item.ok, item.output = True, outputs
                    else:
                        item.message = failures.get(row["name"], message or "not made: see the log")
                        logging.error(f"MedLSDM: {item.input}: {item.message}")
        finally:
            if not self.debug:
                shutil.rmtree(folder, ignore_errors=True)
        return results

    def _batchRow(self, item: Any, index: int, folder: Path, mapping: Optional[Mapping[str, str]],
                  mapFile: Optional[PathLike], model: Optional[str]) -> Dict[str, Any]:
        """The synthesize list row of one batch input: a file as it is (``mapping`` by value), or a segmentation
        node exported with its segments' classes (and its background as the model's value 0)."""
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise GenerationError(f"{path} does not exist or is not a file")
            return {"label": str(path.resolve()), "name": self._outputName(path.name), "map": dict(mapping or {})}
        ids = self._segmentIds(item)
        values, mapArgs = self.labelValues(item, ids, model, mapping, mapFile)
        labels = folder / f"input{index}.nrrd"
        self.exportLabelmap(item, None, ids, values, labels)
        classes = dict(pair.split("=", 1) for pair in mapArgs)
        return {"label": str(labels), "name": self._outputName(item.GetName()), "map": {"0": "0", **classes}}

    def _runSynthesis(self, rows: List[Dict[str, Any]], folder: Path, outputFolder: Path,
                      mapFile: Optional[PathLike], logCallback: Optional[LogCallback],
                      options: Dict[str, Any]) -> Tuple[Dict[str, str], str]:
        """Run the job to its end: the failure message of each map that failed, and the job's own error."""
        listing = folder / "batch.json"
        listing.write_text(json.dumps(rows), encoding="utf-8")
        failures: Dict[str, str] = {}

        def log(message: str) -> None:
            failed = re.match(r"failed: (.+?) \(\d+ pair\(s\)\): (.*)$", message)
            if failed:
                failures[failed.group(1)] = failed.group(2)
            if logCallback is not None:
                logCallback(message)

        job = _Job(GenerationTask("batch"), "batch", None, load=False, logCallback=log)
        try:
            self._runToEnd(job, lambda: self.workerCommand(listing, outputFolder, command="synthesize",
                                                           mapFile=mapFile, **options))
        except GenerationError as exc:
            return failures, str(exc)
        return failures, ""

    @staticmethod
    def _madePairs(outputFolder: Path) -> Dict[str, str]:
        """Pair name -> image path of every pair in the folder's manifest whose image is there."""
        manifest = outputFolder / "manifest.csv"
        if not manifest.is_file():
            return {}
        with open(manifest, newline="", encoding="utf-8") as stream:
            rows = [r for r in csv.DictReader(stream) if r.get("name") and r.get("image")]
        return {r["name"]: str(outputFolder / r["image"]) for r in rows if (outputFolder / r["image"]).is_file()}

    # -- helpers -----------------------------------------------------------------------------

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

    @staticmethod
    def _outputName(source: str) -> str:
        for suffix in LABEL_SUFFIXES:
            if source.lower().endswith(suffix):
                source = source[: -len(suffix)]
                break
        return re.sub(r"[^\w\-.]+", "_", source).strip("_") or "segmentation"

    def _generateFromFile(self, path: Path, scene: Any, mapping: Optional[Mapping[str, str]],
                          logCallback: Optional[LogCallback], options: Dict[str, Any]) -> List[Any]:
        if not path.is_file():
            raise GenerationError(f"{path} does not exist or is not a file")
        task = GenerationTask(path.name)
        task.temporaryFolder = self._makeTemporaryFolder()
        output = Path(task.temporaryFolder) / f"{self._outputName(path.name)}_synthetic.nrrd"
        mapArgs = [f"{k}={v}" for k, v in (mapping or {}).items()]
        job = _Job(task, self._outputName(path.name), scene or slicer.mrmlScene, logCallback=logCallback)
        self._runToEnd(job, lambda: self.workerCommand(path.resolve(), output, mapArgs=mapArgs, **options))
        return list(task.outputNodes)

    def _runToEnd(self, job: _Job, command: Callable[[], List[str]]) -> None:
        """Prepare the worker's command line, run it to the end, and raise GenerationError unless done."""
        try:
            args = command()
            self._beforeWorker()
        except GenerationError as exc:
            self._finish(job, "error", str(exc))
            raise
        self._start(job, args, waitForCompletion=True)
        if job.task.state != "done":
            raise GenerationError(job.task.message)

    def _start(self, job: _Job, args: List[str], waitForCompletion: bool) -> None:
        """Start the worker; blocking, return when it has ended, else poll it from a QTimer."""
        try:
            env = self.workerEnvironment()
            logging.info(f"MedLSDM: {' '.join(args)}")
            job.task.process = WorkerProcess(args, env, lambda event: self._onEvent(job, event))
        except (GenerationError, OSError) as exc:
            self._finish(job, "error", str(exc) if isinstance(exc, GenerationError)
                         else f"the worker could not be started ({exc}): check the Python it runs with")
            return
        if waitForCompletion:
            job.task.process.wait(idle=slicer.app.processEvents)
            self._onExit(job)
        else:
            import qt

            def check() -> None:
                try:
                    ended = job.task.process.poll()
                    if ended:
                        self._onExit(job)
                except Exception as exc:  # e.g. a callback into a widget that was reloaded
                    logging.exception("MedLSDM: handling the worker's output failed")
                    job.progressCallback = job.logCallback = None  # they must not fail again while it stops
                    job.task.process.cancel()
                    job.task.process.wait()
                    if job.task.state == "running":
                        self._finish(job, "error", f"handling the worker's output failed ({exc})")
                    return
                if not ended:
                    qt.QTimer.singleShot(POLL_INTERVAL_MS, check)

            qt.QTimer.singleShot(POLL_INTERVAL_MS, check)

    def _onEvent(self, job: _Job, event: Event) -> None:
        kind = event.get("type")
        if kind == "progress":
            job.task.stage, job.task.step, job.task.total = str(event.get("stage", "")), int(event.get("step", 0)), \
                int(event.get("total", 0))
            if job.progressCallback is not None:
                job.progressCallback(job.task.stage, job.task.step, job.task.total)
        elif kind == "error":
            job.errorEvent = event
        elif kind == "done":
            job.doneEvent = event
        elif kind == "log":
            message = str(event.get("message", ""))
            logging.info(f"MedLSDM worker: {message}")
            if job.logCallback is not None:
                job.logCallback(message)

    def _onExit(self, job: _Job) -> None:
        process = job.task.process
        assert process is not None
        code = process.returncode
        if process.cancelRequested or code == protocol.EXIT_CANCELLED:
            self._finish(job, "cancelled", "cancelled; nothing was generated")
        elif code != 0 or job.doneEvent is None:
            if job.errorEvent is not None:
                message = str(job.errorEvent.get("message", ""))
            elif code == 0:
                message = "the worker ended without reporting a result: see the log for details"
            elif code is not None and code < 0:
                message = (f"the worker was killed by signal {-code} (the system may have run out of memory: "
                           "crop the segmentation or generate fewer samples)")
            else:
                reason = protocol.exit_meaning(code if code is not None else protocol.EXIT_FAILED)
                message = f"the worker ended with exit code {code} ({reason}): see the log for details"
            self._finish(job, "error", message)
        else:
            try:
                self._collect(job)
            except GenerationError as exc:
                self._finish(job, "error", str(exc))
            else:
                self._finish(job, "done", "")

    def _collect(self, job: _Job) -> None:
        """Record the worker's outputs; load them as volumes (checking their geometry) if asked."""
        assert job.doneEvent is not None
        try:
            paths = [str(p) for p in job.doneEvent.get("paths") or [job.doneEvent["path"]]]
            seeds = [int(s) for s in job.doneEvent.get("seeds") or []]
        except (KeyError, TypeError, ValueError):
            raise GenerationError(f"the worker reported a result that cannot be read: {job.doneEvent}") from None
        job.task.seeds, job.task.outputPaths = seeds, paths
        if not job.load:
            return
        for index, path in enumerate(paths):
            seed = seeds[index] if index < len(seeds) else None
            target = job.outputVolumeNode if index == 0 and job.outputVolumeNode is not None else None
            job.task.outputNodes.append(self._load(job, path, seed, target))
        if job.variabilityPath is not None:
            variability = self._load(job, job.variabilityPath, None, None, f"{job.labelName} {job.resultName} "
                                                                            "variability")
            self._showAsColourMap(variability, "Standard deviation")
            job.task.variabilityNode = variability
            for node in job.task.outputNodes:
                node.SetNodeReferenceID(VARIABILITY_REFERENCE, variability.GetID())

    def _load(self, job: _Job, path: str, seed: Optional[int], target: Any, name: Optional[str] = None) -> Any:
        scene = job.scene
        if name is None:
            name = f"{job.labelName} {job.resultName}" + (f" seed {seed}" if seed is not None else "")
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(path)
        if not storage.ReadData(node) or node.GetImageData() is None:
            scene.RemoveNode(node)
            raise GenerationError(f"the generated volume {path} could not be read")
        if job.geometry is not None:
            differences = Geometry.of(node).differences(job.geometry)
            if differences:
                scene.RemoveNode(node)
                reference = job.referenceNode.GetName() if job.referenceNode else "the segmentation"
                raise GenerationError(f"the generated volume does not lie on the grid of {reference}: "
                                      f"{'; '.join(differences)} (please report this)")
        if target is not None:  # the checked result replaces the chosen output volume's voxels and grid
            target.SetAndObserveImageData(node.GetImageData())
            target.CopyOrientation(node)
            scene.RemoveNode(node)
            node = target
        node.SetAndObserveTransformNodeID(job.transformNodeId)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def _showAsColourMap(node: Any, title: str) -> None:
        """A colour map (Slicer's Iron table) over the volume's full range, with a colour bar."""
        scene = node.GetScene()
        colours = scene.GetNodeByID("vtkMRMLColorTableNodeIron")
        if colours is None:
            colours = scene.GetFirstNodeByName("MedLSDM variability colours")
        if colours is None:
            colours = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "MedLSDM variability colours")
            colours.SetTypeToIron()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(colours.GetID())
        low, high = node.GetImageData().GetScalarRange()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(low, high if high > low else low + 1.0)
        legend = slicer.vtkMRMLColorLegendDisplayNode()  # (in the scene's node factory only with the Colors module)
        legend.SetName(scene.GenerateUniqueName(f"{node.GetName()} colour bar"))
        legend = scene.AddNode(legend)
        legend.SetAndObservePrimaryDisplayNode(display)
        legend.SetTitleText(title)
        legend.SetVisibility(True)
        node.AddAndObserveDisplayNodeID(legend.GetID())

    def _finish(self, job: _Job, state: str, message: str) -> None:
        """Set the final state, tidy the temporary folder (kept when the worker failed, and in debug
        mode), and tell the caller."""
        task = job.task
        task.state, task.message = state, message
        folder = task.temporaryFolder
        if folder is not None:
            if (state == "error" and task.process is not None) or self.debug:
                logging.info(f"MedLSDM: temporary files kept in {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        if state == "error":
            logging.error(f"MedLSDM: {task.name}: {message}")
        if job.finishedCallback is not None:
            job.finishedCallback(task)
