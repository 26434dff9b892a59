"""Editing a real scan from Slicer: the snapshot, the changed region, the edit run by the
real worker on the tiny model (result on the oblique, anisotropic volume's grid, the real voxels kept
far from the edit, the variability map), cancel and bad inputs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import slicer
import slicer.util

from MedLSDMSlicer import serving
from MedLSDMSlicer.logic import GenerationError, GenerationLogic, Geometry

from conftest import addReferenceVolume, addSegmentation, nodesOfClass, runEventLoop, shells


def grow(segmentation, reference, name: str, mask: np.ndarray) -> None:
    """Paint ``mask`` (k, j, i on the reference grid) into segment ``name``: the user's edit."""
    segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName(name)
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation, segmentId, reference)


def editedScene(scene) -> Tuple[object, object, np.ndarray]:
    """The real volume, its segmentation (snapshot taken) and the edit: the inner shell (white matter)
    grown into a box on one side."""
    real = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, real)
    GenerationLogic().startEditing(segmentation)
    outer, middle, inner = shells()
    box = np.zeros_like(inner)
    box[6:11, 8:14, 4:9] = 1
    grow(segmentation, real, "white_matter", np.maximum(inner, box))
    return real, segmentation, (box > 0) & (inner == 0)


def temporaryEntries() -> List[str]:
    return sorted(os.listdir(slicer.app.temporaryPath))


def test_start_editing_snapshots_the_segmentation(scene) -> None:
    real = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, real)
    logic = GenerationLogic()
    snapshot = logic.startEditing(segmentation)
    assert logic.editSnapshot(segmentation) is snapshot and snapshot.GetName() == "brain before editing"
    assert snapshot.GetHideFromEditors() and snapshot.GetScene() is scene
    names = [snapshot.GetSegmentation().GetNthSegment(i).GetName() for i in range(3)]
    assert names == ["csf", "Grey Matter", "white_matter"]
    _, _, inner = shells()
    grow(segmentation, real, "white_matter", np.zeros_like(inner))  # the edit does not reach the snapshot
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(
        snapshot, snapshot.GetSegmentation().GetSegmentIdBySegmentName("white_matter"), real), inner)
    again = logic.startEditing(segmentation)  # a new start replaces the old snapshot
    assert snapshot.GetScene() is None and logic.editSnapshot(segmentation) is again
    assert len(nodesOfClass(scene, "vtkMRMLSegmentationNode")) == 2


def test_the_changed_region_is_where_the_labels_differ(scene) -> None:
    real, segmentation, grown = editedScene(scene)
    region = GenerationLogic().changedRegion(real, segmentation)
    assert region.shape == slicer.util.arrayFromVolume(real).shape
    np.testing.assert_array_equal(region, grown)
    assert temporaryEntries() == []

    removed = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no csf")  # a segment deleted by the edit
    removed.GetSegmentation().DeepCopy(segmentation.GetSegmentation())
    removed.GetSegmentation().RemoveSegment(removed.GetSegmentation().GetSegmentIdBySegmentName("csf"))
    outer, middle, _ = shells()
    csf = (outer > 0) & (middle == 0) & ~grown  # where the edited segmentation says csf
    np.testing.assert_array_equal(GenerationLogic().changedRegion(real, removed, segmentation), csf)


def test_edit_loads_a_new_volume_on_the_real_grid_and_keeps_far_voxels(scene, bundle: Path) -> None:
    real, segmentation, grown = editedScene(scene)
    before = slicer.util.arrayFromVolume(real).copy()
    events: List[Tuple[str, int, int]] = []
    logs: List[str] = []
    node = GenerationLogic().edit(real, segmentation, model=str(bundle), steps=2, seed=3, device="CPU", margin=2.0,
                                  progressCallback=lambda *event: events.append(event), logCallback=logs.append)
    assert node.GetName() == "T1 edited seed 3" and node is not real
    assert Geometry.of(node).differences(Geometry.of(real)) == []
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(real), before)  # never overwritten
    voxels = slicer.util.arrayFromVolume(node)
    assert np.isfinite(voxels).all()
    assert not np.allclose(voxels[grown], before[grown])  # regenerated inside
    k, j, i = np.nonzero(grown)
    far = np.ones_like(grown, dtype=bool)
    far[max(k.min() - 4, 0):k.max() + 5, max(j.min() - 8, 0):j.max() + 9, max(i.min() - 8, 0):i.max() + 9] = False
    np.testing.assert_array_equal(voxels[far], before[far])  # the real voxels, exactly, far from the edit
    assert any(stage == "sample" for stage, _, _ in events)
    assert logs and logs[0].startswith(f"{int(grown.sum())} voxels changed")
    assert temporaryEntries() == []
    assert nodesOfClass(scene, "vtkMRMLLabelMapVolumeNode") == []


def test_edit_with_variability_loads_the_standard_deviation_as_a_colour_map(scene, bundle: Path) -> None:
    real, segmentation, grown = editedScene(scene)
    first, second = GenerationLogic().edit(real, segmentation, model=str(bundle), steps=2, seed=5, samples=2,
                                           variability=True, device="cpu")
    assert [first.GetName(), second.GetName()] == ["T1 edited seed 5", "T1 edited seed 6"]
    spread = first.GetNodeReference("MedLSDMVariability")
    assert spread is not None and second.GetNodeReference("MedLSDMVariability") is spread
    assert spread.GetName() == "T1 edited variability"
    assert Geometry.of(spread).differences(Geometry.of(real)) == []
    sd = slicer.util.arrayFromVolume(spread)
    assert sd[grown].mean() > 0 and (sd >= 0).all()
    display = spread.GetDisplayNode()
    assert display.GetColorNode().GetName() == "MedLSDM variability colours"
    legends = [spread.GetNthDisplayNode(n) for n in range(spread.GetNumberOfDisplayNodes())
               if spread.GetNthDisplayNode(n).IsA("vtkMRMLColorLegendDisplayNode")]
    assert len(legends) == 1 and legends[0].GetPrimaryDisplayNode() is display
    assert legends[0].GetTitleText() == "Standard deviation"


def test_cancel_ends_the_edit_and_leaves_nothing(scene, bundle: Path) -> None:
    real, segmentation, _ = editedScene(scene)
    volumesBefore = nodesOfClass(scene, "vtkMRMLScalarVolumeNode")
    sampling = []
    finished = []
    task = GenerationLogic().edit(real, segmentation, model=str(bundle), steps=1000, seed=1, device="cpu",
                                  waitForCompletion=False, finishedCallback=finished.append,
                                  progressCallback=lambda stage, step, total: sampling.append(stage))
    assert task.state == "running", task.message
    runEventLoop(lambda: "sample" in sampling, timeout=120)
    task.cancel()
    runEventLoop(lambda: task.state != "running", timeout=30)
    assert task.state == "cancelled" and finished == [task]
    assert task.process.returncode is not None and serving.sharedWorker().alive()  # the worker stays
    assert task.outputNodes == [] and nodesOfClass(scene, "vtkMRMLScalarVolumeNode") == volumesBefore
    assert temporaryEntries() == []


def test_bad_edits_are_one_clear_message(scene, bundle: Path) -> None:
    real = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, real)
    logic = GenerationLogic()
    with pytest.raises(GenerationError, match="click Start editing before changing the segmentation"):
        logic.edit(real, segmentation, model=str(bundle))
    logic.startEditing(segmentation)
    with pytest.raises(GenerationError, match="has not changed since Start editing"):
        logic.edit(real, segmentation, model=str(bundle))
    with pytest.raises(GenerationError, match="variability map needs 2 samples or more"):
        logic.edit(real, segmentation, model=str(bundle), variability=True)
    with pytest.raises(GenerationError, match="margin -1"):
        logic.edit(real, segmentation, model=str(bundle), margin=-1)
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labels, shells()[0])
    with pytest.raises(GenerationError, match="labels is not a real image volume"):
        logic.edit(labels, segmentation, model=str(bundle))
    task = logic.edit(real, segmentation, model=str(bundle), waitForCompletion=False)
    assert task.state == "error" and task.process is None and "has not changed" in task.message
    assert temporaryEntries() == []
    assert nodesOfClass(scene, "vtkMRMLScalarVolumeNode") == [real, labels]  # nothing was added
