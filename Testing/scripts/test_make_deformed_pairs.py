"""The held-out set's pure functions of scripts/make_deformed_pairs.py (no downloads), and the table of
scripts/evaluate_model.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pairs():
    return load("make_deformed_pairs")


def subject(size=(30, 34, 26), spacing=(1.0, 1.0, 1.0)):
    z, y, x = np.mgrid[: size[2], : size[1], : size[0]]
    centre = [(s - 1) / 2 for s in size]
    radius = np.sqrt(((x - centre[0]) / 10) ** 2 + ((y - centre[1]) / 12) ** 2 + ((z - centre[2]) / 9) ** 2)
    label = np.choose(np.digitize(radius, [0.5, 0.8, 1.0]), [3, 2, 1, 0]).astype(np.uint8)
    label_image = sitk.GetImageFromArray(label)
    label_image.SetSpacing(spacing)
    image = sitk.GetImageFromArray(np.choose(label, [0.0, 30.0, 80.0, 110.0]).astype(np.float32))
    image.CopyInformation(label_image)
    return image, label_image


def test_rotation_is_orthonormal_seeded_and_bounded(pairs) -> None:
    r = pairs.rotation_matrix(3, 20.0)
    assert np.allclose(r @ r.T, np.eye(3)) and np.linalg.det(r) == pytest.approx(1.0)
    assert np.array_equal(r, pairs.rotation_matrix(3, 20.0))
    angle = np.degrees(np.arccos((np.trace(r) - 1) / 2))
    assert 10.0 - 1e-6 <= angle <= 20.0 + 1e-6
    assert np.array_equal(pairs.rotation_matrix(3, 0.0), np.eye(3))


def test_oblique_grid_has_the_spacing_the_tilt_and_covers_the_extent(pairs) -> None:
    image, label = subject()
    rotation = pairs.rotation_matrix(5, 20.0)
    grid = pairs.oblique_grid(label, (1.4, 1.6, 2.2), rotation)
    assert grid.GetSpacing() == pytest.approx((1.4, 1.6, 2.2))
    assert np.allclose(np.array(grid.GetDirection()).reshape(3, 3), rotation @ np.array(label.GetDirection()).reshape(3, 3))
    size = np.array(label.GetSize())
    for corner in ([0, 0, 0], size - 1, [0, size[1] - 1, 0]):
        point = label.TransformIndexToPhysicalPoint([int(c) for c in corner])
        index = np.array(grid.TransformPhysicalPointToContinuousIndex(point))
        assert np.all(index >= -0.5) and np.all(index <= np.array(grid.GetSize()) - 0.5)


def test_deformed_pair_is_seeded_on_one_oblique_grid_and_keeps_the_classes(pairs) -> None:
    image, label = subject()
    warped_image, warped_label = pairs.deformed_pair(image, label, 7, 2.0, (1.4, 1.6, 2.2), 20.0)
    assert warped_image.GetSize() == warped_label.GetSize()
    assert np.allclose(warped_image.GetDirection(), warped_label.GetDirection())
    assert not np.allclose(np.array(warped_label.GetDirection()).reshape(3, 3), np.eye(3))
    values = sitk.GetArrayFromImage(warped_label)
    assert set(np.unique(values)) == {0, 1, 2, 3}
    again = pairs.deformed_pair(image, label, 7, 2.0, (1.4, 1.6, 2.2), 20.0)[1]
    assert np.array_equal(values, sitk.GetArrayFromImage(again))
    # the image follows the label map: white matter voxels are bright
    assert sitk.GetArrayFromImage(warped_image)[values == 3].mean() > 100


def test_crop_keeps_the_geometry_and_the_foreground(pairs) -> None:
    image, label = subject(size=(60, 60, 60))
    cropped_image, cropped_label = pairs.crop_to_foreground(image, label, margin_mm=2.0)
    assert cropped_label.GetSize() < label.GetSize()
    assert sitk.GetArrayViewFromImage(cropped_label).astype(bool).sum() == sitk.GetArrayViewFromImage(label).astype(bool).sum()
    point = cropped_label.TransformIndexToPhysicalPoint((0, 0, 0))
    index = label.TransformPhysicalPointToIndex(point)
    assert label.GetPixel(index) == cropped_label.GetPixel((0, 0, 0))
    assert cropped_image.GetOrigin() == cropped_label.GetOrigin()


def test_tissue_map_of_freesurfer_labels(pairs) -> None:
    array = np.zeros((4, 4, 6), dtype=np.int32)
    for k, value in enumerate((3, 2, 4, 16, 511, 0)):
        array[:, :, k] = value
    classes = sitk.GetArrayFromImage(pairs.tissue_map(sitk.GetImageFromArray(array)))
    assert [int(classes[0, 0, k]) for k in range(6)] == [2, 3, 1, 3, 0, 0]


def test_evaluate_model_table() -> None:
    evaluate = load("evaluate_model")
    rows = {"model": {"dice": 0.7, "correlation": 0.6, "histogram_distance": 0.3, "sharpness": 0.8,
                      "background_noise": 0.4}}
    lines = evaluate.table(rows, 0.1)
    assert lines[0].startswith("|  | Dice ratio (mixture) | correlation | histogram distance")
    assert lines[2] == "| model | 0.700 | 0.600 | 0.300 | 0.800 | 0.400 |"
    assert lines[-1] == "| real images | 1 | 1 | 0 | 1 | 0.100 |"


def test_evaluate_model_seed_to_seed(tmp_path: Path) -> None:
    """Two samples' correlation over each map's foreground only (label != 0), and the mean over maps."""
    evaluate = load("evaluate_model")
    rng = np.random.default_rng(0)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    expected = {}
    for name, noise in (("one", 0.1), ("two", 1.0)):
        labels = np.zeros((8, 9, 10), np.uint8)
        labels[2:6, 2:7, 2:8] = 1
        base = rng.normal(size=labels.shape)
        a, b = base + noise * rng.normal(size=labels.shape), base + noise * rng.normal(size=labels.shape)
        b[labels == 0] = -a[labels == 0]  # the background disagrees, and must not count
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / f"{name}_label.nii.gz"))
        for folder, array in ((first, a), (second, b)):
            sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(folder / f"{name}_synthetic.nrrd"))
        expected[name] = np.corrcoef(a[labels == 1], b[labels == 1])[0, 1]
    result = evaluate.seed_to_seed(tmp_path, first, second, ["one", "two"])
    assert result["cases"] == pytest.approx(expected, abs=1e-6)
    assert result["cases"]["one"] > 0.95 > 0.7 > result["cases"]["two"]
    assert result["mean"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
