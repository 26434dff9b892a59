"""Known models (Resources/Models.json): bundled ones, and downloads into the user cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

from MedLSDMLib.card import CARD_FILE, ModelCard, from_dict
from MedLSDMLib.errors import Cancelled, InputError, ModelError
from MedLSDMLib.runtime import interrupt
from MedLSDMLib.runtime.progress import ProgressFn
from MedLSDMLib.runtime.progress import printable as printable  # re-exported: the card text the CLI prints

DOWNLOAD_SECONDS = 30 * 60  # the whole download's deadline (each read also times out after 60 s)

# A registered name and version become a folder name under the models folder: plain words only
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}")
# what an archive may unpack to, beyond its declared size (safetensors weights hardly compress)
UNPACK_FACTOR, UNPACK_MARGIN = 2, 16 << 20


def resources_dir() -> Path:
    """Resources/ beside the package (source tree and Slicer install) or inside it (wheel)."""
    override = os.environ.get("MEDLSDM_RESOURCES")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]  # MedLSDMLib/
    for candidate in (package.parent / "Resources", package / "Resources"):
        if candidate.is_dir():
            return candidate
    return package.parent / "Resources"


def models_home() -> Path:
    """Where downloaded models go: $MEDLSDM_HOME/models, by default ~/.medlsdm/models."""
    return Path(os.environ.get("MEDLSDM_HOME") or Path.home() / ".medlsdm") / "models"


def usable_models_home() -> Path:
    """The models folder, created if needed, or InputError saying why MEDLSDM_HOME cannot hold it."""
    home = models_home()
    where = f"MEDLSDM_HOME={home.parent}" if os.environ.get("MEDLSDM_HOME") else str(home.parent)
    for folder in (home.parent, home):
        if folder.exists() and not folder.is_dir():
            raise InputError(
                f"{where}: {folder} is a file, not a folder: set MEDLSDM_HOME to a folder "
                "where models may be downloaded"
            )
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{where}: cannot create {home} ({exc.strerror or exc}): set MEDLSDM_HOME to a writable folder"
        ) from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise InputError(f"{where}: {home} is not writable: set MEDLSDM_HOME to a writable folder")
    return home


@dataclass
class ModelEntry:
    name: str
    version: str
    description: str = ""
    path: Optional[str] = None  # bundled: relative to Resources/
    url: Optional[str] = None  # downloadable: a .zip of the bundle folder
    sha256: Optional[str] = None
    size: Optional[int] = None

    def __post_init__(self) -> None:
        for key, value, pattern in (("name", self.name, NAME_PATTERN), ("version", self.version, VERSION_PATTERN)):
            if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
                raise ValueError(
                    f"{key} {str(value)[:80]!r} is not a plain name (letters, digits, '.', '_', '-'; no '..')"
                )
        for key in ("description", "path", "url", "sha256"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"model {self.name}: {key} must be text")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0):
            raise ValueError(f"model {self.name}: size must be a positive number of bytes")
        if self.path is not None and (Path(self.path).is_absolute() or ".." in Path(self.path).parts):
            raise ValueError(f"model {self.name}: path must lie inside Resources/ (no '..', not absolute)")

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
        data: Any = json.loads(registry.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
            raise ValueError('it must be an object {"models": [...]}')
        entries = []
        for index, entry in enumerate(data.get("models", [])):
            if not isinstance(entry, dict):
                raise ValueError(f"entry {index + 1} is not an object")
            entries.append(ModelEntry(**entry))
        return entries
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ModelError(f"{registry} is not a valid model registry ({reason}): fix it or reinstall MedLSDM") from None
    except OSError as exc:
        raise ModelError(f"{registry} cannot be read ({exc.strerror or exc}): reinstall MedLSDM") from None


def _unpack(zipped: zipfile.ZipFile, folder: Path, limit: int, name: str) -> None:
    """Extract every member into ``folder``, counting the bytes really written: an archive that
    unpacks to more than ``limit`` (a zip bomb, whatever its headers say) is refused."""
    written = 0
    for member in zipped.infolist():
        parts = Path(member.filename).parts
        if Path(member.filename).is_absolute() or ".." in parts or not parts or (member.external_attr >> 28) == 0xA:
            raise ModelError(f"the archive of model {name} holds an unsafe path {member.filename!r}")
        target = folder / member.filename
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipped.open(member) as source, open(target, "wb") as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                written += len(block)
                if written > limit:
                    raise ModelError(
                        f"the archive of model {name} unpacks to more than {limit >> 20} MiB, far beyond "
                        "its declared size: it is damaged or malicious; nothing was installed"
                    )
                out.write(block)


def _download(entry: ModelEntry, progress: Optional[ProgressFn]) -> Path:
    """Fetch the entry's zip, check its size and SHA-256, unpack it (bounded) into the cache
    atomically. Nothing outside the models folder is touched; a failure leaves nothing there."""
    from MedLSDMLib.io.volumes import _partial_prefix, clean_stale_partials

    if not entry.url or not entry.sha256:
        raise ModelError(f"model {entry.name} has no download address and SHA-256 in Models.json")
    home = usable_models_home()
    target = entry.local_folder()
    if target.parent.resolve() != home.resolve() or target.name != f"{entry.name}-{entry.version}":
        raise ModelError(f"model {entry.name} {entry.version} would be installed outside {home}: fix Models.json")
    clean_stale_partials(home, ())
    try:
        scratch_folder = tempfile.mkdtemp(dir=home, prefix=_partial_prefix())
    except OSError as exc:
        raise InputError(
            f"cannot write into {home} ({exc.strerror or exc}): set MEDLSDM_HOME to a writable folder"
        ) from None
    interrupt.mark(Path(scratch_folder))  # a stop during the download removes it
    try:
        scratch = Path(scratch_folder)
        archive = scratch / "bundle.zip"
        digest, done = hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(entry.url, timeout=60) as response, open(archive, "wb") as out:
                total = entry.size or int(response.headers.get("Content-Length") or 0)
                began = time.monotonic()
                for block in iter(lambda: response.read(1 << 20), b""):
                    if interrupt.requested():
                        raise Cancelled("cancelled; the download was removed")
                    if time.monotonic() - began > DOWNLOAD_SECONDS:
                        raise ModelError(
                            f"the download of model {entry.name} took longer than "
                            f"{DOWNLOAD_SECONDS // 60} minutes: check the network, or unpack the "
                            f"bundle into {target} by hand"
                        )
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if entry.size is not None and done > entry.size:
                        break
                    if progress is not None and total:
                        progress("download", done, total)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot download model {entry.name} from {entry.url} ({exc}): check the network, "
                f"or unpack the bundle into {target} by hand"
            ) from None
        if digest.hexdigest() != entry.sha256 or (entry.size is not None and done != entry.size):
            raise ModelError(f"the download of model {entry.name} is damaged (SHA-256 or size differ): try again")
        unpacked = scratch / "bundle"
        unpacked.mkdir()
        try:
            with zipfile.ZipFile(archive) as zipped:
                _unpack(zipped, unpacked, UNPACK_FACTOR * done + UNPACK_MARGIN, entry.name)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            raise ModelError(
                f"the download of model {entry.name} is not a usable zip archive ({exc}): "
                "check the url and sha256 in Models.json"
            ) from None
        except OSError as exc:
            raise ModelError(
                f"cannot unpack model {entry.name} into {home} ({exc.strerror or exc}): free some space "
                "or set MEDLSDM_HOME to another folder"
            ) from None
        archive.unlink()
        cards = list(unpacked.rglob(CARD_FILE))
        if len(cards) != 1:
            raise ModelError(f"the archive of model {entry.name} does not hold exactly one {CARD_FILE}")
        if target.is_symlink():
            target.unlink()
        elif target.exists():  # an incomplete earlier install (no model.json), inside the models folder
            shutil.rmtree(target)
        os.replace(cards[0].parent, target)
    finally:
        shutil.rmtree(scratch_folder, ignore_errors=True)
        interrupt.unmark(Path(scratch_folder))
    return target


def _lookup(spec: Optional[str]) -> Union[Path, ModelEntry]:
    """``spec`` as a bundle folder path (it exists) or as its registry entry (a name, or None for the
    first registered model); ModelError when it is neither."""
    entries = known_models()  # first: a registry with unsafe names is refused whatever is asked for
    if spec is not None and Path(spec).exists():
        return Path(spec)
    if spec is None:
        if not entries:
            raise ModelError("no model given and none is installed: pass --model with a bundle folder")
        return entries[0]
    matches = [e for e in entries if e.name == spec]
    if not matches:
        names = ", ".join(e.name for e in entries) or "none are registered"
        raise ModelError(f"model {spec!r} is neither a bundle folder nor a known model ({names})")
    return matches[0]


def local_model_folder(spec: Optional[str]) -> Optional[Path]:
    """The bundle folder of ``spec`` (as ``resolve_model``) when it is on this computer; None when it is
    registered but not downloaded (or a bundled one is missing: ``resolve_model`` says so)."""
    found = _lookup(spec)
    if isinstance(found, Path):
        return found
    return found.local_folder() if found.installed() else None


def model_classes(folder: Union[str, Path]) -> List[Tuple[int, str]]:
    """(value, name) of each class of the bundle in ``folder``, from its model card, without loading
    the networks (torch-free, for the Slicer module)."""
    card_path = Path(folder) / CARD_FILE
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("it must be a JSON object")
        card = from_dict(ModelCard, data)
    except OSError as exc:
        raise ModelError(f"model {folder} has no readable {CARD_FILE} ({exc.strerror or exc})") from None
    except (ValueError, TypeError) as exc:  # JSON and card errors are ValueErrors
        raise ModelError(f"{card_path} does not describe a model this version can load ({exc})") from None
    return [(entry.value, entry.name) for entry in card.labels]


def resolve_model(spec: Optional[str], progress: Optional[ProgressFn] = None) -> Path:
    """A bundle folder for ``spec``: a folder path, a registry name (downloaded if needed), or
    None for the registry's first model."""
    found = _lookup(spec)
    if isinstance(found, Path):
        return found
    if found.installed():
        return found.local_folder()
    if found.path is not None:
        raise ModelError(f"bundled model {found.name} is missing from {found.local_folder()}: reinstall MedLSDM")
    return _download(found, progress)
