"""``--samples K --variability OUTPUT [--mean OUTPUT]`` of generate and edit: the voxelwise standard deviation
(K − 1) and mean of the samples on the output's grid, written with them; 0 outside an edit's grown region."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedLSDMLib.generation.variability import VoxelStats

from conftest import (array_xyz, assert_grid, assert_one_line_error, brain_labels, generate_args, image_from_xyz,
                      run_cli, write)


def test_voxel_stats_are_numpys_mean_and_sample_std() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.normal(10, 3, (5, 6, 7)).astype(np.float32) for _ in range(4)]
    for a in arrays:
        a[0] = 7.25  # every image agrees on this slab
    stats = VoxelStats()
    for a in arrays:
        stats.add(image_from_xyz(a))
    std, mean = array_xyz(stats.std()), array_xyz(stats.mean())
    np.testing.assert_allclose(std, np.std(arrays, axis=0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(mean, np.mean(arrays, axis=0), rtol=1e-6)
    assert np.all(std[0] == 0) and np.all(mean[0] == 7.25)
    assert_grid(stats.std(), image_from_xyz(arrays[0]))


@pytest.mark.slow
def test_generate_writes_the_variability_and_mean_of_its_samples(capfd, bundle_dir: Path, labels_path: Path,
                                                                  tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    output = tmp_path / "synthetic.nii.gz"
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir, "--samples", "3", "--variability",
                                           maps / "std.nrrd", "--mean", maps / "mean.nii.gz", "--progress", "json"))
    assert result.code == 0, result.err
    events = result.events()
    samples = [tmp_path / f"synthetic_0{k}.nii.gz" for k in (1, 2, 3)]
    assert events[-1]["type"] == "done" and events[-1]["paths"] == [str(p) for p in samples]
    assert any(e["type"] == "log" and str(maps / "std.nrrd") in e["message"] for e in events)
    stack = np.stack([array_xyz(sitk.ReadImage(str(p))) for p in samples])
    std, mean = sitk.ReadImage(str(maps / "std.nrrd")), sitk.ReadImage(str(maps / "mean.nii.gz"))
    labels = sitk.ReadImage(str(labels_path))
    assert_grid(std, labels, atol=1e-4)
    assert_grid(mean, labels, atol=1e-4)
    np.testing.assert_allclose(array_xyz(std), np.std(stack, axis=0, ddof=1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(array_xyz(mean), np.mean(stack, axis=0), rtol=1e-5, atol=1e-3)
    assert array_xyz(std).max() > 0
    assert sorted(p.name for p in maps.iterdir()) == ["mean.nii.gz", "std.nrrd"]  # no staging folder left


@pytest.mark.slow
def test_the_variability_of_an_edit_is_zero_outside_its_grown_region(capfd, bundle_dir: Path, tmp_path: Path) -> None:
    labels = brain_labels((25, 27, 21))
    classes = array_xyz(labels)
    real = image_from_xyz(np.choose(classes.astype(np.int64), [0.0, 40.0, 80.0, 120.0]).astype(np.float32),
                          labels.GetSpacing(), labels.GetOrigin(), np.array(labels.GetDirection()).reshape(3, 3))
    region = np.zeros(classes.shape, dtype=np.uint8)
    region[10:15, 11:16, 8:12] = 1
    mask = image_from_xyz(region, labels.GetSpacing(), labels.GetOrigin(),
                          np.array(labels.GetDirection()).reshape(3, 3))
    paths = [write(image, tmp_path / name) for image, name in ((real, "t1.nii.gz"), (labels, "labels.nii.gz"),
                                                                (mask, "region.nii.gz"))]
    result = run_cli(capfd, "edit", *paths[:2], "--region", paths[2], "-o", tmp_path / "edit.nii.gz", "--model",
                     bundle_dir, "--device", "cpu", "--steps", "2", "--seed", "1", "--samples", "2",
                     "--variability", tmp_path / "std.nii.gz", "--progress", "none")
    assert result.code == 0, result.err
    std = array_xyz(sitk.ReadImage(str(tmp_path / "std.nii.gz")))
    outside = ndimage.distance_transform_edt(region == 0, sampling=labels.GetSpacing()) >= 4.0
    assert np.all(std[outside] == 0)
    assert std[region > 0].min() >= 0 and std[region > 0].mean() > 0


def test_variability_needs_two_samples_and_its_own_file(capfd, bundle_dir: Path, labels_path: Path,
                                                        tmp_path: Path) -> None:
    output = tmp_path / "out.nii.gz"
    for extra, words in ((("--variability", tmp_path / "std.nii.gz"), ("--samples 2",)),
                         (("--mean", tmp_path / "mean.nii.gz"), ("--samples 2",)),
                         (("--samples", "2", "--variability", tmp_path / "out_01.nii.gz"), ("different files",)),
                         (("--samples", "2", "--variability", tmp_path / "std.png"), ("std.png", "extension"))):
        result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir, *extra, "--progress", "none"))
        assert_one_line_error(result, 2, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
