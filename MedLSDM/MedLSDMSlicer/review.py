"""The Review layout: the real and the generated volume side by side with linked slice views and the
segmentation as an outline in both, and the way back to the layout from before; and the panel's Review
button (a mixin of the module widget)."""
import slicer

from .engine import GenerationError


def showReview(realVolume, syntheticVolume, segmentationNode=None) -> dict:
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

def restoreReview(state: dict) -> None:
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


class ReviewButton:
    """The widget's Review button: enabled once there is a generated and a real volume; toggles the layout
    (``self.ui``, ``self.logic``, ``self._parameterNode``, ``self._lastResult`` and ``self._review`` are the
    widget's)."""

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
