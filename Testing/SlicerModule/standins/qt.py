"""Stand-in for PythonQt's ``qt`` module, over PySide6 (offscreen): real Qt widgets, with the two
PythonQt habits the module relies on: properties read and written as attributes
(``button.enabled = False``) and string-signature connections (``button.connect("clicked()", slot)``).

Widgets come wrapped (``wrap``); calls through a wrapper unwrap their arguments and wrap what they
return. ``QTimer.singleShot`` queues the callback for ``runDueTimers`` (the tests' event loop).
Written for this project from the PythonQt behaviour the module uses; no Slicer or PythonQt code.
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable, List, Tuple

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import QObject

Qt = QtCore.Qt
QIcon = QtGui.QIcon
QFileDialog = QtWidgets.QFileDialog
QMessageBox = QtWidgets.QMessageBox


class QApplication:
    """The override-cursor calls the module makes (recorded, so tests can check they balance)."""

    cursors: List[Any] = []

    @staticmethod
    def setOverrideCursor(cursor: Any) -> None:
        QApplication.cursors.append(cursor)

    @staticmethod
    def restoreOverrideCursor() -> None:
        QApplication.cursors.pop()

    @staticmethod
    def instance() -> Any:
        return QtWidgets.QApplication.instance()


class Wrapper:
    """A QObject as PythonQt shows it to Python."""

    __slots__ = ("_obj",)

    def __init__(self, obj: QObject) -> None:
        object.__setattr__(self, "_obj", obj)

    def _isProperty(self, name: str) -> bool:
        obj = self._obj
        return obj.metaObject().indexOfProperty(name) >= 0 or name.encode() in [bytes(n) for n in
                                                                                obj.dynamicPropertyNames()]

    def __getattr__(self, name: str) -> Any:
        obj = self._obj
        if self._isProperty(name):
            return wrap(obj.property(name))
        attribute = getattr(obj, name)
        if callable(attribute) and not isinstance(attribute, QtCore.SignalInstance):
            def call(*args: Any, **kwargs: Any) -> Any:
                return wrap(attribute(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()}))
            return call
        return wrap(attribute)

    def __setattr__(self, name: str, value: Any) -> None:
        if not self._isProperty(name):
            raise AttributeError(f"{type(self._obj).__name__} {self._obj.objectName()!r} has no property {name!r}")
        if not self._obj.setProperty(name, unwrap(value)) and self._obj.metaObject().indexOfProperty(name) >= 0:
            raise AttributeError(f"property {name!r} of {self._obj.objectName()!r} cannot be set to {value!r}")

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Wrapper) and other._obj is self._obj

    def __hash__(self) -> int:
        return id(self._obj)

    def __repr__(self) -> str:
        return f"<qt {type(self._obj).__name__} {self._obj.objectName()!r}>"

    def connect(self, signature: str, slot: Callable[..., Any]) -> None:
        """PythonQt's ``obj.connect("signal(int)", slot)``: the slot gets as many arguments as the
        signature names."""
        match = re.fullmatch(r"(\w+)\((.*)\)", signature.replace(" ", ""))
        assert match, f"not a signal signature: {signature}"
        name, arguments = match.groups()
        count = len([a for a in arguments.split(",") if a])
        signal = getattr(self._obj, name)
        if "(" not in str(signal) and arguments:  # an overloaded Qt signal: pick the signature
            signal = signal[tuple(_QT_TYPES.get(a, object) for a in arguments.split(","))]
        signal.connect(lambda *args: slot(*[wrap(a) for a in args[:count]]))


_QT_TYPES = {"int": int, "bool": bool, "double": float, "QString": str}


def wrap(value: Any) -> Any:
    if isinstance(value, QObject) and not isinstance(value, Wrapper):
        return Wrapper(value)
    return value


def unwrap(value: Any) -> Any:
    return value._obj if isinstance(value, Wrapper) else value


def QWidget() -> Wrapper:
    return Wrapper(QtWidgets.QWidget())


def QVBoxLayout(parent: Any = None) -> Wrapper:
    return Wrapper(QtWidgets.QVBoxLayout(unwrap(parent)))


# ---------------------------------------------------------------------------------------------
# QTimer.singleShot and the tests' event loop
# ---------------------------------------------------------------------------------------------

_timers: List[Tuple[float, Callable[[], None]]] = []


class QTimer:
    @staticmethod
    def singleShot(msec: int, callback: Callable[[], None]) -> None:
        _timers.append((time.monotonic() + msec / 1000.0, callback))


def runDueTimers() -> None:
    now = time.monotonic()
    for timer in [t for t in _timers if t[0] <= now]:
        _timers.remove(timer)
        timer[1]()
    QtWidgets.QApplication.processEvents()


def clearTimers() -> None:
    _timers.clear()


def runEventLoop(until: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run the timers until ``until()`` holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out waiting in the event loop"
        runDueTimers()
        time.sleep(0.01)
