"""The module panel (MedLSDMWidget) from the real .ui, bound to its parameter node, on real MRML."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import slicer
import vtk

import parameterNodeWrapper
import qt
from conftest import WORKER_PYTHON
from mrml_scenes import addReferenceVolume, addSegmentation


def click(button: Any) -> None:
    qt.unwrap(button).click()


def test_setup_fills_the_panel_and_binds_it_to_the_parameter_node(widget: Any, scene: Any) -> None:
    ui, p = widget.ui, widget._parameterNode
    combo = qt.unwrap(ui.deviceComboBox)
    assert [combo.itemText(i) for i in range(combo.count())] == ["auto", "GPU", "CPU"]
    assert ui.modelComboBox.count >= 1 and p.model == "" and ui.modelComboBox.currentIndex == 0
    assert ui.stepsSpinBox.value == 0 and ui.seedSpinBox.value == 1 and ui.samplesSpinBox.value == 1

    ui.stepsSpinBox.value = 25  # widget -> parameter node
    combo.setCurrentIndex(2)
    assert p.steps == 25 and p.device == "CPU"
    p.seed = 77  # parameter node -> widget
    p.randomSeed = True
    assert ui.seedSpinBox.value == 77 and ui.randomSeedCheckBox.checked and not ui.seedSpinBox.enabled
    p.randomSeed = False
    assert ui.seedSpinBox.enabled

    reference = addReferenceVolume(scene)
    selector = qt.unwrap(ui.referenceVolumeSelector)
    assert selector.mrmlScene() is scene  # through the .ui's mrmlSceneChanged connection
    selector.setCurrentNode(reference)
    assert p.referenceVolume is reference
    p.referenceVolume = None
    assert selector.currentNode() is None
    parameterNode = scene.GetSingletonNode("MedLSDM", "vtkMRMLScriptedModuleNode")
    assert parameterNode is not None and parameterNode.GetParameter("steps") == "25"


def test_generate_is_enabled_only_with_valid_inputs_and_says_what_is_missing(widget: Any, scene: Any) -> None:
    ui, p = widget.ui, widget._parameterNode
    button = ui.generateButton
    assert not button.enabled and button.toolTip.startswith("Select a segmentation")

    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "brain")
    p.segmentation = segmentation
    assert not button.enabled and button.toolTip == ("Segmentation brain has no segments: add and paint some in "
                                                     "Segment Editor")
    segmentId = segmentation.GetSegmentation().AddEmptySegment("", "csf")  # observed: no parameter change needed
    assert button.enabled and button.toolTip == "Generate a synthetic image from the segmentation"

    reference = addReferenceVolume(scene)
    p.referenceVolume = reference
    p.outputVolume = reference
    assert not button.enabled and "output volume is the reference volume" in button.toolTip
    p.outputVolume = None
    assert button.enabled
    segmentation.GetSegmentation().RemoveSegment(segmentId)
    assert not button.enabled and "has no segments" in button.toolTip

    scene.Clear(0)  # File > Close scene: the panel lets go of its parameter node, and takes the new one
    assert widget._parameterNode is not None and widget._parameterNode.segmentation is None
    assert not button.enabled and button.toolTip.startswith("Select a segmentation")
    widget.exit()
    painted = addSegmentation(scene, addReferenceVolume(scene))
    widget.enter()  # entering the module picks the scene's first segmentation
    assert widget._parameterNode.segmentation is painted and button.enabled


def test_connectors_do_not_pile_up_over_enters_and_scene_closes(slicerVersion: str, widget: Any, scene: Any) -> None:
    """Slicer 5.8's connectGui returns no tag and, before 5.12, disconnectGui leaves an observer: the
    panel still ends up with exactly one binding after any number of enters, exits and scene closes."""
    bound = 11  # the widgets of the .ui that name a parameter
    assert len(parameterNodeWrapper.liveConnectors) == bound
    for _ in range(3):
        widget.exit()
        assert len(parameterNodeWrapper.liveConnectors) == 0
        widget.enter()
        widget.onSceneStartClose(None, None)
        widget.onSceneEndClose(None, None)
    assert len(parameterNodeWrapper.liveConnectors) == bound
    before = parameterNodeWrapper.guiUpdates[0]
    widget._parameterNode.parameterNode.Modified()
    assert parameterNodeWrapper.guiUpdates[0] - before == 1  # one binding pushes values into the widgets
    before = parameterNodeWrapper.guiUpdates[0]
    node = widget._parameterNode.parameterNode
    widget.exit()
    node.Modified()
    assert parameterNodeWrapper.guiUpdates[0] == before and len(parameterNodeWrapper.liveConnectors) == 0
    widget.enter()
    widget.ui.stepsSpinBox.value = 3
    assert widget._parameterNode.steps == 3


def test_generate_through_the_panel_then_review_and_back(widget: Any, scene: Any, bundle: Path) -> None:
    """Generate runs in the background with progress; the result is shown, and Review puts the real
    and the generated image side by side on the layout's slice views and goes back."""
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    widget.logic.pythonExecutable = WORKER_PYTHON
    p = widget._parameterNode
    p.segmentation, p.referenceVolume, p.model, p.steps, p.seed, p.device = (segmentation, reference, str(bundle), 2,
                                                                              4, "CPU")
    assert widget.ui.modelComboBox.currentText.startswith("tiny-brain")
    layoutManager = slicer.app.layoutManager()
    layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    click(widget.ui.generateButton)
    assert widget.ui.generateButton.text == "Cancel" and not widget.ui.inputsCollapsibleButton.enabled
    qt.runEventLoop(lambda: widget._task.state != "running", timeout=120)
    assert widget._task.state == "done", widget._task.message
    assert widget.ui.generateButton.text == "Generate" and widget.ui.progressBar.format == "Done"
    result = widget._task.outputNodes[0]
    assert result.GetName() == "brain synthetic seed 4"
    assert "Generated brain synthetic seed 4" in widget.ui.logTextEdit.plainText
    red = layoutManager.sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
    assert red.GetBackgroundVolumeID() == result.GetID()

    review = widget.ui.reviewButton
    assert review.enabled
    review.checked = True
    assert layoutManager.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert red.GetBackgroundVolumeID() == reference.GetID()
    review.checked = False
    assert layoutManager.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert review.text == "Review side by side"


def test_a_declined_installation_ends_generate_with_a_message_and_no_worker(widget: Any, scene: Any,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           dialogs: Any) -> None:
    reference = addReferenceVolume(scene)
    p = widget._parameterNode
    p.segmentation, p.referenceVolume = addSegmentation(scene, reference), reference
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda: False)
    click(widget.ui.generateButton)
    assert widget._task.state == "error" and widget._task.process is None
    assert "installation was declined" in widget._task.message
    assert any("installation was declined" in text for text in dialogs.kinds("error"))
    assert widget.ui.generateButton.text == "Generate" and widget.ui.generateButton.enabled
    assert vtk  # noqa: the module suite imports vtk from the Slicer environment
