"""Stand-in for ``slicer.parameterNodeWrapper``: a class decorator that keeps typed, validated
attributes in a vtkMRMLScriptedModuleNode (values as parameters, nodes as node references) and
binds them to widgets. Written for this project from the documented API, no Slicer code.

``BEHAVIOUR`` picks the Slicer version whose GUI binding it imitates:
- "5.8": ``connectGui`` returns None, and ``disconnectGui`` leaves the wrapper's ModifiedEvent
  observer on the node;
- "5.10": ``connectGui`` returns the tag; the observer is still left behind;
- "5.12": both fixed (the wrapper records its observers in ``_guiVtkObserverTags``).
"""
from __future__ import annotations

import typing
from typing import Any, Callable, Dict, List, Optional

import vtk

import qt

BEHAVIOUR = "5.12"
liveConnectors: "set" = set()  # connectors whose widget changes still reach a parameter node
guiUpdates = [0]  # how many times a wrapper pushed the parameter node's values into its widgets
SlicerParameterNamePropertyName = "SlicerParameterName"


class WithinRange:
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value: Any) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{value} is not within [{self.minimum}, {self.maximum}]")


class Choice:
    def __init__(self, choices: List[Any]) -> None:
        self.choices = list(choices)

    def validate(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {self.choices}")


def _isNodeType(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, vtk.vtkObject) and kind.__name__.startswith("vtkMRML")


class _Parameter:
    def __init__(self, name: str, hint: Any, default: Any) -> None:
        self.name = name
        self.validators: List[Any] = []
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
            self.validators = [e for e in extras if hasattr(e, "validate")]
        self.kind = hint
        self.default = default
        self.isNode = _isNodeType(hint)

    def read(self, node: Any) -> Any:
        if self.isNode:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.kind is bool:
            return text == "True"
        return self.kind(text)

    def write(self, node: Any, value: Any) -> None:
        if self.isNode:
            if value is not None and not isinstance(value, self.kind):
                raise TypeError(f"{self.name}: {value} is not a {self.kind.__name__}")
            wasModifying = node.StartModify()
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
            node.Modified()
            node.EndModify(wasModifying)
            return
        if self.kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{self.name}: {value!r} is not a number")
        if self.kind is bool and not isinstance(value, bool):
            raise TypeError(f"{self.name}: {value!r} is not a bool")
        if self.kind is str and not isinstance(value, str):
            raise TypeError(f"{self.name}: {value!r} is not a str")
        value = self.kind(value)
        for validator in self.validators:
            validator.validate(value)
        node.SetParameter(self.name, str(value))


# ---------------------------------------------------------------------------------------------
# Widget connectors: how a parameter is shown in, and read from, each kind of widget
# ---------------------------------------------------------------------------------------------

class _Connector:
    def __init__(self, widget: Any, parameter: _Parameter) -> None:
        self.widget = qt.unwrap(widget)
        self.parameter = parameter
        self.callback: Optional[Callable[[], None]] = None
        className = type(self.widget).__name__
        if parameter.isNode:
            assert className == "qMRMLNodeComboBox", (parameter.name, className)
            self.signal = self.widget.currentNodeChanged
            self.read = self.widget.currentNode
            self.write = self.widget.setCurrentNode
        elif className == "QCheckBox":
            self.signal, self.read, self.write = self.widget.toggled, self.widget.isChecked, self.widget.setChecked
        elif className in ("QSpinBox", "QDoubleSpinBox"):
            self.signal, self.read, self.write = self.widget.valueChanged, self.widget.value, self.widget.setValue
        elif className == "QComboBox":
            choices = [v for c in parameter.validators if isinstance(c, Choice) for v in c.choices]
            assert choices, f"{parameter.name}: a combo box needs a Choice"
            self.widget.clear()
            self.widget.addItems([str(c) for c in choices])
            self.signal = self.widget.currentTextChanged
            self.read = self.widget.currentText
            self.write = lambda value: self.widget.setCurrentIndex(self.widget.findText(str(value)))
        else:
            raise TypeError(f"no connector for parameter {parameter.name} and a {className}")
        self.signal.connect(self._changed)

    def _changed(self, *args: Any) -> None:
        if self.callback is not None:
            self.callback()

    def onChanged(self, callback: Optional[Callable[[], None]]) -> None:
        self.callback = callback
        if callback is None:
            liveConnectors.discard(self)
        else:
            liveConnectors.add(self)


# ---------------------------------------------------------------------------------------------
# The decorator
# ---------------------------------------------------------------------------------------------

def parameterNodeWrapper(cls: type) -> type:
    hints = typing.get_type_hints(cls, include_extras=True)
    parameters = {name: _Parameter(name, hint, getattr(cls, name, None)) for name, hint in hints.items()}

    def __init__(self: Any, parameterNode: Any) -> None:
        self.parameterNode = parameterNode
        self._parameterGUIs: Dict[int, Dict[str, _Connector]] = {}
        self._nextTag = 0
        self._updating = False
        if BEHAVIOUR == "5.12":
            self._guiVtkObserverTags = {}
        for parameter in parameters.values():
            if parameter.isNode or parameterNode.GetParameter(parameter.name) == "":
                if not parameter.isNode:
                    parameter.write(parameterNode, parameter.default)

    def makeProperty(parameter: _Parameter) -> property:
        return property(lambda self: parameter.read(self.parameterNode),
                        lambda self, value: parameter.write(self.parameterNode, value))

    def updateGuis(self: Any) -> None:
        if self._updating:
            return
        self._updating = True
        guiUpdates[0] += 1
        try:
            for connectors in self._parameterGUIs.values():
                for name, connector in connectors.items():
                    connector.write(parameters[name].read(self.parameterNode))
        finally:
            self._updating = False

    def connectParametersToGui(self: Any, mapping: Dict[str, Any]) -> int:
        unknown = [name for name in mapping if name not in parameters]
        if unknown:
            raise ValueError(f"Cannot find a param with the given name: {unknown}")
        connectors = {name: _Connector(widget, parameters[name]) for name, widget in mapping.items()}
        tag = self._nextTag
        self._nextTag += 1
        self._parameterGUIs[tag] = connectors
        for name, connector in connectors.items():
            connector.write(parameters[name].read(self.parameterNode))

            def guiChanged(name: str = name, connector: _Connector = connector) -> None:
                if not self._updating:
                    parameters[name].write(self.parameterNode, connector.read())

            connector.onChanged(guiChanged)
        observer = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: updateGuis(self))
        if BEHAVIOUR == "5.12":
            self._guiVtkObserverTags[tag] = observer
        return tag

    def connectGui(self: Any, gui: Any) -> Optional[int]:
        mapping = {}
        for widget in vars(gui).values():
            name = widget.property(SlicerParameterNamePropertyName)
            if name:
                mapping[name] = widget
        tag = connectParametersToGui(self, mapping)
        return None if BEHAVIOUR == "5.8" else tag

    def disconnectGui(self: Any, tag: Any) -> None:
        if tag in self._parameterGUIs:
            for connector in self._parameterGUIs.pop(tag).values():
                connector.onChanged(None)
        if BEHAVIOUR == "5.12" and tag in self._guiVtkObserverTags:
            self.parameterNode.RemoveObserver(self._guiVtkObserverTags.pop(tag))

    members = dict(cls.__dict__)
    for name in parameters:
        members.pop(name, None)
    members.update({name: makeProperty(parameter) for name, parameter in parameters.items()})
    members.update(
        __init__=__init__, allParameters=parameters, connectGui=connectGui,
        connectParametersToGui=connectParametersToGui, disconnectGui=disconnectGui,
        AddObserver=lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback,
                                                                                               priority),
        RemoveObserver=lambda self, tag: self.parameterNode.RemoveObserver(tag),
        Modified=lambda self: self.parameterNode.Modified(),
        StartModify=lambda self: self.parameterNode.StartModify(),
        EndModify=lambda self, wasModified: self.parameterNode.EndModify(wasModified))
    members.pop("__dict__", None)
    members.pop("__weakref__", None)
    return type(cls.__name__, (), members)
