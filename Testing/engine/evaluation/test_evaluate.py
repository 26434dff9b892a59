"""``medlsdm evaluate`` end to end: the report for identical images, numbers checked by hand for noisy
ones, 3D-FID with user weights, and every bad input as one line, exit 2 and no report."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.networks.nets import resnet10
from safetensors.torch import save_file

from MedLSDMLib.evaluation.evaluate import case_key

from conftest import (ODD_SIZE, array_xyz, assert_no_output, assert_one_line_error, brain_array, brain_labels,
                      image_from_xyz, run_cli, write)

NOISE = 4.0


def real_image(seed: int) -> sitk.Image:
    classes = brain_array(ODD_SIZE)
    rng = np.random.default_rng(seed)
    return image_from_xyz((np.choose(classes, [0.0, 40.0, 80.0, 120.0]) + rng.normal(0, 3, classes.shape)).astype(np.float32))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """real/, labels/, synthetic/ (real + noise, NRRD with seeds) and identical/ (plain case names)."""
    root = tmp_path_factory.mktemp("evaluate")
    for name in ("real", "labels", "synthetic", "identical"):
        (root / name).mkdir()
    for k in (1, 2):
        real = real_image(k)
        write(real, root / "real" / f"case{k}_image.nii.gz")
        write(brain_labels(), root / "labels" / f"case{k}_label.nii.gz")
        noisy = real + image_from_xyz(np.random.default_rng(10 + k).normal(0, NOISE, ODD_SIZE).astype(np.float32))
        noisy.SetMetaData("medlsdm_seed", str(100 + k))
        write(noisy, root / "synthetic" / f"case{k}_synthetic.nrrd")
        write(real, root / "identical" / f"case{k}.nii.gz")
    return root


def evaluate(capfd, data: Path, out: Path, synthetic: str = "synthetic", *extra: str):
    result = run_cli(capfd, "evaluate", "--real", data / "real", "--synthetic", data / synthetic, "--labels",
                     data / "labels", "-o", out / "report", "--progress", "none", *extra)
    return result


def test_identical_images(capfd, data: Path, tmp_path: Path) -> None:
    result = evaluate(capfd, data, tmp_path, "identical")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "report.json").read_text())
    summary = report["summary"]
    assert summary["psnr"]["mean"] == "inf" and all(c["psnr"] == "inf" for c in report["cases"])
    assert summary["ssim"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert summary["ms_ssim"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert summary["dice"]["ratio_of_means"] == 1.0
    assert all(v == 1.0 for v in summary["dice"]["ratio"].values())
    assert summary["fid"] is None and any("3D-FID and MMD skipped" in n for n in report["notes"])
    markdown = (tmp_path / "report.md").read_text()
    assert "| PSNR (dB) | ∞ |" in markdown and "Dice ratio synthetic / real | 1 |" in markdown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]


def test_noisy_images_match_the_numbers_by_hand(capfd, data: Path, tmp_path: Path) -> None:
    result = evaluate(capfd, data, tmp_path)
    assert result.code == 0, result.err
    assert result.out_lines[-1].startswith(f"wrote {tmp_path / 'report.json'}")
    report = json.loads((tmp_path / "report.json").read_text())
    classes = brain_array(ODD_SIZE)
    mask = classes > 0
    for k, case in zip((1, 2), report["cases"]):
        real = array_xyz(sitk.ReadImage(str(data / "real" / f"case{k}_image.nii.gz"))).astype(np.float64)
        synthetic = array_xyz(sitk.ReadImage(str(data / "synthetic" / f"case{k}_synthetic.nrrd"))).astype(np.float64)
        value_range = real[mask].max() - real[mask].min()
        assert case["name"] == f"case{k}" and case["seed"] == str(100 + k)
        assert case["data_range"] == pytest.approx(value_range)
        assert case["psnr"] == pytest.approx(10 * math.log10(value_range ** 2 / np.mean((synthetic - real)[mask] ** 2)))
        assert case["psnr"] == pytest.approx(20 * math.log10(value_range / NOISE), abs=0.3)
        for value in (1, 2, 3):
            stats = case["intensity"][str(value)]
            assert stats["real"]["mean"] == pytest.approx(real[classes == value].mean())
            assert stats["synthetic"]["std"] == pytest.approx(synthetic[classes == value].std())
        assert 0 < case["ssim"] < 1 and case["ssim_window"] == 11
        assert case["dice"]["mean_real"] > 0.99 and 0.9 < case["dice"]["ratio"] <= 1.01
    assert report["segmenter"]["kind"] == "mixture"


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)
    path = tmp_path_factory.mktemp("weights") / "resnet10.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
def test_fid_and_mmd_with_user_weights(capfd, data: Path, tmp_path: Path, fid_weights: Path) -> None:
    result = evaluate(capfd, data, tmp_path, "synthetic", "--fid-weights", fid_weights)
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["feature_rows"] == 2
    assert math.isfinite(report["summary"]["fid"]) and math.isfinite(report["summary"]["mmd"])
    assert report["fid_network"]["network"] == "resnet10" and len(report["fid_network"]["sha256"]) == 64
    identical = evaluate(capfd, data, tmp_path, "identical", "--fid-weights", fid_weights)
    assert identical.code == 0
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["fid"] == pytest.approx(0.0, abs=1e-6)


def test_case_names() -> None:
    assert case_key(Path("a/case1_image.nii.gz"), "real") == "case1"
    assert case_key(Path("a/case1_label.nii.gz"), "real") is None  # a label map in a shared folder
    assert case_key(Path("a/case1_label.nii.gz"), "labels") == "case1"
    assert case_key(Path("a/case1.nrrd"), "synthetic") == "case1"
    assert case_key(Path("a/notes.txt"), "real") is None


Build = Callable[[Path, Path], List[str]]


def copy_data(data: Path, work: Path) -> Path:
    shutil.copytree(data, work / "data")
    return work / "data"


def folders(change: Callable[[Path], None], *extra: str) -> Build:
    def build(data: Path, work: Path) -> List[str]:
        copy = copy_data(data, work)
        change(copy)
        return ["--real", str(copy / "real"), "--synthetic", str(copy / "synthetic"), "--labels", str(copy / "labels"),
                *extra]
    return build


def respaced(path: Path) -> None:
    image = sitk.ReadImage(str(path))
    image.SetSpacing([s * 1.5 for s in image.GetSpacing()])
    sitk.WriteImage(image, str(path))


def single_files(*extra: str) -> Build:
    def build(data: Path, work: Path) -> List[str]:
        return ["--real", str(data / "real" / "case1_image.nii.gz"), "--synthetic",
                str(data / "synthetic" / "case1_synthetic.nrrd"), "--labels", str(data / "labels" / "case1_label.nii.gz"),
                *extra]
    return build


def empty_labels(copy: Path) -> None:
    write(image_from_xyz(np.zeros(ODD_SIZE, np.uint8)), copy / "labels" / "case2_label.nii.gz")


def float_labels(copy: Path) -> None:
    write(image_from_xyz(brain_array(ODD_SIZE) * 0.5), copy / "labels" / "case2_label.nii.gz")


def constant_real(copy: Path) -> None:
    write(image_from_xyz(np.full(ODD_SIZE, 7.0, np.float32)), copy / "real" / "case1_image.nii.gz")


def nan_synthetic(copy: Path) -> None:
    write(image_from_xyz(np.full(ODD_SIZE, np.nan, np.float32)), copy / "synthetic" / "case2_synthetic.nrrd")


@pytest.mark.parametrize("build, words", [
    (folders(lambda c: respaced(c / "synthetic" / "case2_synthetic.nrrd")), ["case2", "not on the grid", "spacing"]),
    (folders(lambda c: respaced(c / "labels" / "case1_label.nii.gz")), ["case1", "label map", "not on the grid"]),
    (folders(lambda c: (c / "synthetic" / "case2_synthetic.nrrd").unlink()), ["case2", "lack a synthetic"]),
    (folders(lambda c: shutil.copy(c / "synthetic" / "case1_synthetic.nrrd", c / "synthetic" / "case9_synthetic.nrrd")),
     ["case9", "no real image"]),
    (folders(empty_labels), ["case2", "no foreground"]),
    (folders(float_labels), ["case2", "non-integer"]),
    (folders(constant_real), ["case1", "constant"]),
    (folders(nan_synthetic), ["case2", "NaN"]),
    (folders(lambda c: None, "--segmenter", "/no/such/segmenter"), ["segmenter", "segmenter.json"]),
    (folders(lambda c: None, "--fid-weights", "/no/such/weights.pt"), ["--fid-weights", "does not exist"]),
    (single_files("--fid-weights", "/no/such/weights.pt"), ["3D-FID", "at least two volumes"]),
    (lambda d, w: ["--real", str(d / "real"), "--synthetic", str(d / "synthetic" / "case1_synthetic.nrrd"),
                   "--labels", str(d / "labels")], ["three folders", "three files"]),
    (lambda d, w: ["--real", str(w / "missing"), "--synthetic", str(d / "synthetic"), "--labels", str(d / "labels")],
     ["--real", "does not exist"]),
])
def test_bad_inputs(capfd, data: Path, tmp_path: Path, build: Build, words: List[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = build(data, tmp_path)
    result = run_cli(capfd, "evaluate", *args, "-o", out / "report", "--progress", "none")
    code = 3 if "--segmenter" in args else 2
    assert_one_line_error(result, code, *words)
    assert_no_output(out, [])


def test_missing_output_folder(capfd, data: Path, tmp_path: Path) -> None:
    result = run_cli(capfd, "evaluate", "--real", data / "real", "--synthetic", data / "synthetic", "--labels",
                     data / "labels", "-o", tmp_path / "missing" / "report")
    assert_one_line_error(result, 2, "does not exist")
