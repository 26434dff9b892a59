"""``medlsdm reconstruct``: the autoencoder round trip on the image's exact grid, in its own units, and its
bad inputs as one line with exit code 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedLSDMLib.io.preprocess import intensity_range

from conftest import (array_xyz, assert_grid, assert_one_line_error, brain_labels,
                      image_from_xyz, rotation, run_cli, write)


def real_t1(labels: sitk.Image) -> sitk.Image:
    classes = array_xyz(labels).astype(np.int64)
    rng = np.random.default_rng(0)
    array = np.choose(classes, [0.0, 40.0, 80.0, 120.0]) + rng.normal(0, 2, classes.shape)
    return image_from_xyz(array.astype(np.float32), labels.GetSpacing(), labels.GetOrigin(),
                          np.array(labels.GetDirection()).reshape(3, 3))


@pytest.fixture
def pair(tmp_path: Path):
    labels = brain_labels()
    oblique = sitk.Image(labels)
    oblique.SetDirection(rotation((1, 2, 3), 20).flatten().tolist())
    return (write(real_t1(oblique), tmp_path / "t1.nrrd"), write(oblique, tmp_path / "labels.nii.gz"))


def test_reconstruct_writes_the_round_trip_on_the_image_grid(capfd, bundle_dir: Path, generator, pair,
                                                           tmp_path: Path) -> None:
    image, labels = pair
    result = run_cli(capfd, "reconstruct", image, labels, "-o", tmp_path / "round.nii.gz", "--model", bundle_dir,
                     "--device", "cpu", "--precision", "fp32", "--progress", "none")
    assert result.code == 0, result.err
    assert result.out_lines[-1] == f"wrote {tmp_path / 'round.nii.gz'}"
    out = sitk.ReadImage(str(tmp_path / "round.nii.gz"))
    real = sitk.ReadImage(str(image))
    assert_grid(out, real, atol=1e-4)
    # the same numbers as the steps done by hand with the library (working grid, training normalisation)
    direct = generator.reconstruct(str(image), str(labels), device="cpu", precision="fp32")
    assert np.allclose(array_xyz(out), array_xyz(direct), atol=1e-3)
    # in the image's units: the output lies within the range the normalisation maps to [-1, 1]
    from MedLSDMLib.io.geometry import resample, working_grid

    card = generator.card
    grid = working_grid(real, card.spacing, card.orientation, card.size_multiple)
    raw = array_xyz(resample(sitk.Cast(real, sitk.sitkFloat32), grid, sitk.sitkLinear,
                             float(sitk.GetArrayViewFromImage(real).min())))
    foreground = array_xyz(resample(sitk.ReadImage(str(labels)), grid, sitk.sitkNearestNeighbor)) > 0
    low, high = intensity_range(raw, foreground, card.intensity)
    values = array_xyz(out)
    assert values.min() >= low - 1e-3 and values.max() <= high + 1e-3


def test_an_identity_autoencoder_gives_back_the_image(generator, pair, monkeypatch) -> None:
    image, labels = pair
    autoencoder = generator.bundle.autoencoder
    monkeypatch.setattr(autoencoder, "encode", lambda x: x)
    monkeypatch.setattr(autoencoder, "quantize", lambda x: (x, torch.zeros(())))
    monkeypatch.setattr(autoencoder, "decode_quantized", lambda x, segmap=None: x)
    from MedLSDMLib.io.geometry import resample, working_grid

    card = generator.card
    out = generator.reconstruct(str(image), str(labels), device="cpu", precision="fp32")
    real = sitk.ReadImage(str(image))
    grid = working_grid(real, card.spacing, card.orientation, card.size_multiple)
    on_grid = resample(sitk.Cast(real, sitk.sitkFloat32), grid, sitk.sitkLinear,
                       float(sitk.GetArrayViewFromImage(real).min()))
    expected = resample(on_grid, real, sitk.sitkLinear, card.intensity.low)  # the tiny model's window holds it all
    assert np.allclose(array_xyz(out), array_xyz(expected), atol=1e-3)


def test_reconstruct_json_progress_speaks_the_worker_protocol(capfd, bundle_dir: Path, pair, tmp_path: Path) -> None:
    image, labels = pair
    result = run_cli(capfd, "reconstruct", image, labels, "-o", tmp_path / "r.nrrd", "--model", bundle_dir,
                     "--device", "cpu", "--progress", "json")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out_lines]
    assert events[-1]["type"] == "done" and events[-1]["path"] == str(tmp_path / "r.nrrd")
    assert any(e["type"] == "progress" and e["stage"] == "decode" for e in events)


def test_reconstruct_bad_inputs_are_one_line_exit_2(capfd, bundle_dir: Path, pair, tmp_path: Path) -> None:
    image, labels = pair
    elsewhere = sitk.Image(sitk.ReadImage(str(labels)))
    elsewhere.SetOrigin((500.0, 500.0, 500.0))
    far = write(elsewhere, tmp_path / "far.nii.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, words in (((tmp_path / "missing.nii.gz", labels), ("missing.nii.gz",)),
                        ((image, far), ("overlap",)),
                        ((image, labels, "--map-file", tmp_path / "none.csv"), ("none.csv",))):
        result = run_cli(capfd, "reconstruct", *args, "-o", tmp_path / "x.nii.gz", "--model", bundle_dir,
                         "--device", "cpu", "--progress", "none")
        assert_one_line_error(result, 2, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
