"""Stand-ins for ``slicer.app`` (with its layout manager) and the GUI parts of ``slicer.util``
(dialogs, loadUI, setSliceViewerLayers...), on real MRML: the layout node, slice nodes, slice
composite nodes and slice logics are slicer-core's own. Written for this project, no Slicer code."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import slicer

import qt
import widgets

SLICE_VIEWS = ("Red", "Yellow", "Green")
LAYOUTS = ("SlicerLayoutFourUpView", "SlicerLayoutSideBySideView", "SlicerLayoutConventionalView",
           "SlicerLayoutOneUpRedSliceView")


class StartupEnvironment:
    def keys(self) -> List[str]:
        return list(os.environ)

    def value(self, name: str) -> str:
        return os.environ[name]


class SliceWidget:
    def __init__(self, sliceLogic: Any) -> None:
        self._logic = sliceLogic

    def sliceLogic(self) -> Any:
        return self._logic


class LayoutManager:
    """``slicer.app.layoutManager()``: ``layout`` is the layout node's view arrangement; each slice
    view has a real slice node, composite node and slice logic."""

    def __init__(self, scene: Any) -> None:
        self.scene = scene
        self.layoutNode = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
        for name in LAYOUTS:  # a minimal description of each layout the tests use
            views = "".join(f'<item><view class="vtkMRMLSliceNode" singletontag="{v}"/></item>' for v in SLICE_VIEWS)
            self.layoutNode.AddLayoutDescription(getattr(slicer.vtkMRMLLayoutNode, name),
                                                 f'<layout type="horizontal">{views}</layout>')
        self.layoutNode.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        self.sliceLogics: Dict[str, Any] = {}
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # Axial..., as Slicer's app logic adds
        for name in SLICE_VIEWS:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLScene(scene)
            sliceNode = logic.AddSliceNode(name)
            sliceNode.SetDimensions(256, 256, 1)
            self.sliceLogics[name] = logic

    @property
    def layout(self) -> int:
        return self.layoutNode.GetViewArrangement()

    @layout.setter
    def layout(self, value: int) -> None:
        self.setLayout(value)

    def setLayout(self, value: int) -> None:
        self.layoutNode.SetViewArrangement(value)

    def sliceWidget(self, name: str) -> Optional[SliceWidget]:
        return SliceWidget(self.sliceLogics[name]) if name in self.sliceLogics else None

    def sliceViewNames(self) -> Tuple[str, ...]:
        return SLICE_VIEWS


class App:
    """The part of ``slicer.app`` the module uses."""

    def __init__(self, temporaryPath: str, scene: Any) -> None:
        self.temporaryPath = temporaryPath
        self.testing = False
        self._layoutManager = LayoutManager(scene)

    def processEvents(self) -> None:
        qt.runDueTimers()

    def startupEnvironment(self) -> StartupEnvironment:
        return StartupEnvironment()

    def layoutManager(self) -> LayoutManager:
        return self._layoutManager

    def testingEnabled(self) -> bool:
        return self.testing


class Dialogs:
    """What the module showed the user; ``confirm`` answers confirmOkCancelDisplay."""

    def __init__(self) -> None:
        self.shown: List[Tuple[str, str]] = []
        self.confirm = True

    def kinds(self, kind: str) -> List[str]:
        return [text for k, text in self.shown if k == kind]


def install(monkeypatch: Any, dialogs: Dialogs) -> None:
    """Put the GUI parts of slicer.util in place for one test (monkeypatch undoes it)."""
    util = slicer.util

    def record(kind: str) -> Any:
        def show(text: str, windowTitle: str = "", *args: Any, **kwargs: Any) -> None:
            dialogs.shown.append((kind, text))
        return show

    def confirmOkCancelDisplay(text: str, windowTitle: str = "", *args: Any, **kwargs: Any) -> bool:
        dialogs.shown.append(("confirm", text))
        return dialogs.confirm

    @contextlib.contextmanager
    def tryWithErrorDisplay(message: str = "", waitCursor: bool = False) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            dialogs.shown.append(("error", f"{message} {exc}"))

    def setSliceViewerLayers(background: Any = "keep-current", foreground: Any = "keep-current",
                             label: Any = "keep-current", foregroundOpacity: Optional[float] = None,
                             labelOpacity: Optional[float] = None, fit: bool = False) -> None:
        for logic in slicer.app.layoutManager().sliceLogics.values():
            composite = logic.GetSliceCompositeNode()
            for layer, node in (("Background", background), ("Foreground", foreground), ("Label", label)):
                if not isinstance(node, str):
                    getattr(composite, f"Set{layer}VolumeID")(node.GetID() if node is not None else None)
            if foregroundOpacity is not None:
                composite.SetForegroundOpacity(foregroundOpacity)
            if fit:
                logic.FitSliceToAll()

    def pip_install(requirements: Any, *args: Any, **kwargs: Any) -> None:
        dialogs.shown.append(("pip_install", str(requirements)))

    for name, value in (("errorDisplay", record("error")), ("infoDisplay", record("info")),
                        ("warningDisplay", record("warning")), ("delayDisplay", record("delay")),
                        ("confirmOkCancelDisplay", confirmOkCancelDisplay), ("tryWithErrorDisplay", tryWithErrorDisplay),
                        ("setSliceViewerLayers", setSliceViewerLayers), ("pip_install", pip_install),
                        ("loadUI", widgets.loadUI), ("childWidgetVariables", widgets.childWidgetVariables),
                        ("mainWindow", lambda: None), ("selectModule", record("selectModule"))):
        monkeypatch.setattr(util, name, value)
