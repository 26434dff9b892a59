"""Where the engine (MedLSDMLib) lies beside the module, and putting it on ``sys.path`` so that
Slicer's process imports the engine's torch-free modules (the worker protocol, the model registry,
label names, grid comparison, the mapping-file parser, the edit options) instead of copies of them.
Everything that needs torch runs only in the worker process."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List


class GenerationError(Exception):
    """A generation that could not be done; the message says what is wrong and what to do."""


def _searchFolders() -> List[Path]:
    """Installed, MedLSDMLib/ and Resources/ lie beside the module's files; in the source tree,
    one folder up (the module is MedLSDM/MedLSDM.py there)."""
    moduleFolder = Path(__file__).resolve().parents[1]
    return [moduleFolder, moduleFolder.parent]


def engineFolder() -> Path:
    """The folder that holds the MedLSDMLib package."""
    for folder in _searchFolders():
        if (folder / "MedLSDMLib" / "worker.py").is_file():
            return folder
    raise GenerationError("the MedLSDM engine (MedLSDMLib) was not found beside the module: reinstall MedLSDM")


def useEngine() -> Path:
    """Make the engine's package importable in this process (Slicer's); returns its folder."""
    folder = engineFolder()
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    return folder
