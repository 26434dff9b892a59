"""Known models (Resources/Models.json): bundled ones, and downloads into the user cache."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from .bundle import CARD_FILE
from .errors import ModelError

ProgressFn = Callable[[str, int, int], None]


def resources_dir() -> Path:
    """Resources/ beside the package (source tree and Slicer install) or inside it (wheel)."""
    override = os.environ.get("MEDLSDM_RESOURCES")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "Resources", package / "Resources"):
        if candidate.is_dir():
            return candidate
    return package.parent / "Resources"


def models_home() -> Path:
    """Where downloaded models go: $MEDLSDM_HOME/models, by default ~/.medlsdm/models."""
    return Path(os.environ.get("MEDLSDM_HOME", Path.home() / ".medlsdm")) / "models"


@dataclass
class ModelEntry:
    name: str
    version: str
    description: str = ""
    path: Optional[str] = None  # bundled: relative to Resources/
    url: Optional[str] = None  # downloadable: a .zip of the bundle folder
    sha256: Optional[str] = None
    size: Optional[int] = None

    def local_folder(self) -> Path:
        if self.path is not None:
            return resources_dir() / self.path
        return models_home() / f"{self.name}-{self.version}"

    def installed(self) -> bool:
        return (self.local_folder() / CARD_FILE).is_file()


def known_models() -> List[ModelEntry]:
    """The entries of Resources/Models.json (none when the file is absent)."""
    registry = resources_dir() / "Models.json"
    if not registry.is_file():
        return []
    try:
        data = json.loads(registry.read_text(encoding="utf-8"))
        return [ModelEntry(**entry) for entry in data.get("models", [])]
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{registry} is not a valid model registry ({exc})") from None


def _download(entry: ModelEntry, progress: Optional[ProgressFn]) -> Path:
    """Fetch the entry's zip, check its size and SHA-256, unpack it into the cache atomically."""
    if not entry.url or not entry.sha256:
        raise ModelError(f"model {entry.name} has no download address and SHA-256 in Models.json")
    target = entry.local_folder()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
        archive = Path(scratch) / "bundle.zip"
        digest, done = hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(entry.url, timeout=60) as response, open(archive, "wb") as out:
                total = entry.size or int(response.headers.get("Content-Length") or 0)
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress is not None and total:
                        progress("download", done, total)
        except OSError as exc:
            raise ModelError(f"cannot download model {entry.name} from {entry.url} ({exc}): check the network, "
                             f"or unpack the bundle into {target} by hand") from None
        if digest.hexdigest() != entry.sha256 or (entry.size is not None and done != entry.size):
            raise ModelError(f"the download of model {entry.name} is damaged (SHA-256 or size differ): try again")
        unpacked = Path(scratch) / "bundle"
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise ModelError(f"the archive of model {entry.name} holds an unsafe path {member!r}")
            zipped.extractall(unpacked)
        cards = list(unpacked.rglob(CARD_FILE))
        if len(cards) != 1:
            raise ModelError(f"the archive of model {entry.name} does not hold exactly one {CARD_FILE}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(cards[0].parent, target)
    return target


def resolve_model(spec: Optional[str], progress: Optional[ProgressFn] = None) -> Path:
    """A bundle folder for ``spec``: a folder path, a registry name (downloaded if needed), or
    None for the registry's first model."""
    entries = known_models()
    if spec is None:
        if not entries:
            raise ModelError("no model given and none is installed: pass --model with a bundle folder")
        entry = entries[0]
    elif Path(spec).exists():
        return Path(spec)
    else:
        matches = [e for e in entries if e.name == spec]
        if not matches:
            names = ", ".join(e.name for e in entries) or "none are registered"
            raise ModelError(f"model {spec!r} is neither a bundle folder nor a known model ({names})")
        entry = matches[0]
    if entry.installed():
        return entry.local_folder()
    if entry.path is not None:
        raise ModelError(f"bundled model {entry.name} is missing from {entry.local_folder()}: reinstall MedLSDM")
    return _download(entry, progress)
