"""Loading the results: the worker's outputs read back as volume nodes, each checked to lie on the grid
it was made for, and an edit's variability map shown as a colour map with a colour bar."""
from __future__ import annotations

from typing import Any, Optional

import slicer

from .engine import GenerationError
from .export import Geometry
from .running import _Job

VARIABILITY_REFERENCE = "MedLSDMVariability"  # edited volume -> its standard-deviation map


class ResultLoading:
    """The logic's result loading (a mixin of GenerationLogic)."""

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
