"""Sampling only the labels' box (generation/crop.py): the result inside the labels matches the uncropped
sample of the same seed, it lies exactly on the input's oblique anisotropic grid, and beyond the box the
background is one flat value, the model's background level next to the box."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedLSDMLib.generation import crop

from conftest import MODEL_SPACING, REPO, assert_grid, brain_array, image_from_xyz, rotation

SIZE = (96, 90, 40)  # x, y, z at (1.3, 0.9, 2.5) mm, oblique: 125 x 81 x 100 mm
BRAIN_AT, BRAIN_SIZE = (10, 12, 4), (24, 34, 12)
STEPS = 8  # the demo model's steps in the comparison (the default 20 only makes it slower)


def small_brain_in_a_big_grid() -> sitk.Image:
    """The test brain (nested ellipsoids, about 31 x 31 x 30 mm) near one corner of a large oblique grid."""
    array = np.zeros(SIZE, dtype=np.uint8)
    box = tuple(slice(a, a + s) for a, s in zip(BRAIN_AT, BRAIN_SIZE))
    array[box] = brain_array(BRAIN_SIZE)
    return image_from_xyz(array)


@pytest.fixture(scope="module")
def samples(generator) -> dict:
    """The small brain generated with the crop and without it (the box replaced by the whole grid), seed 3."""
    labels = small_brain_in_a_big_grid()
    logs: list = []
    cropped = generator.generate(labels, steps=4, seed=3, device="cpu", log=logs.append)[0]
    whole_box = crop.foreground_box
    crop.foreground_box = lambda *args: None
    try:
        whole = generator.generate(labels, steps=4, seed=3, device="cpu")[0]
    finally:
        crop.foreground_box = whole_box
    return {"labels": labels, "cropped": cropped, "whole": whole, "log": logs[0]}


def test_only_the_labels_box_is_sampled(samples: dict) -> None:
    assert "sampling the labels box" in samples["log"], samples["log"]


def example_in_a_larger_oblique_grid() -> sitk.Image:
    """The bundled example tissue map on an oblique (10 degrees), anisotropic (1.5, 2, 2.5 mm) grid that reaches
    70 mm beyond the head on one side: a third of the working grid is background far from the labels."""
    labels = sitk.ReadImage(str(REPO / "Resources" / "Examples" / "brain_example_label.nii.gz"))
    grid = sitk.Image([int(180 / 1.5) + 47, int(216 / 2.0), int(180 / 2.5)], sitk.sitkUInt8)
    grid.SetSpacing((1.5, 2.0, 2.5))
    grid.SetDirection((np.array(labels.GetDirection()).reshape(3, 3) @ rotation((0, 0, 1), 10)).flatten().tolist())
    grid.SetOrigin(labels.TransformContinuousIndexToPhysicalPoint((-5.0, 0.0, 0.0)))
    return sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


@pytest.mark.slow
def test_the_crop_matches_the_uncropped_sample_inside_the_brain() -> None:
    """The demo model, seed 1: the labels' box against the whole working grid, inside the brain."""
    from MedLSDMLib.generation.pipeline import Generator

    generator = Generator.load(REPO / "Resources" / "Models" / "brain-t1-demo", device="cpu", precision="fp32")
    labels = example_in_a_larger_oblique_grid()
    logs: list = []
    cropped = generator.generate(labels, steps=STEPS, seed=1, log=logs.append)[0]
    assert "sampling the labels box" in logs[0], logs[0]
    whole_box = crop.foreground_box
    crop.foreground_box = lambda *args: None
    try:
        whole = generator.generate(labels, steps=STEPS, seed=1)[0]
    finally:
        crop.foreground_box = whole_box
    assert_grid(cropped, labels)
    brain = sitk.GetArrayFromImage(labels) > 0
    values, reference = sitk.GetArrayFromImage(cropped), sitk.GetArrayFromImage(whole)
    correlation = np.corrcoef(values[brain], reference[brain])[0, 1]
    assert correlation >= 0.98, correlation


def test_the_crop_lies_exactly_on_the_oblique_anisotropic_grid(samples: dict) -> None:
    assert_grid(samples["cropped"], samples["labels"])
    assert samples["cropped"].GetPixelID() == samples["whole"].GetPixelID()


def test_beyond_the_box_the_background_is_flat(samples: dict, generator) -> None:
    labels = sitk.GetArrayFromImage(samples["labels"]) > 0
    cropped = sitk.GetArrayFromImage(samples["cropped"])
    spacing_zyx = np.array(samples["labels"].GetSpacing())[::-1]
    distance = ndimage.distance_transform_edt(~labels, sampling=spacing_zyx)
    card = generator.card
    factor = card.autoencoder.downsample_factor
    # the box reaches at most CONTEXT latent voxels, plus one step of alignment and one voxel, beyond the labels
    reach = (crop.CONTEXT + card.size_multiple // factor + 1) * factor * max(MODEL_SPACING) * np.sqrt(3)
    beyond = distance > reach
    assert beyond.sum() > 1000
    values = np.unique(cropped[beyond])
    assert len(values) == 1, values[:10]
    near = (distance > 0) & (distance < 4)  # the sampled background next to the labels
    assert abs(values[0] - np.median(cropped[near])) < 0.25 * (card.intensity.high - card.intensity.low)


def test_a_map_that_fills_its_grid_is_not_cut() -> None:
    classes = np.ones((16, 16, 16), dtype=np.int64)
    assert crop.foreground_box(classes, 2, 2, 4) is None
    classes[:] = 0
    classes[2:5, 3:6, 10:12] = 2
    box = crop.foreground_box(classes, 2, 2, 4)
    assert box is not None
    # latent voxels 1-2, 1-2, 5: grown by CONTEXT within the 8-voxel latent grid, ends on even voxels
    expected = [(max(0, (lo - crop.CONTEXT) // 2 * 2), min(8, -(-(hi + crop.CONTEXT) // 2) * 2))
                for lo, hi in ((1, 3), (1, 3), (5, 6))]
    assert [(s.start, s.stop) for s in box] == expected


def test_reconstruct_round_trips_the_labels_box_and_keeps_the_grid(generator) -> None:
    labels = small_brain_in_a_big_grid()
    real = sitk.Cast(labels, sitk.sitkFloat32) * 60.0 + sitk.AdditiveGaussianNoise(sitk.Cast(labels, sitk.sitkFloat32), 5.0)
    real.CopyInformation(labels)
    result = generator.reconstruct(real, labels, device="cpu")
    assert_grid(result, labels)
    brain = sitk.GetArrayFromImage(labels) > 0
    distance = ndimage.distance_transform_edt(~brain, sampling=np.array(labels.GetSpacing())[::-1])
    values = sitk.GetArrayFromImage(result)
    assert (distance > 60).sum() > 1000 and len(np.unique(values[distance > 60])) == 1  # beyond the box: one level
    assert np.isfinite(values).all() and values[brain].std() > 0
