"""Installing the worker's packages (PyTorch through the PyTorch extension, the rest through
slicer.packaging or pip_install), and Slicer's self-test, which must install nothing."""
from __future__ import annotations

import os
import sys
import types
from typing import Any, Dict, List, Optional

import pytest
import slicer

import ScriptedLoadableModule
from MedLSDMSlicer import dependencies

TORCH = "2.5.1"


class Installers:
    """Stand-ins for the PyTorch extension (PyTorchUtils) and slicer.packaging, and what is installed."""

    def __init__(self) -> None:
        self.installed: Dict[str, Optional[str]] = {}
        self.torchCalls: List[Dict[str, Any]] = []
        self.pipEnsureCalls: List[Dict[str, Any]] = []
        self.acceptTorch = True
        self.acceptPackages = True

    def version(self, name: str) -> Optional[str]:
        return self.installed.get(name)

    def installTorch(self, **kwargs: Any) -> Any:
        self.torchCalls.append(kwargs)
        if not self.acceptTorch:
            return None
        self.installed["torch"] = TORCH
        return types.ModuleType("torch")

    def pip_ensure(self, requirements: List[str], **kwargs: Any) -> None:
        self.pipEnsureCalls.append(dict(kwargs, requirements=list(requirements)))
        if not self.acceptPackages:
            raise RuntimeError("User declined package installation")
        for text in requirements:
            self.installed[text.split(">")[0].split("=")[0]] = "99.0"

    def calls(self) -> int:
        return len(self.torchCalls) + len(self.pipEnsureCalls)


@pytest.fixture
def installers(scene: Any, monkeypatch: pytest.MonkeyPatch) -> Installers:
    import MedLSDM

    found = Installers()
    extension = types.ModuleType("PyTorchUtils")
    extension.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=found.installTorch)
    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_ensure = found.pip_ensure
    monkeypatch.setitem(sys.modules, "PyTorchUtils", extension)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    monkeypatch.setattr(MedLSDM.MedLSDMLogic, "_installedVersion", staticmethod(found.version))
    return found


def test_accepting_installs_torch_then_the_requirements_with_torch_pinned(installers: Installers) -> None:
    import MedLSDM

    logic = MedLSDM.MedLSDMLogic()
    assert logic.ensureDependencies() is True
    assert installers.torchCalls == [{"askConfirmation": True, "torchVersionRequirement": dependencies.TORCH_REQUIREMENT}]
    [call] = installers.pipEnsureCalls
    assert call["requirements"] == dependencies.REQUIREMENTS + [f"torch=={TORCH}"]  # pip may never replace this torch
    assert call["requester"] == "MedLSDM" and call.get("skip_in_testing", True) is True
    assert MedLSDM.MedLSDMLogic().ensureDependencies() is True and installers.calls() == 2  # asked once only


def test_declining_torch_installs_nothing_else(installers: Installers) -> None:
    import MedLSDM

    installers.acceptTorch = False
    assert MedLSDM.MedLSDMLogic().ensureDependencies() is False
    assert len(installers.torchCalls) == 1 and installers.pipEnsureCalls == []


def test_declining_the_packages_is_false_and_asked_again_next_time(installers: Installers) -> None:
    import MedLSDM

    installers.acceptPackages = False
    assert MedLSDM.MedLSDMLogic().ensureDependencies() is False
    assert MedLSDM.MedLSDMLogic().ensureDependencies() is False
    assert len(installers.pipEnsureCalls) == 2 and len(installers.torchCalls) == 1  # torch stayed installed


def test_without_the_pytorch_extension_the_message_says_how_to_get_it(installers: Installers,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import MedLSDM
    from MedLSDMSlicer.logic import GenerationError

    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import fails: the extension is not installed
    with pytest.raises(GenerationError, match="install the PyTorch extension with the Extensions Manager"):
        MedLSDM.MedLSDMLogic().ensureDependencies()
    assert installers.calls() == 0


def test_slicer_5_8_without_slicer_packaging_asks_then_uses_pip_install(installers: Installers, dialogs: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import MedLSDM

    monkeypatch.setitem(sys.modules, "slicer.packaging", None)
    monkeypatch.delattr(slicer, "packaging")
    installers.installed["torch"] = TORCH
    dialogs.confirm = False
    assert MedLSDM.MedLSDMLogic().ensureDependencies() is False
    assert len(dialogs.kinds("confirm")) == 1 and dialogs.kinds("pip_install") == []
    dialogs.confirm = True
    assert MedLSDM.MedLSDMLogic().ensureDependencies() is True
    [installed] = dialogs.kinds("pip_install")
    assert "monai>=1.5" in installed and f"torch=={TORCH}" in installed


def test_a_worker_python_of_its_own_needs_nothing_installed(installers: Installers) -> None:
    import MedLSDM

    logic = MedLSDM.MedLSDMLogic()
    logic.pythonExecutable = sys.executable
    assert logic.ensureDependencies() is True and installers.calls() == 0


def test_testing_mode_installs_nothing_and_says_what_is_missing(installers: Installers, dialogs: Any) -> None:
    import MedLSDM
    from MedLSDMSlicer.logic import GenerationError

    slicer.app.testing = True
    with pytest.raises(GenerationError, match="testing mode, where MedLSDM installs nothing") as raised:
        MedLSDM.MedLSDMLogic().ensureDependencies()
    assert "torch" in str(raised.value) and "monai>=1.5" in str(raised.value)
    assert installers.calls() == 0 and dialogs.kinds("pip_install") == [] and dialogs.kinds("confirm") == []


@pytest.mark.parametrize("extension", ["installed", "missing"])
def test_the_self_test_checks_inputs_before_dependencies_and_installs_nothing(
        extension: str, installers: Installers, dialogs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slicer's self-test in testing mode: the empty segmentation is reported whether or not the
    PyTorch extension is there, and no installer is called."""
    import MedLSDM

    if extension == "missing":
        monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    slicer.app.testing = True
    asked = []
    original = MedLSDM.MedLSDMLogic.ensureDependencies
    monkeypatch.setattr(MedLSDM.MedLSDMLogic, "ensureDependencies", lambda self: asked.append(1) or original(self))
    monkeypatch.setattr(ScriptedLoadableModule.ScriptedLoadableModuleTest, "displayed", [])
    test = MedLSDM.MedLSDMTest()
    test.runTest()  # raises if a check fails
    displayed = ScriptedLoadableModule.ScriptedLoadableModuleTest.displayed
    assert displayed[0] == "Empty segmentation reported"
    assert displayed[-1].startswith("Generation test skipped")
    assert asked == []  # the empty segmentation ended it before any dependency was looked at
    assert installers.calls() == 0 and dialogs.kinds("pip_install") == [] and dialogs.kinds("confirm") == []


def test_the_self_test_generates_and_edits_with_the_bundled_model_when_its_packages_are_there(
        scene: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole self-test, as Slicer runs it where the packages are installed (here: the worker's own
    Python), on the bundled demo model: generation keeps the reference grid, the edit keeps the real
    voxels outside the edited region."""
    import MedLSDM
    from conftest import WORKER_PYTHON

    if not os.path.isfile(WORKER_PYTHON):
        pytest.skip("no worker Python")
    monkeypatch.setenv("MEDLSDM_WORKER_PYTHON", WORKER_PYTHON)
    slicer.app.testing = True
    monkeypatch.setattr(ScriptedLoadableModule.ScriptedLoadableModuleTest, "displayed", [])
    MedLSDM.MedLSDMTest().runTest()
    assert ScriptedLoadableModule.ScriptedLoadableModuleTest.displayed[-1] == "Edited only the changed region"
