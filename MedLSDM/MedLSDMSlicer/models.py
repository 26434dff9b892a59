"""The models, read through the engine's torch-free registry (Resources/Models.json, model.json), and the
class names a segment name or a mapping file points to."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .engine import GenerationError, useEngine

useEngine()
# the engine's torch-free modules (Testing/Slicer/test_module_files.py: TORCH_FREE_ENGINE)
from MedLSDMLib.errors import InputError, MedLSDMError  # noqa: E402
from MedLSDMLib.io.mapfile import read_map_file  # noqa: E402
from MedLSDMLib.io.names import class_index  # noqa: E402
from MedLSDMLib.models.registry import ModelEntry, known_models, local_model_folder, model_classes, resources_dir  # noqa: E402

PathLike = Union[str, "os.PathLike[str]"]


def resourcesFolder() -> Path:
    """The Resources folder (UI, icons, Models.json, examples, the bundled model), as the engine finds it."""
    folder = resources_dir()
    if not (folder / "Models.json").is_file():
        raise GenerationError(f"{folder / 'Models.json'} was not found beside the module: reinstall MedLSDM")
    return folder


def knownModels() -> List[ModelEntry]:
    """The entries of Resources/Models.json (name, version, description, path or url)."""
    resourcesFolder()
    try:
        return known_models()
    except MedLSDMError as exc:
        raise GenerationError(str(exc)) from None


def modelFolder(model: Optional[str]) -> Optional[Path]:
    """The local bundle folder of ``model`` (a folder, a registered name, or None for the first
    registered model), or None when it is registered but not downloaded yet."""
    resourcesFolder()
    try:
        return local_model_folder(model)
    except MedLSDMError as exc:
        raise GenerationError(str(exc)) from None


def modelClasses(model: Optional[str]) -> Optional[List[Tuple[int, str]]]:
    """(value, name) of each class of ``model``, read from its model.json; None when the model
    is not on this computer yet (the worker downloads it and matches the names then)."""
    folder = modelFolder(model)
    if folder is None:
        return None
    try:
        return model_classes(folder)
    except MedLSDMError as exc:
        raise GenerationError(str(exc)) from None


def mapFileTargets(mapFile: PathLike) -> Dict[str, str]:
    """Segment name (and ``*``) → model class from a mapping file (a path, or a table shipped in
    Resources/Mappings such as ``freesurfer_tissue``), read by the engine's own parser: its torch-free
    ``mapfile`` module, the one the worker uses."""
    try:
        return read_map_file(mapFile).names()
    except InputError as exc:
        raise GenerationError(str(exc)) from None


def findClass(text: str, classes: Sequence[Tuple[int, str]]) -> Optional[int]:
    """The class value that a class name (or a value written as text) names, or None (the engine's rule:
    names match ignoring case, spaces, hyphens and underscores)."""
    index = class_index(text, classes)
    return None if index is None else classes[index][0]

