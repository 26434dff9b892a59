"""Option values and small inputs: small maps generate, option values are checked before any work,
each with its own one-line message, and the small cases (evaluate -o where REPORT.json is a folder,
demo -o FILE, demo with a missing model, overlapping segments)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import slicerio
import SimpleITK as sitk

from MedLSDMLib.generation.pipeline import Generator

from conftest import (ODD_SIZE, assert_grid, assert_one_line_error, brain_array, brain_labels, folder_entries,
                      generate_args, read, run_cli, write)


# ---------------------------------------------------------------------------------------------
# 3. Small maps
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("size, spacing", [((6, 6, 6), 1.0), ((8, 8, 8), 2.0), ((16, 16, 16), 2.0), ((3, 40, 5), 2.0)])
def test_small_maps_generate_on_their_grid(capfd, tmp_path: Path, bundle_dir: Path, size, spacing) -> None:
    labels = write(brain_labels(size=size, spacing=(spacing,) * 3), tmp_path / "small.nii.gz")
    output = tmp_path / "s.nii.gz"
    result = run_cli(capfd, *generate_args(labels, output, bundle_dir))
    assert result.code == 0, result.err
    assert_grid(read(output), read(labels), atol=1e-4)


@pytest.mark.slow
@pytest.mark.subprocess
def test_benchmark_of_a_small_size(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    """The tiny model's --size 8 8 8 is the demo model's --size 16 16 16: one latent voxel at the UNet's
    deepest level without padding."""
    result = run_cli(capfd, "benchmark", "--model", bundle_dir, "--size", "8", "8", "8", "--config", "ddim:2:fp32",
                     "--repeats", "1", "--warmup", "0", "-o", tmp_path / "bench", "--device", "cpu")
    assert result.code == 0, result.err
    assert "unexpected" not in result.err


# ---------------------------------------------------------------------------------------------
# 10. Option values, before any work
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def no_model_loading(monkeypatch):
    """Options are checked before the model is loaded (and so before any generation)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(Generator, "load", classmethod(refuse))


@pytest.mark.parametrize("option, value, words", [
    ("--seed", str(2 ** 80), ["--seed 1208925819614629174706176", "from 0 to"]),
    ("--seed", "-5", ["--seed -5", "from 0 to"]),
    ("--max-memory", "nan", ["--max-memory nan", "positive number"]),
    ("--max-memory", "inf", ["--max-memory inf", "positive number"]),
    ("--max-memory", "abc", ["--max-memory abc", "positive number"]),
    ("--max-memory", "-1", ["--max-memory -1", "positive number"]),
    ("--max-memory", "0", ["--max-memory 0", "positive number"]),
    ("--guidance", "inf", ["--guidance inf", "finite"]),
    ("--guidance", "nan", ["--guidance nan", "finite"]),
    ("--samples", "0", ["--samples 0", "at least 1"]),
])
def test_option_values_are_checked_first(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path,
                                         no_model_loading, option: str, value: str, words) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = list(generate_args(labels_path, out / "s.nii.gz", bundle_dir, seed=None))
    result = run_cli(capfd, *args, f"{option}={value}")
    assert_one_line_error(result, 2, *words)
    assert folder_entries(out) == []


def test_seed_at_the_top_of_the_range_works(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    output = tmp_path / "s.nrrd"
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir, seed=2 ** 63 - 1))
    assert result.code == 0, result.err
    assert read(output).GetMetaData("medlsdm_seed") == str(2 ** 63 - 1)


# ---------------------------------------------------------------------------------------------
# 14. Small ones
# ---------------------------------------------------------------------------------------------

def test_evaluate_report_name_whose_json_is_a_folder(capfd, tmp_path: Path) -> None:
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    image = write(sitk.Cast(brain_labels(), sitk.sitkFloat32) * 10.0, tmp_path / "image.nii.gz")
    (tmp_path / "rep.json").mkdir()
    result = run_cli(capfd, "evaluate", "--real", image, "--synthetic", image, "--labels", labels,
                     "-o", tmp_path / "rep")
    assert_one_line_error(result, 2, "rep.json", "is a folder")
    assert not (tmp_path / "rep.md").exists()


def test_demo_output_that_is_a_file(capfd, tmp_path: Path) -> None:
    target = tmp_path / "FILE"
    target.write_text("keep me")
    result = run_cli(capfd, "demo", "-o", target, "--steps", "2", "--device", "cpu")
    assert_one_line_error(result, 2, "FILE", "is a file")
    assert target.read_text() == "keep me"


def test_demo_with_a_missing_model_leaves_no_folder(capfd, tmp_path: Path) -> None:
    result = run_cli(capfd, "demo", "--model", tmp_path / "missing", "-o", tmp_path / "newdemo", "--device", "cpu")
    assert_one_line_error(result, 3, "missing")
    assert not (tmp_path / "newdemo").exists()


@pytest.mark.slow
def test_overlapping_segments_say_which_wins(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    array = brain_array()
    segmentation = slicerio.create_segmentation(ODD_SIZE, np.diag([2.0, 2.0, 2.0, 1.0]))
    slicerio.add_segment(segmentation, array >= 1, {"id": "Segment_1", "name": "csf"})
    slicerio.add_segment(segmentation, array >= 2, {"id": "Segment_2", "name": "white matter"})
    path = tmp_path / "overlap.seg.nrrd"
    slicerio.write_segmentation(str(path), segmentation)
    overlap = int((array >= 2).sum())
    result = run_cli(capfd, *generate_args(path, tmp_path / "s.nii.gz", bundle_dir))
    assert result.code == 0, result.err
    assert (f"segments 'csf' and 'white matter' of overlap.seg.nrrd overlap in {overlap} voxels: the one listed "
            "later in the file, 'white matter', gives their class") in result.err
