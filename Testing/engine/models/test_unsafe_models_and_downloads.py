"""Unsafe models and downloads: registry names that would reach outside the models folder, model
cards with broken values, the environment and the registry file, downloads that are not a zip or are
zip bombs, control characters from a card. Every failure: one line, the exit code of its kind,
nothing outside the models folder touched, nothing half-installed left."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from MedLSDMLib.models.bundle import DIFFUSION_FILE, sha256
from MedLSDMLib.card import CARD_FILE

from conftest import assert_one_line_error, folder_entries, run_cli
from model_registry import Registry, file_sha256


@pytest.fixture
def registry(tmp_path: Path, bundle_dir: Path, generator, monkeypatch: pytest.MonkeyPatch) -> Registry:
    return Registry(tmp_path / "registry", bundle_dir, generator, monkeypatch)


# ---------------------------------------------------------------------------------------------
# 5. Names that would leave the models folder
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("name", "../../../../VICTIM/victim"),
    ("name", "/absolute/victim"),
    ("name", ".."),
    ("version", "1/../../.."),
    ("name", "a name with spaces"),
])
def test_unsafe_registry_names_are_refused(capfd, tmp_path: Path, registry: Registry, field: str,
                                           value: str) -> None:
    victim = tmp_path / "victim-1"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    value = value.replace("VICTIM", str(tmp_path).lstrip("/"))
    registry.entries[1][field] = value
    if field == "name":
        registry.entries[1]["version"] = "1"
    registry.write()
    result = run_cli(capfd, "models", "verify", registry.entries[1]["name"])
    assert_one_line_error(result, 3, "Models.json", "not a plain name")
    assert (victim / "precious.txt").read_text() == "keep me"
    assert folder_entries(victim) == ["precious.txt"]
    assert not registry.cache.exists() or folder_entries(registry.cache) == []


def test_bundled_path_outside_resources_is_refused(capfd, registry: Registry) -> None:
    registry.entries[0]["path"] = "../../elsewhere"
    registry.write()
    result = run_cli(capfd, "models", "list")
    assert_one_line_error(result, 3, "Models.json", "inside Resources")


def test_a_link_in_the_models_folder_is_replaced_not_followed(capfd, tmp_path: Path, registry: Registry) -> None:
    """An incomplete install that is a link to a folder elsewhere: the link goes, the folder stays."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    registry.cache.mkdir(parents=True)
    (registry.cache / "tiny-download-0.2.0").symlink_to(elsewhere)
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert result.code == 0, result.err
    assert folder_entries(elsewhere) == ["precious.txt"]
    assert not (registry.cache / "tiny-download-0.2.0").is_symlink()


# ---------------------------------------------------------------------------------------------
# 11. The environment, the registry file, the download
# ---------------------------------------------------------------------------------------------

def test_medlsdm_home_is_a_file(capfd, tmp_path: Path, registry: Registry, monkeypatch) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("MEDLSDM_HOME", str(home))
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert_one_line_error(result, 2, "MEDLSDM_HOME", "is a file")
    assert home.read_text() == "not a folder"


def test_medlsdm_home_not_writable(capfd, tmp_path: Path, registry: Registry, monkeypatch) -> None:
    home = tmp_path / "locked"
    home.mkdir()
    locked = subprocess.run(["chattr", "+i", str(home)], capture_output=True).returncode == 0
    if not locked:
        home.chmod(0o555)
        if os.access(home, os.W_OK):
            pytest.skip("cannot make a folder unwritable for this user")
    monkeypatch.setenv("MEDLSDM_HOME", str(home))
    try:
        result = run_cli(capfd, "models", "verify", "tiny-download")
        assert_one_line_error(result, 2, "MEDLSDM_HOME", "writable")
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(home)], capture_output=True)
        home.chmod(0o755)


@pytest.mark.parametrize("content, says", [
    ("[]", "must be an object"),
    ('{"models": {"name": "x"}}', "must be an object"),
    ('{"models": ["x"]}', "entry 1 is not an object"),
    ('{"models": [{"name": "x", "version": "1", "size": -5}]}', "size"),
])
def test_malformed_registry(capfd, registry: Registry, content: str, says: str) -> None:
    (registry.resources / "Models.json").write_text(content)
    result = run_cli(capfd, "models", "list")
    assert_one_line_error(result, 3, "Models.json", says)


def serve(registry: Registry, archive: Path) -> None:
    registry.entries[1].update(url=archive.as_uri(), sha256=file_sha256(archive), size=archive.stat().st_size)
    registry.write()


def test_download_that_is_not_a_zip(capfd, registry: Registry) -> None:
    archive = registry.store / "page.zip"
    archive.write_text("<html>this is a login page, not a zip</html>")
    serve(registry, archive)
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert_one_line_error(result, 3, "tiny-download", "not a usable zip", after_progress_bar=True)
    assert folder_entries(registry.cache) == []


def test_zip_bomb_is_bounded_and_cleaned_up(capfd, registry: Registry, bundle_dir: Path) -> None:
    archive = registry.store / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(bundle_dir.iterdir()):
            zipped.write(path, f"tiny/{path.name}")
        with zipped.open("tiny/padding.bin", "w", force_zip64=True) as member:
            for _ in range(64):
                member.write(b"\0" * (1 << 20))  # 64 MiB of zeros, a few KB packed
    assert archive.stat().st_size < 2 << 20
    serve(registry, archive)
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert_one_line_error(result, 3, "tiny-download", "unpacks to more than", after_progress_bar=True)
    assert folder_entries(registry.cache) == []


def test_stale_download_folders_are_cleaned(capfd, registry: Registry) -> None:
    from MedLSDMLib.io import volumes

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = registry.cache / f"{volumes.PARTIAL_PREFIX}{volumes._host()}-{dead.pid}-abc"
    stale.mkdir(parents=True)
    (stale / "bundle.zip").write_bytes(b"half a download")
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert result.code == 0, result.err
    assert folder_entries(registry.cache) == ["tiny-download-0.2.0"]


# ---------------------------------------------------------------------------------------------
# 7. Broken model cards fail `models verify`
# ---------------------------------------------------------------------------------------------

def broken_copy(bundle_dir: Path, target: Path, change) -> Path:
    folder = shutil.copytree(bundle_dir, target)
    card = json.loads((folder / CARD_FILE).read_text())
    change(card)
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


CARDS = {
    "orientation code": (lambda c: c.update(orientation="XYZ"), "orientation"),
    "orientation repeating an axis": (lambda c: c.update(orientation="RRS"), "orientation"),
    "unknown schedule": (lambda c: c["scheduler"].update(schedule="wiggly"), "schedule"),
    "nan spacing": (lambda c: c.update(spacing=[math.nan, 2.0, 2.0]), "spacing"),
    "tiny spacing": (lambda c: c.update(spacing=[1e-9, 2.0, 2.0]), "spacing"),
    "latent_scale 0": (lambda c: c.update(latent_scale=0), "latent_scale"),
    "infinite intensity": (lambda c: c["intensity"].update(high=math.inf), "intensity.high"),
    "nan guidance": (lambda c: c.update(default_guidance=math.nan), "default_guidance"),
    "negative channels": (lambda c: c["autoencoder"].update(num_embeddings=0), "autoencoder"),
    "colour out of range": (lambda c: c["labels"][1].update(color=[5, 0, 0]), "colour"),
}


@pytest.mark.parametrize("name", list(CARDS))
def test_broken_card_fails_verify(capfd, tmp_path: Path, bundle_dir: Path, name: str) -> None:
    change, says = CARDS[name]
    folder = broken_copy(bundle_dir, tmp_path / "broken", change)
    result = run_cli(capfd, "models", "verify", folder)
    assert_one_line_error(result, 3, CARD_FILE, says)
    assert "OK" not in result.out


def test_nan_weights_fail_verify(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    folder = shutil.copytree(bundle_dir, tmp_path / "nan")
    state = load_file(str(folder / DIFFUSION_FILE))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(folder / DIFFUSION_FILE))
    card = json.loads((folder / CARD_FILE).read_text())
    card["weights"][DIFFUSION_FILE] = sha256(folder / DIFFUSION_FILE)  # the hash matches: the values do not
    (folder / CARD_FILE).write_text(json.dumps(card))
    result = run_cli(capfd, "models", "verify", folder)
    assert_one_line_error(result, 3, DIFFUSION_FILE, "NaN or infinite", key)


# ---------------------------------------------------------------------------------------------
# 14. Control characters from a card never reach the terminal
# ---------------------------------------------------------------------------------------------

def test_control_characters_are_stripped_in_models_info(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    folder = broken_copy(bundle_dir, tmp_path / "escape",
                         lambda c: c.update(name="evil\x1b[2J\x1b]0;owned\x07", description="line\rover\x9b31m"))
    result = run_cli(capfd, "models", "info", folder)
    assert result.code == 0, result.err
    assert not any(ch in result.out for ch in "\x1b\x07\r\x9b")
    assert "evil?[2J?]0;owned?" in result.out
    verify = run_cli(capfd, "models", "verify", folder)
    assert verify.code == 0 and "\x1b" not in verify.out
