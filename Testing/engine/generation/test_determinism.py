"""Determinism: the same inputs and seed give a bit-identical image on the CPU; seeds matter;
--samples K writes K numbered files, sample k being the single run with seed + k - 1."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_grid, brain_labels, folder_entries, generate_args, read, run_cli


def voxels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(read(path))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_same_seed_gives_bit_identical_output(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path,
                                              precision: str) -> None:
    paths = [tmp_path / f"run{k}.nii.gz" for k in range(3)]
    for path, seed in zip(paths, (11, 11, 12)):
        result = run_cli(capfd, *generate_args(labels_path, path, bundle_dir, "--precision", precision, seed=seed))
        assert result.code == 0, result.err
        assert f"(seed {seed})" in result.out
    first, again, other = (voxels(p) for p in paths)
    assert first.dtype == np.float32
    assert np.array_equal(first, again)  # bit-identical, not merely close
    assert not np.allclose(first, other, atol=1e-3)


def test_in_process_generation_is_deterministic(generator) -> None:
    labels = brain_labels()
    a, = generator.generate(labels, steps=3, seed=3, precision="fp32")
    b, = generator.generate(labels, steps=3, seed=3, precision="fp32")
    c, = generator.generate(labels, steps=3, seed=4, precision="fp32")
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert not np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(c))
    assert a.GetMetaData("medlsdm_seed") == "3" and c.GetMetaData("medlsdm_seed") == "4"


def test_label_map_changes_the_image(generator) -> None:
    """The conditioning is used: another label map (same grid and seed) gives another image."""
    labels = brain_labels()
    other = sitk.Cast(labels > 0, sitk.sitkUInt8) * 3  # all foreground becomes white matter
    a, = generator.generate(labels, steps=3, seed=3, precision="fp32")
    b, = generator.generate(other, steps=3, seed=3, precision="fp32")
    assert not np.allclose(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b), atol=1e-3)


@pytest.mark.slow
def test_samples_are_numbered_and_equal_single_runs(capfd, tmp_path: Path, labels_path: Path,
                                                    bundle_dir: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    result = run_cli(capfd, *generate_args(labels_path, many / "synthetic.nii.gz", bundle_dir, "--samples", 3,
                                           seed=5))
    assert result.code == 0, result.err
    names = ["synthetic_01.nii.gz", "synthetic_02.nii.gz", "synthetic_03.nii.gz"]
    assert folder_entries(many) == names
    for k, name in enumerate(names, start=1):
        assert f"wrote {many / name} (seed {5 + k - 1})" in result.out

    samples = [voxels(many / name) for name in names]
    for k, sample in enumerate(samples, start=1):
        single = tmp_path / f"single{k}.nii.gz"
        result = run_cli(capfd, *generate_args(labels_path, single, bundle_dir, seed=5 + k - 1))
        assert result.code == 0, result.err
        assert np.array_equal(sample, voxels(single)), f"sample {k} differs from the run with seed {5 + k - 1}"
        assert_grid(read(many / names[k - 1]), read(labels_path))
    assert not np.array_equal(samples[0], samples[1])
    assert not np.array_equal(samples[1], samples[2])
