"""MedLSDM: synthetic 3D medical images from segmentations (3D Slicer scripted module).

The engine runs in a separate worker process (``PythonSlicer -m MedLSDMLib.worker``); this module
imports neither torch nor MedLSDMLib. PyTorch and the engine's other requirements are installed on
the first Generate, never at import. Python 3.9 syntax (Slicer 5.8) and up.
"""
import logging
import os
import re
import sys
from typing import Annotated, List, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin

from MedLSDMSlicer.logic import (DEFAULT_MARGIN, GenerationError, GenerationLogic, GenerationTask, Geometry,
                                 knownModels, modelClasses, resourcesFolder, sameNode)

# The engine's requirements other than PyTorch (numpy and SimpleITK come with Slicer: never reinstalled).
REQUIREMENTS = ["monai>=1.5", "einops>=0.6", "scipy>=1.7", "safetensors>=0.4", "slicerio>=1.0", "tqdm>=4.60",
                "PyYAML>=6.0"]
TORCH_REQUIREMENT = ">=2.1"
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


class MedLSDMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
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

    # -- models --------------------------------------------------------------------------------

    def _fillModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        try:
            entries = knownModels()
        except GenerationError as exc:
            self._log(str(exc))
            return
        for entry in entries:
            state = "installed" if entry.installed() else "downloaded on first use"
            combo.addItem(f"{entry.name} {entry.version} ({state})", entry.name)
            combo.setItemData(combo.count - 1, entry.description, qt.Qt.ToolTipRole)

    def _selectModel(self, model: str) -> None:
        combo = self.ui.modelComboBox
        if not model:
            index = 0 if combo.count else -1
        else:
            index = combo.findData(model)
            if index < 0 and os.path.isdir(model):
                combo.addItem(f"{os.path.basename(os.path.normpath(model))} (folder)", model)
                combo.setItemData(combo.count - 1, model, qt.Qt.ToolTipRole)
                index = combo.count - 1
        wasBlocked = combo.blockSignals(True)
        combo.currentIndex = index
        combo.blockSignals(wasBlocked)

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.model = str(self.ui.modelComboBox.itemData(index))

    def onBrowseModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Choose a MedLSDM model bundle folder")
        if not folder:
            return
        if not os.path.isfile(os.path.join(folder, "model.json")):
            slicer.util.errorDisplay(f"{folder} holds no model.json: it is not a MedLSDM model bundle.")
            return
        self._parameterNode.model = folder

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

    # -- review --------------------------------------------------------------------------------

    def _realVolume(self):
        p = self._parameterNode
        if p.referenceVolume:
            return p.referenceVolume
        if p.segmentation:
            role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
            return p.segmentation.GetNodeReference(role)
        return None

    def _updateReviewButton(self) -> None:
        button = self.ui.reviewButton
        if button.checked:
            return
        synthetic = self._lastResult if self._lastResult is not None and self._lastResult.GetScene() else None
        real = self._realVolume()
        button.enabled = bool(synthetic and real)
        button.toolTip = ("Show the real and the generated image side by side; click again to go back"
                          if button.enabled else "Generate an image first, from a segmentation with a reference volume")

    def onReviewToggled(self, checked: bool) -> None:
        if checked:
            self._review = self.logic.showReview(self._realVolume(), self._lastResult, self._parameterNode.segmentation)
            self.ui.reviewButton.text = "Back to the previous layout"
        else:
            if self._review is not None:
                self.logic.restoreReview(self._review)
                self._review = None
            self.ui.reviewButton.text = "Review side by side"
            self._updateReviewButton()


class MedLSDMLogic(GenerationLogic, ScriptedLoadableModuleLogic):
    """The module's logic: generation (GenerationLogic) plus what needs the Slicer application:
    the parameter node, installing dependencies, and the Review layout.

    From the Python console::

        logic = slicer.util.getModuleLogic("MedLSDM")
        volume = logic.generate(getNode("Segmentation"), getNode("MRHead"), seed=1)
        summary = logic.generateBatch(["case1.seg.nrrd", "case2.nii.gz"], outputFolder="/tmp/synthetic")
    """

    _dependenciesReady = False

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

    # -- dependencies --------------------------------------------------------------------------

    def ensureDependencies(self) -> bool:
        """Install PyTorch (through the PyTorch extension) and the engine's other requirements into
        Slicer's Python, asking first. False when the user declined. Nothing to do when the worker
        runs with another Python (MEDLSDM_WORKER_PYTHON). In testing mode nothing is installed (the
        PyTorch extension would not ask): a GenerationError says what is missing."""
        if MedLSDMLogic._dependenciesReady or self.pythonExecutable:
            return True
        missing = ([] if self._installedVersion("torch") is not None else ["torch"]) + self._missingRequirements()
        if not missing:
            MedLSDMLogic._dependenciesReady = True
            return True
        testing = getattr(slicer.app, "testingEnabled", None)
        if testing is not None and testing():
            raise GenerationError(f"MedLSDM needs Python packages that are not installed ({', '.join(missing)}), and "
                                  "Slicer runs in testing mode, where MedLSDM installs nothing: click Generate once "
                                  "in a normal Slicer session to install them")
        if not self._ensureTorch():
            return False
        if not self._ensureRequirements():
            return False
        MedLSDMLogic._dependenciesReady = True
        return True

    @staticmethod
    def _installedVersion(name: str) -> Optional[str]:
        from importlib import metadata

        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    def _ensureTorch(self) -> bool:
        if self._installedVersion("torch") is not None:
            return True
        try:
            import PyTorchUtils
        except ImportError:
            raise GenerationError("MedLSDM needs PyTorch: install the PyTorch extension with the Extensions Manager, "
                                  "restart Slicer, and click Generate again") from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                              torchVersionRequirement=TORCH_REQUIREMENT)
        return torch is not None

    def _missingRequirements(self) -> List[str]:
        """The REQUIREMENTS that are absent or too old."""
        try:
            from packaging.requirements import Requirement
        except ImportError:
            Requirement = None
        missing = []
        for text in REQUIREMENTS:
            name = re.split(r"[<>=!~\[ ]", text, 1)[0]
            installed = self._installedVersion(name)
            if installed is None or (Requirement is not None and installed not in Requirement(text).specifier):
                missing.append(text)
        return missing

    def _ensureRequirements(self) -> bool:
        try:
            import slicer.packaging as packaging  # Slicer 5.12 and later
        except ImportError:
            packaging = None
        # The installed PyTorch (the build PyTorchUtils chose, CUDA or not) is pinned, so that pip can
        # never replace it while resolving MONAI's requirements.
        requirements = REQUIREMENTS + [f"torch=={self._installedVersion('torch')}"]
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            try:
                packaging.pip_ensure(requirements, requester="MedLSDM")
            except RuntimeError:  # the user declined
                return False
            return True
        missing = self._missingRequirements()
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
                "MedLSDM needs these Python packages, which will be downloaded and installed now "
                f"(this can take a few minutes):\n\n{', '.join(missing)}", "MedLSDM: install packages"):
            return False
        loaded = [text for text in missing if re.split(r"[<>=!~\[ ]", text, 1)[0].lower() in sys.modules]
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            slicer.util.pip_install(missing + requirements[-1:])
        finally:
            qt.QApplication.restoreOverrideCursor()
        if loaded:
            slicer.util.infoDisplay("Packages that Slicer had already loaded were updated "
                                    f"({', '.join(loaded)}): restart Slicer before using them in other modules.",
                                    "MedLSDM: restart recommended")
        return True

    # -- review --------------------------------------------------------------------------------

    def showReview(self, realVolume, syntheticVolume, segmentationNode=None) -> dict:
        """Side-by-side layout: the real volume in the left view, the generated one in the right,
        slice views linked, the segmentation as an outline in both. Returns what ``restoreReview``
        needs to go back."""
        if realVolume is None or syntheticVolume is None:
            raise GenerationError("Review needs a real volume (the reference) and a generated volume")
        layoutManager = slicer.app.layoutManager()
        state = {"layout": layoutManager.layout, "linked": {}, "outline": None}
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        composites = []
        for viewName, volume in (("Red", realVolume), ("Yellow", syntheticVolume)):
            sliceLogic = layoutManager.sliceWidget(viewName).sliceLogic()
            composite = sliceLogic.GetSliceCompositeNode()
            state["linked"][viewName] = composite.GetLinkedControl()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLabelVolumeID(None)
            sliceLogic.GetSliceNode().SetOrientation("Axial")
            sliceLogic.FitSliceToAll()
            composites.append(composite)
        for composite in composites:  # linked only now, so that neither volume choice spreads to the other view
            composite.SetLinkedControl(True)
        if segmentationNode is not None:
            if segmentationNode.GetDisplayNode() is None:
                segmentationNode.CreateDefaultDisplayNodes()
            display = segmentationNode.GetDisplayNode()
            state["outline"] = (segmentationNode.GetID(), display.GetVisibility(), display.GetVisibility2DFill(),
                                display.GetVisibility2DOutline(), [display.GetNthViewNodeID(i) for i in
                                                                   range(display.GetNumberOfViewNodeIDs())])
            display.RemoveAllViewNodeIDs()  # shown in every view
            display.SetVisibility(True)
            display.SetVisibility2DFill(False)
            display.SetVisibility2DOutline(True)
        return state

    def restoreReview(self, state: dict) -> None:
        """Back to the layout, view links and segmentation display from before ``showReview``."""
        layoutManager = slicer.app.layoutManager()
        for viewName, linked in state["linked"].items():
            widget = layoutManager.sliceWidget(viewName)
            if widget is not None:
                widget.sliceLogic().GetSliceCompositeNode().SetLinkedControl(linked)
        if state["outline"] is not None:
            segmentationId, visible, fill, outline, views = state["outline"]
            segmentation = slicer.mrmlScene.GetNodeByID(segmentationId)
            if segmentation is not None and segmentation.GetDisplayNode() is not None:
                display = segmentation.GetDisplayNode()
                display.SetVisibility(visible)
                display.SetVisibility2DFill(fill)
                display.SetVisibility2DOutline(outline)
                for viewId in views:
                    display.AddViewNodeID(viewId)
        layoutManager.setLayout(state["layout"])


class MedLSDMTest(ScriptedLoadableModuleTest):
    """Slicer's self-test: generate with the first model of Models.json on an oblique, anisotropic
    volume and check the result's geometry; a bad input must end in a message."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_empty_segmentation_is_reported()
        logic = MedLSDMLogic()
        if not logic.pythonExecutable and (logic._installedVersion("torch") is None or logic._missingRequirements()):
            # A self-test must not download gigabytes: generation is tested where the packages are installed.
            self.delayDisplay("Generation test skipped: PyTorch or MedLSDM's packages are not installed (click "
                              "Generate once to install them)")
            return
        self.setUp()
        self.test_generate_keeps_the_reference_geometry()
        self.setUp()
        self.test_edit_keeps_the_real_scan_outside_the_region()

    def _referenceVolume(self):
        import numpy as np

        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Reference")
        voxels = np.random.default_rng(0).normal(100, 20, (30, 52, 44)).astype(np.int16)  # k, j, i
        slicer.util.updateVolumeFromArray(volume, voxels)
        volume.SetSpacing(1.1, 0.9, 1.6)
        volume.SetOrigin(-22.5, 17.0, -20.25)
        angle = np.deg2rad(20.0)
        c, s = np.cos(angle), np.sin(angle)
        volume.SetIJKToRASDirections(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
        return volume

    def _tissues(self, reference, model: str):
        """A segmentation on ``reference``: nested spheres of the model's first three classes."""
        import numpy as np

        classes = modelClasses(model)
        self.assertIsNotNone(classes, f"model {model} is not installed")
        foreground = [name for value, name in classes if value != 0][:3]
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Tissues")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in (30, 52, 44)], indexing="ij")
        radius = np.sqrt(sum(g ** 2 for g in grids))
        for name, limit in zip(foreground, (0.9, 0.65, 0.4)):
            segmentId = segmentation.GetSegmentation().AddEmptySegment("", name)
            slicer.util.updateSegmentBinaryLabelmapFromArray((radius < limit).astype(np.uint8), segmentation,
                                                              segmentId, reference)
        return segmentation, radius

    def test_generate_keeps_the_reference_geometry(self) -> None:
        import numpy as np

        self.delayDisplay("Generating with the first model of Models.json")
        model = knownModels()[0].name
        reference = self._referenceVolume()
        segmentation, _ = self._tissues(reference, model)

        logic = MedLSDMLogic()
        result = logic.generate(segmentation, reference, model=model, seed=1)
        self.assertEqual(result.GetName(), "Tissues synthetic seed 1")
        self.assertEqual(result.GetImageData().GetDimensions(), reference.GetImageData().GetDimensions())
        self.assertEqual(Geometry.of(result).differences(Geometry.of(reference)), [])
        voxels = slicer.util.arrayFromVolume(result)
        self.assertTrue(np.isfinite(voxels).all() and voxels.std() > 0)
        self.delayDisplay("Generated volume has the reference geometry")

    def test_edit_keeps_the_real_scan_outside_the_region(self) -> None:
        import numpy as np

        self.delayDisplay("Editing a region of a scan with the first model of Models.json")
        model = knownModels()[0].name
        reference = self._referenceVolume()
        real = slicer.util.arrayFromVolume(reference).copy()
        segmentation, radius = self._tissues(reference, model)
        logic = MedLSDMLogic()
        logic.startEditing(segmentation)
        inner = segmentation.GetSegmentation().GetNthSegmentID(2)
        grown = (radius < 0.55).astype(np.uint8)  # the innermost sphere grows: the edit
        slicer.util.updateSegmentBinaryLabelmapFromArray(grown, segmentation, inner, reference)
        changed = logic.changedRegion(reference, segmentation)
        self.assertEqual(int(changed.sum()), int(((radius < 0.55) & (radius >= 0.4)).sum()))

        result = logic.edit(reference, segmentation, model=model, seed=1, margin=2.0)
        self.assertEqual(result.GetName(), "Reference edited seed 1")
        self.assertEqual(Geometry.of(result).differences(Geometry.of(reference)), [])
        voxels = slicer.util.arrayFromVolume(result)
        far = radius > 0.9  # well beyond the edited shell and its margin
        self.assertTrue(np.array_equal(voxels[far], real[far]), "voxels far from the edit changed")
        self.assertFalse(np.allclose(voxels[changed], real[changed]), "the edited region was not regenerated")
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(reference), real), "the real scan changed")
        self.delayDisplay("Edited only the changed region")

    def test_empty_segmentation_is_reported(self) -> None:
        reference = self._referenceVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Nothing")
        with self.assertRaises(GenerationError) as raised:
            MedLSDMLogic().generate(segmentation, reference, model=knownModels()[0].name)
        self.assertIn("Nothing has no segments", str(raised.exception))
        self.delayDisplay("Empty segmentation reported")
