"""MedLSDM: synthetic 3D medical images from segmentations (3D Slicer scripted module).

The engine runs in a separate worker process (``PythonSlicer -m MedLSDMLib.worker``); this module
imports neither torch nor MedLSDMLib. PyTorch and the engine's other requirements are installed on
the first Generate, never at import. Python 3.9 syntax (Slicer 5.8) and up.
"""
import os
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedLSDMSlicer import review
from MedLSDMSlicer.dependencies import DependencyInstaller
from MedLSDMSlicer.logic import (
    DEFAULT_MARGIN,
    GenerationError,
    GenerationLogic,
    GenerationTask,
    resourcesFolder,
    sameNode,
)
from MedLSDMSlicer.modelchoice import ModelChoice
from MedLSDMSlicer.review import ReviewButton
from MedLSDMSlicer.selftest import SelfTest

DEVICE_CHOICES = ["auto", "GPU", "CPU"]
STAGE_NAMES = {"download": "Downloading model", "prepare": "Preparing", "encode": "Encoding", "sample": "Sampling",
               "decode": "Decoding", "write": "Writing"}
ACTION_TEXTS = {"generate": "Generate", "edit": "Regenerate edited region"}


class MedLSDM(ScriptedLoadableModule):
    """Module description for Slicer's module list."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedLSDM"
        self.parent.categories = ["Image Synthesis"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["MedLSDM contributors"]
        self.parent.helpText = (
            "Generate a realistic synthetic 3D image from a segmentation with a latent semantic diffusion model "
            "(3D VQ-GAN + SPADE latent diffusion). Choose a segmentation whose segment names are classes of the "
            "model, optionally the real volume whose grid the result takes, and click Generate. "
            "Review shows the real and the generated image side by side.")
        self.parent.acknowledgementText = (
            "MedLSDM follows the Med-LSDM method (arXiv 2507.00206) and is built on MONAI's generative networks.")
        icon = os.path.join(_resources(), "Icons", "MedLSDM.png")
        if os.path.isfile(icon):
            self.parent.icon = qt.QIcon(icon)


def _resources() -> str:
    """The Resources folder, or the module's own folder when it cannot be found (then the module
    still loads and Generate reports the problem)."""
    try:
        return str(resourcesFolder())
    except GenerationError:
        return os.path.dirname(__file__)


@parameterNodeWrapper
class MedLSDMParameterNode:
    """The module's settings, saved with the scene. ``steps`` 0 and ``guidance`` below 0 mean the
    model's default; ``model`` is a registered name or a bundle folder ("" for the first model)."""

    segmentation: vtkMRMLSegmentationNode
    referenceVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    steps: Annotated[int, WithinRange(0, 1000)] = 0
    guidance: Annotated[float, WithinRange(-0.5, 20.0)] = -0.5
    seed: Annotated[int, WithinRange(0, 2147483647)] = 1
    randomSeed: bool = False
    samples: Annotated[int, WithinRange(1, 16)] = 1
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    margin: Annotated[float, WithinRange(0.5, 50.0)] = DEFAULT_MARGIN
    variability: bool = False


class MedLSDMWidget(ModelChoice, ReviewButton, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, sampling options, Generate/Cancel, progress, log and Review."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[MedLSDMLogic] = None
        self._parameterNode: Optional[MedLSDMParameterNode] = None
        self._parameterNodeGuiTag = None
        self._leakedGuiObserver = None
        self._observedSegmentation = None
        self._task: Optional[GenerationTask] = None
        self._taskKind = "generate"  # or "edit": which button started the task
        self._lastResult = None
        self._review: Optional[dict] = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(os.path.join(_resources(), "UI", "MedLSDM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedLSDMLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._fillModels()
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.browseModelButton.connect("clicked()", self.onBrowseModel)
        self.ui.generateButton.connect("clicked()", self.onGenerateButton)
        self.ui.reviewButton.connect("toggled(bool)", self.onReviewToggled)
        self.ui.startEditingButton.connect("clicked()", self.onStartEditing)
        self.ui.regenerateButton.connect("clicked()", self.onRegenerateButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """The module is closed or Slicer exits: stop the run, and end the serving worker."""
        if self._task is not None:
            self._task.cancel()
        self.logic.stopWorker()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        """The panel is hidden: it lets go of the parameter node (enter takes it again)."""
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:
            self._task.cancel()
        self.ui.reviewButton.checked = False  # restores the layout from before Review
        self._lastResult = None
        self._review = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ------------------------------------------------------------------------

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.segmentation:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if first:
                self._parameterNode.segmentation = first

    def setParameterNode(self, parameterNode: Optional[MedLSDMParameterNode]) -> None:
        if self._parameterNode:
            self._disconnectGui()
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._connectGui()
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def _connectGui(self) -> None:
        """Bind the widgets that name a parameter (SlicerParameterName) to the parameter node.

        Through ``connectParametersToGui``, which returns its tag on every Slicer version: Slicer 5.8's
        ``connectGui`` returns None, so ``disconnectGui`` could not disconnect and a set of connectors
        was added on every enter and scene close. Before 5.12, ``disconnectGui`` also leaves the
        wrapper's own ModifiedEvent observer on the node: it is the node's latest observer right after
        the connection, so its tag is remembered here and ``_disconnectGui`` removes it."""
        p = self._parameterNode
        widgets = {}
        for widget in vars(self.ui).values():
            name = widget.property("SlicerParameterName") if hasattr(widget, "property") else None
            if name:
                widgets[str(name)] = widget
        self._parameterNodeGuiTag = p.connectParametersToGui(widgets)
        self._leakedGuiObserver = None
        if not hasattr(p, "_guiVtkObserverTags"):  # Slicer before 5.12
            node = p.parameterNode
            probe = node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: None)
            node.RemoveObserver(probe)
            self._leakedGuiObserver = (node, probe - 1)

    def _disconnectGui(self) -> None:
        if self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNodeGuiTag = None
        if self._leakedGuiObserver is not None:
            node, tag = self._leakedGuiObserver
            node.RemoveObserver(tag)
            self._leakedGuiObserver = None

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        """Everything the connected widgets do not do by themselves: the model choice, the seed box,
        the segmentation's segment observers, and whether Generate and Review can be used."""
        p = self._parameterNode
        self._observeSegmentation(p.segmentation if p else None)
        if p is None:
            for button in (self.ui.generateButton, self.ui.startEditingButton, self.ui.regenerateButton):
                button.enabled = False
            return
        self._selectModel(p.model)
        self.ui.seedSpinBox.enabled = not p.randomSeed
        self.ui.variabilityCheckBox.enabled = p.samples >= 2
        if self._task is not None and self._task.state == "running":
            return
        missing = self._missingInput()
        self.ui.generateButton.enabled = not missing
        self.ui.generateButton.toolTip = missing or "Generate a synthetic image from the segmentation"
        missing = self._missingEditInput(snapshot=False)
        self.ui.startEditingButton.enabled = not missing
        self.ui.startEditingButton.toolTip = missing or (
            "Remember the segmentation as it is now; then change it in Segment Editor")
        missing = self._missingEditInput(snapshot=True)
        self.ui.regenerateButton.enabled = not missing
        self.ui.regenerateButton.toolTip = missing or (
            f"Regenerate where {p.segmentation.GetName()} differs from its snapshot, as a new volume beside "
            f"{p.referenceVolume.GetName()}")
        self._updateReviewButton()

    def _missingInput(self) -> str:
        """What the user must still choose before Generate can run ("" when nothing)."""
        p = self._parameterNode
        if not p.segmentation:
            return "Select a segmentation (paint one in Segment Editor, or load a .seg.nrrd)"
        if p.segmentation.GetSegmentation().GetNumberOfSegments() == 0:
            return f"Segmentation {p.segmentation.GetName()} has no segments: add and paint some in Segment Editor"
        if self.ui.modelComboBox.count == 0:
            return "No model is registered: choose a model bundle folder with the ... button"
        if sameNode(p.outputVolume, p.referenceVolume):
            return "The output volume is the reference volume: choose another output volume, or none to create one"
        return ""

    def _missingEditInput(self, snapshot: bool) -> str:
        """What the user must still do before Start editing (or, with ``snapshot``, Regenerate) can run."""
        p = self._parameterNode
        if not p.referenceVolume:
            return "Choose the real scan as Reference volume"
        if not p.segmentation:
            return "Select the segmentation of the real scan"
        if p.segmentation.GetSegmentation().GetNumberOfSegments() == 0:
            return f"Segmentation {p.segmentation.GetName()} has no segments: load or paint the real scan's labels"
        if self.ui.modelComboBox.count == 0:
            return "No model is registered: choose a model bundle folder with the ... button"
        if not snapshot:
            return ""
        if self.logic.editSnapshot(p.segmentation) is None:
            return "Click Start editing first, then change the segmentation in Segment Editor"
        if p.variability and p.samples < 2:
            return "A variability map needs Samples 2 or more: raise Samples, or untick Variability map"
        return ""

    def _observeSegmentation(self, node) -> None:
        """Follow segments being added or removed, so that Generate's state stays right."""
        if node is self._observedSegmentation:
            return
        if self._observedSegmentation is not None:
            for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved):
                self.removeObserver(self._observedSegmentation, event, self.updateGUIFromParameterNode)
        self._observedSegmentation = node
        if node is not None:
            for event in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved):
                self.addObserver(node, event, self.updateGUIFromParameterNode)

    # -- generation ----------------------------------------------------------------------------

    def _cancelRunning(self) -> bool:
        """Cancel the run in progress, if there is one (True then)."""
        if self._task is None or self._task.state != "running":
            return False
        self._task.cancel()
        button = self._actionButton(self._taskKind)
        button.enabled = False
        button.text = "Cancelling..."
        return True

    def _actionButton(self, kind: str):
        return self.ui.generateButton if kind == "generate" else self.ui.regenerateButton

    def _options(self) -> dict:
        p = self._parameterNode
        return dict(model=p.model or None, steps=p.steps or None, guidance=None if p.guidance < 0 else p.guidance,
                    seed=None if p.randomSeed else p.seed, samples=p.samples, device=p.device,
                    waitForCompletion=False, progressCallback=self.onProgress, logCallback=self._log,
                    finishedCallback=self.onFinished)

    def onGenerateButton(self) -> None:
        """Generate, or cancel the run in progress."""
        if self._cancelRunning():
            return
        p = self._parameterNode
        self._run("generate", lambda: self.logic.generate(p.segmentation, p.referenceVolume,
                                                          outputVolumeNode=p.outputVolume, **self._options()))

    def onStartEditing(self) -> None:
        """Snapshot the segmentation; the user then edits it in Segment Editor."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("MedLSDM could not start editing.", waitCursor=True):
            snapshot = self.logic.startEditing(p.segmentation)
            self._log(f"Snapshot of {p.segmentation.GetName()} taken ({snapshot.GetName()}): change the segmentation "
                      "in Segment Editor, then click Regenerate edited region.")
        self.updateGUIFromParameterNode()

    def onRegenerateButton(self) -> None:
        """Regenerate the edited region of the real scan, or cancel the run in progress."""
        if self._cancelRunning():
            return
        p = self._parameterNode
        self._run("edit", lambda: self.logic.edit(p.referenceVolume, p.segmentation, margin=p.margin,
                                                  variability=p.variability and p.samples >= 2, **self._options()))

    def _run(self, kind: str, start) -> None:
        """Start a background run: the logic checks the inputs, then makes sure the packages are
        installed (asking first), then starts the worker; a bad input ends it at once (onFinished)."""
        with slicer.util.tryWithErrorDisplay("MedLSDM could not start.", waitCursor=True):
            self.ui.logTextEdit.clear()
            self._taskKind = kind
            self._task = start()
            if self._task.state == "running":
                self.ui.progressBar.setRange(0, 0)  # busy until the first progress event
                self._setRunning(True)

    def _setRunning(self, running: bool) -> None:
        active = self._actionButton(self._taskKind)
        other = self._actionButton("edit" if self._taskKind == "generate" else "generate")
        active.text = "Cancel" if running else ACTION_TEXTS[self._taskKind]
        active.toolTip = "Stop the run" if running else ""
        active.enabled = True
        if running:
            other.enabled = False
        for widget in (self.ui.inputsCollapsibleButton, self.ui.samplingCollapsibleButton,
                       self.ui.outputsCollapsibleButton, self.ui.marginSpinBox, self.ui.variabilityCheckBox,
                       self.ui.startEditingButton):
            widget.enabled = not running

    def onProgress(self, stage: str, step: int, total: int) -> None:
        bar = self.ui.progressBar
        bar.setRange(0, max(total, 1))
        bar.setValue(step)
        bar.setFormat(f"{STAGE_NAMES.get(stage, stage)} %v/%m")

    def onFinished(self, task: GenerationTask) -> None:
        self._setRunning(False)
        bar = self.ui.progressBar
        bar.setRange(0, 1)
        bar.setValue(1 if task.state == "done" else 0)
        bar.setFormat({"done": "Done", "cancelled": "Cancelled"}.get(task.state, "Failed"))
        editing = self._taskKind == "edit"
        if task.state == "done":
            self._lastResult = task.outputNodes[0]
            names = ", ".join(node.GetName() for node in task.outputNodes)
            self._log(f"{'Edited' if editing else 'Generated'} {names}")
            if task.variabilityNode is not None:
                self._log(f"Variability (standard deviation of the samples): {task.variabilityNode.GetName()}, "
                          "shown over the result")
                slicer.util.setSliceViewerLayers(background=self._lastResult, foreground=task.variabilityNode,
                                                 foregroundOpacity=0.5, fit=True)
            else:
                slicer.util.setSliceViewerLayers(background=self._lastResult, fit=True)
        elif task.state == "cancelled":
            self._log("Cancelled: nothing was generated.")
        else:
            self._log(f"Error: {task.message}")
            what = "edit the scan" if editing else "generate an image"
            slicer.util.errorDisplay(f"MedLSDM could not {what}:\n\n{task.message}")
        self.updateGUIFromParameterNode()

    def _log(self, message: str) -> None:
        self.ui.logTextEdit.appendPlainText(message)

class MedLSDMLogic(DependencyInstaller, GenerationLogic, ScriptedLoadableModuleLogic):
    """The module's logic: generation (GenerationLogic) plus what needs the Slicer application:
    the parameter node, installing dependencies, and the Review layout.

    From the Python console::

        logic = slicer.util.getModuleLogic("MedLSDM")
        volume = logic.generate(getNode("Segmentation"), getNode("MRHead"), seed=1)
        summary = logic.generateBatch(["case1.seg.nrrd", "case2.nii.gz"], outputFolder="/tmp/synthetic")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        GenerationLogic.__init__(self)

    def getParameterNode(self):
        return MedLSDMParameterNode(super().getParameterNode())

    def _beforeWorker(self) -> None:
        """Called once the inputs are checked, before the worker starts: the packages it needs."""
        try:
            ready = self.ensureDependencies()
        except GenerationError:
            raise
        except Exception as exc:  # pip or the PyTorch extension failed
            raise GenerationError(f"installing MedLSDM's Python packages failed ({exc}): see the Python console, "
                                  "check the network connection, and click Generate again") from None
        if not ready:
            raise GenerationError("not started: MedLSDM's Python packages are not installed (installation was "
                                  "declined)")

    def generateBatch(self, inputs, outputFolder=None, **kwargs):
        """GenerationLogic.generateBatch, after making sure the worker's Python has what it needs."""
        if not self.ensureDependencies():
            raise GenerationError("the required Python packages are not installed: MedLSDM cannot run")
        return super().generateBatch(inputs, outputFolder, **kwargs)

    # -- review --------------------------------------------------------------------------------

    def showReview(self, realVolume, syntheticVolume, segmentationNode=None) -> dict:
        """review.showReview: the real and the generated volume side by side; returns what
        ``restoreReview`` needs to go back."""
        return review.showReview(realVolume, syntheticVolume, segmentationNode)

    def restoreReview(self, state: dict) -> None:
        """review.restoreReview: back to the layout from before ``showReview``."""
        review.restoreReview(state)


class MedLSDMTest(SelfTest):
    """Slicer's self-test (MedLSDMSlicer/selftest.py) on this module's logic."""

    def newLogic(self):
        return MedLSDMLogic()
