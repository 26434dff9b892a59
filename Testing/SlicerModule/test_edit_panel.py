"""The panel's edit mode: Start editing, Regenerate edited region (with progress, cancel and the
variability overlay), on real MRML with the real worker on the tiny model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import slicer
import slicer.util

import qt
from conftest import WORKER_PYTHON
from mrml_scenes import addReferenceVolume, addSegmentation, shells


def click(button: Any) -> None:
    qt.unwrap(button).click()


def paintEdit(segmentation: Any, real: Any) -> None:
    """The user's edit in Segment Editor: white matter grows into a box."""
    _, _, inner = shells()
    box = np.zeros_like(inner)
    box[6:11, 8:14, 4:9] = 1
    segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName("white_matter")
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.maximum(inner, box), segmentation, segmentId, real)


def test_edit_buttons_follow_the_inputs_and_the_snapshot(widget: Any, scene: Any) -> None:
    ui, p = widget.ui, widget._parameterNode
    start, regenerate = ui.startEditingButton, ui.regenerateButton
    assert not start.enabled and start.toolTip == "Choose the real scan as Reference volume"
    real = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, real)
    p.referenceVolume, p.segmentation = real, segmentation
    assert start.enabled and not regenerate.enabled
    assert regenerate.toolTip.startswith("Click Start editing first")
    assert not ui.variabilityCheckBox.enabled  # one sample has no spread

    click(start)
    snapshot = widget.logic.editSnapshot(segmentation)
    assert snapshot is not None and "Snapshot of brain taken" in ui.logTextEdit.plainText
    assert regenerate.enabled and "where brain differs from its snapshot" in regenerate.toolTip
    p.samples = 3
    assert ui.variabilityCheckBox.enabled
    ui.variabilityCheckBox.checked = True
    assert p.variability and regenerate.enabled
    p.samples = 1
    assert not regenerate.enabled and "needs Samples 2 or more" in regenerate.toolTip
    ui.marginSpinBox.value = 6.5
    assert p.margin == 6.5


def test_regenerate_through_the_panel_loads_the_result_and_the_variability_overlay(widget: Any, scene: Any,
                                                                                    bundle: Path) -> None:
    real = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, real)
    before = slicer.util.arrayFromVolume(real).copy()
    widget.logic.pythonExecutable = WORKER_PYTHON
    p = widget._parameterNode
    p.referenceVolume, p.segmentation, p.model, p.steps, p.seed, p.device = real, segmentation, str(bundle), 2, 4, "CPU"
    click(widget.ui.startEditingButton)
    paintEdit(segmentation, real)
    p.samples, p.variability = 2, True
    click(widget.ui.regenerateButton)
    assert widget.ui.regenerateButton.text == "Cancel" and not widget.ui.generateButton.enabled
    assert not widget.ui.startEditingButton.enabled
    qt.runEventLoop(lambda: widget._task.state != "running", timeout=120)
    assert widget._task.state == "done", widget._task.message
    assert widget.ui.regenerateButton.text == "Regenerate edited region" and widget.ui.generateButton.enabled
    first, second = widget._task.outputNodes
    assert [first.GetName(), second.GetName()] == ["T1 edited seed 4", "T1 edited seed 5"]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(real), before)
    spread = widget._task.variabilityNode
    red = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
    assert red.GetBackgroundVolumeID() == first.GetID() and red.GetForegroundVolumeID() == spread.GetID()
    assert red.GetForegroundOpacity() == 0.5
    assert "Edited T1 edited seed 4, T1 edited seed 5" in widget.ui.logTextEdit.plainText
    assert widget.ui.reviewButton.enabled  # the real scan beside the edited one


def test_cancel_from_the_panel_stops_the_edit(widget: Any, scene: Any, bundle: Path) -> None:
    real = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, real)
    widget.logic.pythonExecutable = WORKER_PYTHON
    p = widget._parameterNode
    p.referenceVolume, p.segmentation, p.model, p.steps, p.device = real, segmentation, str(bundle), 1000, "CPU"
    click(widget.ui.startEditingButton)
    paintEdit(segmentation, real)
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    click(widget.ui.regenerateButton)
    qt.runEventLoop(lambda: widget.ui.progressBar.format.startswith("Sampling"), timeout=120)
    click(widget.ui.regenerateButton)
    assert widget.ui.regenerateButton.text == "Cancelling..."
    qt.runEventLoop(lambda: widget._task.state != "running", timeout=30)
    assert widget._task.state == "cancelled"
    assert widget.ui.progressBar.format == "Cancelled" and "Cancelled" in widget.ui.logTextEdit.plainText
    assert widget.ui.regenerateButton.text == "Regenerate edited region" and widget.ui.regenerateButton.enabled
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes


def test_an_edit_with_nothing_changed_is_one_message(widget: Any, scene: Any, dialogs: Any) -> None:
    real = addReferenceVolume(scene)
    p = widget._parameterNode
    p.referenceVolume, p.segmentation = real, addSegmentation(scene, real)
    widget.logic.pythonExecutable = WORKER_PYTHON
    click(widget.ui.startEditingButton)
    click(widget.ui.regenerateButton)
    assert widget._task.state == "error" and widget._task.process is None
    [message] = dialogs.kinds("error")
    assert message.startswith("MedLSDM could not edit the scan") and "has not changed since Start editing" in message
    assert widget.ui.regenerateButton.text == "Regenerate edited region"
