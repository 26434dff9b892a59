"""The panel's model choice: the models of Resources/Models.json in the combo box, a bundle folder chosen
with Browse, and the choice kept in the parameter node (a mixin of the module widget)."""
import os

import qt
import slicer

from .engine import GenerationError
from .models import knownModels


class ModelChoice:
    """The widget's model combo box and Browse button (``self.ui``, ``self._parameterNode`` and ``self._log``
    are the widget's)."""

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
