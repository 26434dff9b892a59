"""The model registry (Models.json): --model NAME for bundled models and downloads into
MEDLSDM_HOME/models, SHA-256 checked (a file:// URL stands in for the network)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from MedLSDMLib.models.bundle import ModelBundle

from conftest import (assert_one_line_error, folder_entries, generate_args, read, run_cli, run_subprocess)


from model_registry import Registry, file_sha256, zip_folder


@pytest.fixture
def registry(tmp_path: Path, bundle_dir: Path, generator, monkeypatch: pytest.MonkeyPatch) -> Registry:
    return Registry(tmp_path / "registry", bundle_dir, generator, monkeypatch)


@pytest.mark.slow
def test_bundled_model_by_name(capfd, tmp_path: Path, labels_path: Path, registry: Registry) -> None:
    output = tmp_path / "synthetic.nii.gz"
    result = run_cli(capfd, *generate_args(labels_path, output, "tiny-brain"))
    assert result.code == 0, result.err
    assert "model tiny-brain 0.1.0" in result.err
    assert read(output).GetSize() == read(labels_path).GetSize()
    assert not registry.cache.exists()  # nothing downloaded


@pytest.mark.slow
def test_first_registered_model_is_the_default(capfd, tmp_path: Path, labels_path: Path, registry: Registry) -> None:
    result = run_cli(capfd, "generate", labels_path, "-o", tmp_path / "default.nii.gz", "--steps", "2",
                     "--device", "cpu")
    assert result.code == 0, result.err
    assert "model tiny-brain 0.1.0" in result.err


@pytest.mark.slow
def test_download_into_the_cache(capfd, tmp_path: Path, labels_path: Path, registry: Registry) -> None:
    listed = run_cli(capfd, "models", "list")
    assert listed.code == 0
    assert "tiny-brain 0.1.0 (bundled): the bundled test model" in listed.out
    assert "tiny-download 0.2.0 (available for download): a downloadable test model" in listed.out
    assert str(registry.cache) in listed.err

    output = tmp_path / "synthetic.nii.gz"
    result = run_cli(capfd, *generate_args(labels_path, output, "tiny-download"))
    assert result.code == 0, result.err
    assert "model tiny-download 0.2.0" in result.err
    assert output.is_file()
    assert folder_entries(registry.cache) == ["tiny-download-0.2.0"]  # no leftover download folder
    installed = registry.cache / "tiny-download-0.2.0"
    assert ModelBundle.load(installed).card.name == "tiny-download"

    listed = run_cli(capfd, "models", "list")
    assert "tiny-download 0.2.0 (downloaded)" in listed.out
    # installed now: it loads without the server
    registry.archive.unlink()
    verify = run_cli(capfd, "models", "verify", "tiny-download")
    assert verify.code == 0, verify.err
    assert str(installed) in verify.out


def test_wrong_sha256_leaves_nothing(capfd, tmp_path: Path, labels_path: Path, registry: Registry) -> None:
    registry.entries[1]["sha256"] = "0" * 64
    registry.write()
    outputs = tmp_path / "out"
    outputs.mkdir()
    result = run_cli(capfd, *generate_args(labels_path, outputs / "synthetic.nii.gz", "tiny-download"))
    assert_one_line_error(result, 3, "tiny-download", "damaged", after_progress_bar=True)
    assert folder_entries(outputs) == []
    assert not registry.cache.exists() or folder_entries(registry.cache) == []
    listed = run_cli(capfd, "models", "list")
    assert "tiny-download 0.2.0 (available for download)" in listed.out


def test_unreachable_download(capfd, tmp_path: Path, registry: Registry) -> None:
    registry.entries[1]["url"] = (tmp_path / "nowhere.zip").as_uri()
    registry.write()
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert_one_line_error(result, 3, "cannot download", "tiny-download")
    assert not registry.cache.exists() or folder_entries(registry.cache) == []


def test_unsafe_archive_is_refused(capfd, registry: Registry, bundle_dir: Path) -> None:
    archive = zip_folder(bundle_dir, registry.store / "evil.zip", {"../evil.txt": b"escape"})
    registry.entries[1].update(url=archive.as_uri(), sha256=file_sha256(archive), size=archive.stat().st_size)
    registry.write()
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert_one_line_error(result, 3, "unsafe path", after_progress_bar=True)
    assert not (registry.home / "evil.txt").exists() and not (registry.cache / "evil.txt").exists()
    assert folder_entries(registry.cache) == []


def test_unknown_name_lists_the_known_ones(capfd, registry: Registry) -> None:
    result = run_cli(capfd, "models", "info", "tiny-other")
    assert_one_line_error(result, 3, "'tiny-other'", "tiny-brain, tiny-download")


def test_missing_bundled_model(capfd, registry: Registry) -> None:
    shutil.rmtree(registry.resources / "Models" / "tiny-brain")
    result = run_cli(capfd, "models", "verify", "tiny-brain")
    assert_one_line_error(result, 3, "bundled model tiny-brain is missing")


def test_broken_registry_file(capfd, registry: Registry) -> None:
    (registry.resources / "Models.json").write_text('{"models": [{"name": "x", "colour": 1}]}')
    result = run_cli(capfd, "models", "list")
    assert_one_line_error(result, 3, "Models.json", "not a valid model registry")


def test_no_models_registered(capfd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDLSDM_RESOURCES", str(tmp_path))
    listed = run_cli(capfd, "models", "list")
    assert listed.code == 0 and "no models are registered" in listed.out
    result = run_cli(capfd, "models", "verify")
    assert_one_line_error(result, 3, "no model given")


@pytest.mark.subprocess
def test_models_list_end_to_end(registry: Registry) -> None:
    result = run_subprocess("models", "list", env=registry.env())
    assert result.code == 0, result.err
    assert result.out_lines == ["tiny-brain 0.1.0 (bundled): the bundled test model",
                                "tiny-download 0.2.0 (available for download): a downloadable test model"]


def test_local_model_folder_without_downloading(tmp_path: Path, registry: Registry) -> None:
    from MedLSDMLib.errors import ModelError
    from MedLSDMLib.models.registry import local_model_folder

    bundled = registry.resources / "Models" / "tiny-brain"
    assert local_model_folder("tiny-brain") == bundled
    assert local_model_folder(None) == bundled  # the first registered model
    assert local_model_folder(str(tmp_path)) == tmp_path  # a folder is itself
    assert local_model_folder("tiny-download") is None  # registered, not downloaded
    assert not registry.cache.exists()
    with pytest.raises(ModelError, match="tiny-brain, tiny-download"):
        local_model_folder("tiny-other")
    shutil.copytree(bundled, registry.cache / "tiny-download-0.2.0")
    assert local_model_folder("tiny-download") == registry.cache / "tiny-download-0.2.0"
    shutil.rmtree(bundled)
    assert local_model_folder("tiny-brain") is None  # missing: resolve_model says so


def test_model_classes_from_the_card(tmp_path: Path, bundle_dir: Path) -> None:
    from MedLSDMLib.errors import ModelError
    from MedLSDMLib.models.registry import model_classes

    assert model_classes(bundle_dir) == [(0, "background"), (1, "csf"), (2, "grey matter"), (3, "white matter")]
    with pytest.raises(ModelError, match="model.json"):
        model_classes(tmp_path)
    for text in ("{not json", "[1, 2]", '{"name": "x", "labels": [{"value": 0}]}'):
        (tmp_path / "model.json").write_text(text)
        with pytest.raises(ModelError, match="does not describe a model"):
            model_classes(tmp_path)
