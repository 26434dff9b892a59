"""Review: the real and the generated volume side by side on real slice and composite nodes, and back."""
from __future__ import annotations

from typing import Any

import pytest
import slicer

from mrml_scenes import addReferenceVolume, addSegmentation


def composite(name: str) -> Any:
    return slicer.app.layoutManager().sliceWidget(name).sliceLogic().GetSliceCompositeNode()


def test_show_review_then_restore_everything_it_changed(scene: Any) -> None:
    import MedLSDM

    real = addReferenceVolume(scene, "T1")
    synthetic = addReferenceVolume(scene, "T1 synthetic", size=(9, 8, 7))
    segmentation = addSegmentation(scene, real)
    segmentation.CreateDefaultDisplayNodes()
    display = segmentation.GetDisplayNode()
    display.SetVisibility2DFill(True)
    display.SetVisibility2DOutline(False)
    display.AddViewNodeID("vtkMRMLSliceNodeGreen")
    layoutManager = slicer.app.layoutManager()
    layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    composite("Red").SetForegroundVolumeID(synthetic.GetID())
    composite("Yellow").SetLinkedControl(False)

    logic = MedLSDM.MedLSDMLogic()
    state = logic.showReview(real, synthetic, segmentation)
    assert layoutManager.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert composite("Red").GetBackgroundVolumeID() == real.GetID()
    assert composite("Yellow").GetBackgroundVolumeID() == synthetic.GetID()
    assert composite("Red").GetForegroundVolumeID() is None
    assert composite("Red").GetLinkedControl() and composite("Yellow").GetLinkedControl()
    for name in ("Red", "Yellow"):
        sliceNode = slicer.app.layoutManager().sliceWidget(name).sliceLogic().GetSliceNode()
        assert sliceNode.GetOrientationString() == "Axial"
    assert display.GetNumberOfViewNodeIDs() == 0 and display.GetVisibility2DOutline()
    assert not display.GetVisibility2DFill()

    logic.restoreReview(state)
    assert layoutManager.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView
    assert not composite("Yellow").GetLinkedControl()
    assert display.GetVisibility2DFill() and not display.GetVisibility2DOutline()
    assert [display.GetNthViewNodeID(i) for i in range(display.GetNumberOfViewNodeIDs())] == ["vtkMRMLSliceNodeGreen"]


def test_review_needs_both_volumes(scene: Any) -> None:
    import MedLSDM
    from MedLSDMSlicer.logic import GenerationError

    with pytest.raises(GenerationError, match="needs a real volume"):
        MedLSDM.MedLSDMLogic().showReview(addReferenceVolume(scene), None)
    assert slicer.app.layoutManager().layout == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
