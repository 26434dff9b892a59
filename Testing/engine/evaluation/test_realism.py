"""Realism metrics (realism.py) and the training-free baseline renderer (baseline.py): known answers for
each metric, and ``medlsdm evaluate --baseline`` end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from MedLSDMLib.evaluation.baseline import blur_gain, render, render_array
from MedLSDMLib.evaluation.realism import (
    background_noise,
    compare,
    correlation,
    gradient_magnitude,
    histogram_distance,
    realism,
    summarise_realism,
    zscore,
)

from conftest import ODD_SIZE, array_xyz, brain_array, brain_labels, image_from_xyz, run_cli, write


def test_histogram_distance_known_answers() -> None:
    rng = np.random.default_rng(0)
    sample = rng.normal(0, 1, 5000)
    assert histogram_distance(sample, sample) == 0.0
    assert histogram_distance(sample, sample + 0.5) == pytest.approx(0.5, abs=1e-12)  # a shift is its size
    assert histogram_distance(np.array([0.0, 1.0]), np.array([0.0, 3.0])) == pytest.approx(1.0)  # (0 + 2) / 2
    # two Gaussians of sd 1 and 2 with one mean: W1 = (2 - 1) * E|Z| = sqrt(2 / pi)
    wide = np.sort(rng.normal(0, 1, 200000))
    assert histogram_distance(wide, 2 * wide) == pytest.approx(math.sqrt(2 / math.pi), rel=0.01)


def test_zscore_uses_the_foreground_only() -> None:
    image = np.array([[[0.0, 2.0, 4.0, 100.0]]])
    foreground = np.array([[[True, True, True, False]]])
    z = zscore(image, foreground)
    assert z[foreground].mean() == pytest.approx(0.0) and z[foreground].std() == pytest.approx(1.0)
    assert z[0, 0, 3] == pytest.approx((100 - 2) / math.sqrt(8 / 3))


def test_gradient_magnitude_of_a_ramp_is_its_slope_per_mm() -> None:
    x = np.arange(9, dtype=np.float64)[:, None, None] * np.ones((9, 5, 4))
    assert np.allclose(gradient_magnitude(3.0 * x, (0.5, 1.0, 2.0)), 6.0)  # 3 per voxel / 0.5 mm
    diagonal = (np.arange(6)[:, None, None] + 2.0 * np.arange(6)[None, :, None]) * np.ones((6, 6, 3))
    assert np.allclose(gradient_magnitude(diagonal, (1, 1, 1)), math.sqrt(1 + 4))


def test_background_noise_and_correlation_known_answers() -> None:
    foreground = np.zeros((4, 4, 4), dtype=bool)
    foreground[:2] = True
    image = np.zeros((4, 4, 4))
    image[2:] = np.where(np.indices((2, 4, 4)).sum(axis=0) % 2 == 0, -3.0, 3.0)  # ±3 checkerboard
    assert background_noise(image, foreground) == pytest.approx(3.0)
    assert background_noise(image, np.ones_like(foreground)) is None
    a = np.random.default_rng(1).normal(size=(4, 4, 4))
    assert correlation(a, 2 * a + 7, foreground) == pytest.approx(1.0)
    assert correlation(a, -a, foreground) == pytest.approx(-1.0)
    assert correlation(a, np.ones_like(a), foreground) is None


def brain_image(classes: np.ndarray, seed: int, noise: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.choose(classes, [0.0, 40.0, 80.0, 120.0]) + rng.normal(0, noise, classes.shape) * (classes > 0)


def test_realism_of_an_affine_copy_is_perfect_and_of_a_blurred_one_is_blurrier() -> None:
    classes = brain_array(ODD_SIZE)
    real = brain_image(classes, 0)
    same = realism(real, 2.5 * real + 10.0, classes, (1.0, 1.5, 2.0))  # other units, same image
    assert all(d == pytest.approx(0.0, abs=1e-9) for d in same["histogram_distance"].values())
    assert all(r == pytest.approx(1.0) for r in same["sharpness"]["ratio"].values())
    assert same["sharpness"]["foreground_ratio"] == pytest.approx(1.0)
    assert same["correlation"] == pytest.approx(1.0)
    assert same["background_noise"]["synthetic"] == pytest.approx(same["background_noise"]["real"])
    blurred = realism(real, ndimage.gaussian_filter(real, 1.5), classes, (1.0, 1.0, 1.0))
    assert blurred["sharpness"]["foreground_ratio"] < 0.85
    assert all(r < 1 for r in blurred["sharpness"]["ratio"].values())
    assert blurred["histogram_distance_mean"] > 0.05


def test_realism_sees_swapped_contrast_and_background_noise() -> None:
    classes = brain_array(ODD_SIZE)
    real = brain_image(classes, 0)
    swapped = np.choose(classes, [0.0, 120.0, 80.0, 40.0]) + (real - np.choose(classes, [0.0, 40.0, 80.0, 120.0]))
    result = realism(real, swapped, classes, (1, 1, 1))
    assert min(result["histogram_distance"][1], result["histogram_distance"][3]) > 1.0
    assert result["correlation"] < 0
    noisy = real + np.random.default_rng(5).normal(0, 20, real.shape) * (classes == 0)
    assert realism(real, noisy, classes, (1, 1, 1))["background_noise"]["synthetic"] > 0.3
    assert realism(real, noisy, classes, (1, 1, 1))["background_noise"]["real"] == pytest.approx(0.0)


def test_blur_gain_is_the_noise_sd_after_the_blur() -> None:
    assert blur_gain([0.0, 0.0, 0.0]) == 1.0
    noise = np.random.default_rng(2).standard_normal((80, 80, 80))
    blurred = ndimage.gaussian_filter(noise, 0.5, mode="nearest")
    assert blurred[5:-5, 5:-5, 5:-5].std() == pytest.approx(blur_gain([0.5] * 3), rel=0.02)


def test_baseline_has_the_real_class_statistics_inside_each_class() -> None:
    classes = np.zeros((60, 60, 60), dtype=np.int64)
    classes[5:30] = 1
    classes[30:55] = 2
    real = np.choose(classes, [0.0, 50.0, 100.0]) + np.random.default_rng(3).normal(0, 1, classes.shape) \
        * np.choose(classes, [0.0, 4.0, 9.0])
    rendered = render_array(real, classes, seed=0)
    interior = {1: rendered[8:27], 2: rendered[33:52]}
    for value, block in interior.items():
        assert block.mean() == pytest.approx(real[classes == value].mean(), abs=0.3)
        assert block.std() == pytest.approx(real[classes == value].std(), rel=0.05)
    assert np.all(rendered[:3] == 0.0)  # a black background stays black
    assert np.array_equal(rendered, render_array(real, classes, seed=0))
    assert not np.array_equal(rendered, render_array(real, classes, seed=1))


def test_render_keeps_the_real_image_grid() -> None:
    labels = brain_labels()
    real = image_from_xyz(brain_image(array_xyz(labels).astype(np.int64), 0).astype(np.float32))
    image = render(real, labels, seed=4)
    assert image.GetSize() == real.GetSize() and image.GetSpacing() == real.GetSpacing()
    assert image.GetDirection() == real.GetDirection() and image.GetOrigin() == real.GetOrigin()
    assert image.GetMetaData("medlsdm_seed") == "4"


def summary(distance: float, sharpness: float, noise: float, r: float = 0.5) -> dict:
    return {"histogram_distance": {1: distance}, "histogram_distance_mean": distance, "sharpness_ratio": {1: sharpness},
            "sharpness_ratio_foreground": sharpness, "background_noise_real": 0.0,
            "background_noise_synthetic": noise, "correlation": r}


def test_compare_counts_only_the_realism_metrics() -> None:
    better = compare(summary(0.1, 0.9, 0.0, r=0.2), summary(0.3, 1.3, 0.5, r=0.9), 0.7, 1.1)
    assert [r["better"] for r in better["rows"]] == ["model", "model", "model", "baseline", "baseline"]
    assert better["model_wins"] == 3 and better["counted"] == 3
    assert better["verdict"] == "the model beats the training-free baseline: more realistic on 3 of 3 realism metrics"
    worse = compare(summary(0.4, 0.5, 0.8), summary(0.3, 0.95, 0.0))
    assert worse["baseline_wins"] == 3 and "does NOT beat" in worse["verdict"]
    # sharpness is judged on a log scale: half as sharp is as far from 1 as twice as sharp
    tie = compare(summary(0.3, 0.5, 0.1), summary(0.3, 2.0, 0.1))
    assert [r["better"] for r in tie["rows"][:3]] == ["tie", "tie", "tie"]


def test_summarise_realism_means_over_cases_per_class() -> None:
    classes = brain_array(ODD_SIZE)
    a = realism(brain_image(classes, 0), brain_image(classes, 1), classes, (1, 1, 1))
    b = realism(brain_image(classes, 0), brain_image(classes, 2, noise=6.0), classes, (1, 1, 1))
    s = summarise_realism([a, b])
    assert s["histogram_distance"][1] == pytest.approx((a["histogram_distance"][1] + b["histogram_distance"][1]) / 2)
    assert s["sharpness_ratio_foreground"] == pytest.approx(
        (a["sharpness"]["foreground_ratio"] + b["sharpness"]["foreground_ratio"]) / 2)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("realism")
    for name in ("real", "labels", "synthetic"):
        (root / name).mkdir()
    labels = brain_labels()
    classes = array_xyz(labels).astype(np.int64)
    for k in (1, 2):
        real = brain_image(classes, k)
        write(image_from_xyz(real.astype(np.float32)), root / "real" / f"case{k}.nii.gz")
        write(labels, root / "labels" / f"case{k}.nii.gz")
        write(image_from_xyz(real.astype(np.float32) * 2.0), root / "synthetic" / f"case{k}.nii.gz")
    return root


@pytest.mark.slow
def test_evaluate_with_baseline_reports_realism_and_the_verdict(capfd, cases: Path, tmp_path: Path) -> None:
    result = run_cli(capfd, "evaluate", "--real", cases / "real", "--synthetic", cases / "synthetic", "--labels",
                     cases / "labels", "-o", tmp_path / "report", "--progress", "none", "--baseline")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "report.json").read_text())
    realism_summary = report["summary"]["realism"]
    assert realism_summary["histogram_distance_mean"] == pytest.approx(0.0, abs=1e-9)
    assert realism_summary["sharpness_ratio_foreground"] == pytest.approx(1.0)
    assert report["baseline"]["summary"]["realism"]["histogram_distance_mean"] > 0.01
    assert report["comparison"]["verdict"].startswith("the model beats the training-free baseline")
    assert all("realism" in c for c in report["cases"])
    assert any(line.startswith("synthetic: Dice ratio 1.000") for line in result.out_lines)
    assert any(line.startswith("baseline: Dice ratio") for line in result.out_lines)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Realism" in markdown and "training-free baseline" in markdown and "histogram distance" in markdown


def test_evaluate_without_baseline_has_no_comparison(capfd, cases: Path, tmp_path: Path) -> None:
    result = run_cli(capfd, "evaluate", "--real", cases / "real", "--synthetic", cases / "synthetic", "--labels",
                     cases / "labels", "-o", tmp_path / "report", "--progress", "none")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "report.json").read_text())
    assert "baseline" not in report and "comparison" not in report
    assert "histogram_distance" in report["methods"] and "sharpness" in report["methods"]


def test_benchmark_agreement_and_table_show_realism_next_to_the_reference() -> None:
    from MedLSDMLib.generation.benchmark import agreement
    from MedLSDMLib.generation.benchmark_report import rows_table

    classes = brain_array(ODD_SIZE)
    reference = brain_image(classes, 0)
    same = agreement(reference * 3.0, reference, classes > 0)
    assert same["histogram_distance"] == pytest.approx(0.0, abs=1e-9) and same["sharpness_ratio"] == pytest.approx(1.0)
    blurred = agreement(ndimage.gaussian_filter(reference, 1.5), reference, classes > 0)
    assert blurred["sharpness_ratio"] < 0.9 and blurred["histogram_distance"] > 0
    row = {"configuration": "ddim 50 bf16", "sampler": "ddim", "steps": 50, "precision": "bf16", "unet_evaluations": 50,
           "median_seconds": 1.0, "times": [1.0], "peak_bytes": 2 ** 20, "speedup": 2.0, **blurred}
    header, _, line = rows_table({"rows": [row]})
    assert "histogram distance to reference" in header and "sharpness / reference" in header
    assert f"{blurred['sharpness_ratio']:.4g}" in line


def test_background_to_contrast_and_contrast_order() -> None:
    from MedLSDMLib.evaluation.realism import realism, summarise_realism

    classes = np.zeros((20, 20, 20), np.int16)
    classes[4:16, 4:16, 4:16] = 1
    classes[7:13, 7:13, 7:13] = 3
    real = np.choose(classes, [0.0, 10.0, 0.0, 30.0]).astype(np.float32)
    noisy = real + np.where(classes == 0, np.random.default_rng(0).normal(0, 2.0, real.shape), 0.0)
    flipped = np.choose(classes, [0.0, 30.0, 0.0, 10.0]).astype(np.float32)
    case = realism(real, noisy, classes, (1.0, 1.0, 1.0))
    # background sd 2 over a class-mean spread of 20, in the same z units
    assert case["background_to_contrast"]["synthetic"] == pytest.approx(0.1, rel=0.05)
    assert case["background_to_contrast"]["real"] == pytest.approx(0.0, abs=1e-9)
    assert case["contrast_order"] is True
    assert realism(real, flipped, classes, (1.0, 1.0, 1.0))["contrast_order"] is False
    summary = summarise_realism([case, realism(real, flipped, classes, (1.0, 1.0, 1.0))])
    assert summary["contrast_order_right"] == 1 and summary["cases"] == 2
