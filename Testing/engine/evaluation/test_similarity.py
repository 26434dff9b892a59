"""PSNR, SSIM and MS-SSIM against known answers: identical images, known Gaussian noise, MONAI's own
SSIM where both should agree, invariance to the intensity scale, and the windows and scales chosen for
small volumes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric

from MedLSDMLib.evaluation.similarity import (
    foreground_box,
    masked_ssim,
    ms_ssim,
    ms_ssim_scales,
    ms_ssim_weights,
    psnr,
    similarity,
    ssim_window,
)

from conftest import brain_array


def textured(shape=(24, 26, 22), seed=0) -> np.ndarray:
    """A smooth image with tissue-like contrast: the nested ellipsoids plus a low-frequency ripple."""
    classes = brain_array(shape).astype(np.float64)
    x, y, z = np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij")
    return 100.0 + 40.0 * classes + 10.0 * np.sin(x) * np.cos(y + z) + np.random.default_rng(seed).normal(0, 1, shape)


@pytest.fixture(scope="module")
def case():
    real = textured()
    mask = brain_array(real.shape) > 0
    return real, mask


def test_identical_images(case) -> None:
    real, mask = case
    result = similarity(real, real.copy(), mask)
    assert result.psnr == math.inf
    assert result.ssim == pytest.approx(1.0, abs=1e-6)
    assert result.ms_ssim == pytest.approx(1.0, abs=1e-6)
    assert result.ssim_window == 11 and result.ms_ssim_scales == 2


def test_psnr_of_known_gaussian_noise(case) -> None:
    real, mask = case
    noise = np.random.default_rng(1).normal(0.0, 5.0, real.shape)
    value_range = real[mask].max() - real[mask].min()
    by_hand = 10 * math.log10(value_range ** 2 / np.mean(noise[mask] ** 2))
    result = similarity(real, real + noise, mask)
    assert result.data_range == pytest.approx(value_range)
    assert result.psnr == pytest.approx(by_hand, abs=1e-9)
    assert result.psnr == pytest.approx(20 * math.log10(value_range / 5.0), abs=0.1)  # σ = 5
    assert 0 < result.ssim < 1 and 0 < result.ms_ssim < 1


def test_psnr_ignores_the_background(case) -> None:
    real, mask = case
    synthetic = real.copy()
    synthetic[~mask] += 1000.0  # anything outside the label foreground
    assert psnr(real, synthetic, mask, 100.0) == math.inf


def test_metrics_do_not_depend_on_the_intensity_unit(case) -> None:
    """The data range comes from the real image: scaling both images changes nothing (the published code's
    fixed max 1 / missing data range would)."""
    real, mask = case
    synthetic = real + np.random.default_rng(2).normal(0.0, 8.0, real.shape)
    a, b = similarity(real, synthetic, mask), similarity(1000 * real, 1000 * synthetic, mask)
    assert b.psnr == pytest.approx(a.psnr, abs=1e-6)
    assert b.ssim == pytest.approx(a.ssim, abs=1e-5)
    assert b.ms_ssim == pytest.approx(a.ms_ssim, abs=1e-5)


def test_more_noise_lowers_ssim(case) -> None:
    real, mask = case
    rng = np.random.default_rng(3)
    values = [similarity(real, real + rng.normal(0, sigma, real.shape), mask) for sigma in (1, 5, 20)]
    assert values[0].ssim > values[1].ssim > values[2].ssim
    assert values[0].psnr > values[1].psnr > values[2].psnr


def test_masked_ssim_over_the_whole_volume_is_monais_ssim() -> None:
    real = textured((20, 20, 20))
    synthetic = real + np.random.default_rng(4).normal(0, 6, real.shape)
    value_range = float(real.max() - real.min())
    ours, voxels = masked_ssim(real, synthetic, np.ones(real.shape, bool), value_range, 11)
    tensor = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    monai = SSIMMetric(spatial_dims=3, data_range=value_range, win_size=11)(tensor(synthetic), tensor(real))
    assert voxels == 10 ** 3  # the centres of whole windows
    assert ours == pytest.approx(float(monai.item()), abs=1e-5)


def test_masked_ssim_counts_only_foreground_window_centres() -> None:
    real = textured((20, 20, 20))
    synthetic = real + np.random.default_rng(5).normal(0, 6, real.shape)
    mask = np.zeros(real.shape, bool)
    mask[8:12, 8:12, 8:12] = True
    value, voxels = masked_ssim(real, synthetic, mask, float(np.ptp(real[mask])), 11)
    assert voxels == 64 and 0 < value < 1


@pytest.mark.parametrize("side, scales", [(112, 5), (63, 4), (56, 3), (28, 3), (27, 2), (14, 2), (13, 1)])
def test_ms_ssim_scales_fit_the_volume(side: int, scales: int) -> None:
    """The coarsest scale holds a 7-voxel window (side >= 7·2^(scales-1)) and MONAI's own size check passes
    (56 fits 4 scales by the first rule, not by MONAI's side // 9 > 6)."""
    assert ms_ssim_scales((side, side + 5, side + 9)) == scales


@pytest.mark.parametrize("side", [14, 28, 63])
def test_monai_ms_ssim_runs_with_the_chosen_scales(side: int) -> None:
    real = textured((side, side, side))
    scales = ms_ssim_scales(real.shape)
    value = ms_ssim(real, real + np.random.default_rng(6).normal(0, 4, real.shape), float(np.ptp(real)), scales)
    assert 0 < value < 1


def test_ms_ssim_weights_are_the_standard_ones_renormalised() -> None:
    assert sum(ms_ssim_weights(3)) == pytest.approx(1.0)
    assert ms_ssim_weights(5) == pytest.approx((0.0448, 0.2856, 0.3001, 0.2363, 0.1333), rel=1e-3)
    assert ms_ssim_weights(2)[1] / ms_ssim_weights(2)[0] == pytest.approx(0.2856 / 0.0448)


def test_small_volumes_get_smaller_windows_or_none() -> None:
    assert ssim_window((30, 40, 11)) == 11
    assert ssim_window((30, 40, 8)) == 7
    assert ssim_window((30, 2, 9)) is None
    real = textured((12, 12, 12))
    result = similarity(real, real + 1.0, np.ones(real.shape, bool))
    assert result.ssim_window == 11 and result.ms_ssim is None and result.ms_ssim_scales == 0


def test_foreground_box_grows_to_a_minimum_inside_the_volume() -> None:
    mask = np.zeros((30, 30, 30), bool)
    mask[0, 10, 28] = True
    box = foreground_box(mask, margin=2, minimum=7)
    assert [(s.start, s.stop) for s in box] == [(0, 7), (7, 14), (23, 30)]
    mask[0:20, 5:25, 10:12] = True
    assert [(s.start, s.stop) for s in foreground_box(mask, 1)] == [(0, 21), (4, 26), (9, 30)]
