"""Installing the worker's Python packages into Slicer's Python: PyTorch through the PyTorch extension (the
build it chooses, CUDA or not), then the engine's other requirements with that PyTorch pinned, asking first.
Nothing is installed at import, and nothing in testing mode."""
import re
import sys
from typing import List, Optional

import qt
import slicer

from .engine import GenerationError

# The engine's requirements other than PyTorch (numpy and SimpleITK come with Slicer: never reinstalled).
REQUIREMENTS = ["monai>=1.5", "einops>=0.6", "scipy>=1.7", "safetensors>=0.4", "slicerio>=1.0", "tqdm>=4.60",
                "PyYAML>=6.0"]
TORCH_REQUIREMENT = ">=2.1"


def _packageName(requirement: str) -> str:
    """The package a requirement names (``monai>=1.5`` -> ``monai``)."""
    return re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0]


class DependencyInstaller:
    """The module logic's dependency installation (a mixin: ``pythonExecutable`` is GenerationLogic's; a
    worker run with another Python needs nothing installed here)."""

    _dependenciesReady = False
    pythonExecutable: Optional[str] = None

    def ensureDependencies(self) -> bool:
        """Install PyTorch (through the PyTorch extension) and the engine's other requirements into
        Slicer's Python, asking first. False when the user declined. Nothing to do when the worker
        runs with another Python (MEDLSDM_WORKER_PYTHON). In testing mode nothing is installed (the
        PyTorch extension would not ask): a GenerationError says what is missing."""
        if self._dependenciesReady or self.pythonExecutable:
            return True
        missing = ([] if self._installedVersion("torch") is not None else ["torch"]) + self._missingRequirements()
        if not missing:
            type(self)._dependenciesReady = True
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
        type(self)._dependenciesReady = True
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
            name = _packageName(text)
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
        loaded = [text for text in missing if _packageName(text).lower() in sys.modules]
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
