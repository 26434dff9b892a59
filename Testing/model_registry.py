"""A stand-in model registry for the tests: a Resources folder (MEDLSDM_RESOURCES) with a Models.json
naming the bundled tiny model and a downloadable one behind a file:// URL, and a MEDLSDM_HOME."""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import pytest

from MedLSDMLib.models.bundle import ModelBundle

from conftest import subprocess_env, tiny_card


def zip_folder(folder: Path, archive: Path, extra: Dict[str, bytes] = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.iterdir()):
            zipped.write(path, f"{folder.name}/{path.name}")
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return archive


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Registry:
    """A Resources folder (MEDLSDM_RESOURCES) with a Models.json, and a MEDLSDM_HOME."""

    def __init__(self, root: Path, bundle_dir: Path, generator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.resources, self.home, self.store = root / "Resources", root / "home", root / "server"
        self.store.mkdir(parents=True)
        shutil.copytree(bundle_dir, self.resources / "Models" / "tiny-brain")
        # the downloadable model: the same networks under another name
        card = tiny_card(name="tiny-download", version="0.2.0")
        download = ModelBundle(card, generator.bundle.autoencoder, generator.bundle.unet).save(self.store / "tiny-download")
        self.archive = zip_folder(download, self.store / "tiny-download.zip")
        self.entries: List[Dict[str, Any]] = [
            {"name": "tiny-brain", "version": "0.1.0", "description": "the bundled test model",
             "path": "Models/tiny-brain"},
            {"name": "tiny-download", "version": "0.2.0", "description": "a downloadable test model",
             "url": self.archive.as_uri(), "sha256": file_sha256(self.archive), "size": self.archive.stat().st_size},
        ]
        self.write()
        monkeypatch.setenv("MEDLSDM_RESOURCES", str(self.resources))
        monkeypatch.setenv("MEDLSDM_HOME", str(self.home))

    def write(self) -> None:
        (self.resources / "Models.json").write_text(json.dumps({"models": self.entries}))

    @property
    def cache(self) -> Path:
        return self.home / "models"

    def env(self) -> Dict[str, str]:
        return subprocess_env(MEDLSDM_RESOURCES=str(self.resources), MEDLSDM_HOME=str(self.home))
