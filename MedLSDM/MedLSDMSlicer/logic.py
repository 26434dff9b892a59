"""Generation from Slicer segmentations: ``GenerationLogic`` composes the rooms of the Slicer side,
each with one job: exporting the inputs (export.py, with the models of models.py), running the worker
(running.py, its command line built by commands.py, the serving worker in serving.py), loading the results
(results.py) and a batch into a folder as one synthesize job (batch.py). It works in Slicer and on the MRML
classes of the ``slicer-core`` package.

The engine (MedLSDMLib) runs in the worker process; the Slicer side imports only its torch-free modules
(see engine.py): the worker protocol, the model registry, label names, grid comparison, the mapping-file
parser and the edit options.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import slicer

from .batch import BatchItem, FolderBatches, outputName
from .engine import GenerationError, engineFolder, useEngine
from .export import Geometry, InputExport, sameNode, writeVolume
from .models import PathLike, knownModels, modelClasses, resourcesFolder
from .results import ResultLoading
from .running import GenerationTask, LogCallback, ProgressCallback, WorkerRuns, _Job

useEngine()
from MedLSDMLib.errors import InputError  # noqa: E402
from MedLSDMLib.generation.edit_options import DEFAULT_MARGIN, check_margin  # noqa: E402

# re-exported for MedLSDM.py
__all__ = ["DEFAULT_MARGIN", "BatchItem", "GenerationError", "GenerationLogic", "GenerationTask", "Geometry",
           "engineFolder", "knownModels", "modelClasses", "resourcesFolder", "sameNode"]


class GenerationLogic(WorkerRuns, InputExport, ResultLoading, FolderBatches):
    """Export a segmentation, run the worker on it, load and check what it made.

    ``pythonExecutable``: the Python that runs the worker (default: $MEDLSDM_WORKER_PYTHON, else
    Slicer's PythonSlicer). ``debug``: keep every temporary folder. ``temporaryRoot``: where the
    private temporary folders are made (default: Slicer's temporary folder)."""

    def __init__(self) -> None:
        self.pythonExecutable: Optional[str] = os.environ.get("MEDLSDM_WORKER_PYTHON") or None
        self.debug = False
        self.temporaryRoot: Optional[str] = None

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
            try:
                check_margin(margin)  # the engine's own check (torch-free)
            except InputError as exc:
                raise GenerationError(str(exc)) from None
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
            writeVolume(volumeNode, real)
            if variability:
                job.variabilityPath = str(folder / "variability.nrrd")
            self._beforeWorker()
            return self.editWorkerCommand(real, folder / "labels.nrrd", folder / "original.nrrd",
                                          folder / "edited.nrrd",
                                          margin=margin, variability=job.variabilityPath, model=model, steps=steps,
                                          guidance=guidance, seed=seed, samples=samples, device=device,
                                          mapArgs=mapArgs)

        return self._launch(job, task, prepare, waitForCompletion, samples)

    def generateBatch(self, inputs: Sequence[Any], outputFolder: Optional[PathLike] = None, *,
                      scene: Any = None, model: Optional[str] = None, steps: Optional[int] = None,
                      guidance: Optional[float] = None, seed: Optional[int] = None, samples: int = 1,
                      device: str = "auto", mapping: Optional[Mapping[str, str]] = None,
                      mapFile: Optional[PathLike] = None,
                      logCallback: Optional[LogCallback] = None) -> List[BatchItem]:
        """Generate from each input and go on past failures.

        ``inputs``: segmentation nodes, or files (.seg.nrrd segmentations, label maps) that the
        worker reads directly. With ``outputFolder`` all inputs go through one ``medlsdm synthesize`` job,
        one request to the serving worker (one model load; input i's sample k uses seed + i*samples + k-1,
        seed 0 by default) that writes NAME_sNN_image.nii.gz, NAME_sNN_label.nii.gz and manifest.csv there,
        and skips pairs a previous run made; without it, each input is a request of its own and its results
        are loaded into ``scene`` (default: Slicer's scene; for nodes, the node's scene). Returns one
        BatchItem per input."""
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

    def _generateFromFile(self, path: Path, scene: Any, mapping: Optional[Mapping[str, str]],
                          logCallback: Optional[LogCallback], options: Dict[str, Any]) -> List[Any]:
        if not path.is_file():
            raise GenerationError(f"{path} does not exist or is not a file")
        task = GenerationTask(path.name)
        task.temporaryFolder = self._makeTemporaryFolder()
        output = Path(task.temporaryFolder) / f"{outputName(path.name)}_synthetic.nrrd"
        mapArgs = [f"{k}={v}" for k, v in (mapping or {}).items()]
        job = _Job(task, outputName(path.name), scene or slicer.mrmlScene, logCallback=logCallback)
        self._runToEnd(job, lambda: self.workerCommand(path.resolve(), output, mapArgs=mapArgs, **options))
        return list(task.outputNodes)
