"""``medlsdm edit`` and ``Generator.edit``: the real image exactly outside the grown region, a change inside that
follows the edited labels, no seam, the same result for the same seed, and every bad input one line."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from MedLSDMLib.generation.edit import CONTEXT, feather, latent_box
from MedLSDMLib.errors import Cancelled, InputError
from MedLSDMLib.sampling.loop import sample_latent

from conftest import (REPO, array_xyz, assert_one_line_error, brain_labels, image_from_xyz,
                      run_cli, write)

SIZE = (29, 31, 23)
MARGIN = 4.0


def real_t1(labels: sitk.Image, dtype: type = np.float32) -> sitk.Image:
    """A noisy 'T1' of the label map on its grid: background 0, CSF 40, grey 80, white 120."""
    classes = array_xyz(labels).astype(np.int64)
    array = np.choose(classes, [0.0, 40.0, 80.0, 120.0]) + np.random.default_rng(0).normal(0, 2, classes.shape)
    return on_grid_of(labels, array.astype(dtype))


def on_grid_of(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    return image_from_xyz(array, image.GetSpacing(), image.GetOrigin(), np.array(image.GetDirection()).reshape(3, 3))


def grown_outside(changed_xyz: np.ndarray, image: sitk.Image, margin: float = MARGIN) -> np.ndarray:
    """Voxels (x, y, z) at least ``margin`` mm from the changed ones: where the output must be the real image."""
    return ndimage.distance_transform_edt(~changed_xyz, sampling=image.GetSpacing()) >= margin


@pytest.fixture(scope="module")
def scan() -> Tuple[sitk.Image, sitk.Image, sitk.Image]:
    """(real image, original labels, edited labels): the edit turns a block of white matter into CSF."""
    labels = brain_labels(SIZE)
    edited = array_xyz(labels).copy()
    edited[12:17, 13:18, 9:14] = 1
    return real_t1(labels), labels, on_grid_of(labels, edited)


@pytest.fixture
def files(scan, tmp_path: Path) -> Tuple[Path, Path, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    real, labels, edited = scan
    return (write(real, folder / "t1.nrrd"), write(labels, folder / "labels.nii.gz"),
            write(edited, folder / "edited.nii.gz"))


def edit(generator, scan, **options) -> sitk.Image:
    real, labels, edited = scan
    options = {"original": labels, "steps": 3, "seed": 1, "device": "cpu", **options}
    return generator.edit(real, edited, **options)[0]


def test_outside_the_grown_region_the_output_is_the_real_image_exactly(generator, scan) -> None:
    real, labels, edited = scan
    out = edit(generator, scan)
    assert out.GetSize() == real.GetSize() and out.GetSpacing() == real.GetSpacing()
    assert out.GetOrigin() == real.GetOrigin() and out.GetDirection() == real.GetDirection()
    assert out.GetPixelID() == real.GetPixelID()
    changed = array_xyz(edited) != array_xyz(labels)
    outside = grown_outside(changed, real)
    values, reference = array_xyz(out), array_xyz(real)
    assert np.array_equal(values[outside], reference[outside])
    assert np.abs(values[changed] - reference[changed]).mean() > 1.0  # regenerated inside
    assert (values[~outside] != reference[~outside]).mean() > 0.5


def test_an_integer_image_keeps_its_type_and_voxels(generator, scan) -> None:
    real, labels, edited = scan
    integer = on_grid_of(real, np.rint(array_xyz(real)).astype(np.int16))
    out = generator.edit(integer, edited, original=labels, steps=2, seed=1, device="cpu")[0]
    assert out.GetPixelID() == sitk.sitkInt16
    outside = grown_outside(array_xyz(edited) != array_xyz(labels), real)
    assert np.array_equal(array_xyz(out)[outside], array_xyz(integer)[outside])


def test_a_region_at_the_edge_of_the_image_is_blended_with_finite_values(generator, scan) -> None:
    real, labels, _ = scan
    corner = np.zeros(SIZE, dtype=np.uint8)
    corner[:4, :5, -3:] = 1
    out = generator.edit(real, labels, region=on_grid_of(real, corner), steps=2, seed=1, device="cpu")[0]
    values = array_xyz(out)
    assert np.all(np.isfinite(values))
    outside = grown_outside(corner > 0, real)
    assert np.array_equal(values[outside], array_xyz(real)[outside]) and not np.array_equal(values, array_xyz(real))


def test_same_seed_same_result_and_the_inside_follows_the_edited_labels(generator, scan) -> None:
    real, labels, edited = scan
    first, again = edit(generator, scan), edit(generator, scan)
    assert np.array_equal(sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(again))
    other_seed = edit(generator, scan, seed=2)
    assert not np.array_equal(sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(other_seed))
    # the same region regenerated from other labels gives another image there
    changed = array_xyz(edited) != array_xyz(labels)
    region = on_grid_of(real, changed.astype(np.uint8))
    other = array_xyz(labels).copy()
    other[changed] = 2
    as_csf = generator.edit(real, edited, region=region, steps=3, seed=1, device="cpu")[0]
    as_grey = generator.edit(real, on_grid_of(real, other), region=region, steps=3, seed=1, device="cpu")[0]
    assert np.abs(array_xyz(as_csf)[changed] - array_xyz(as_grey)[changed]).mean() > 0.1


def test_the_known_latent_is_kept_by_the_sampling_hook(generator) -> None:
    """``after_step`` sees every next timestep down to the clean end (-1), and its result is the latent."""
    from MedLSDMLib.models.conditioning import condition_map
    from MedLSDMLib.sampling.guidance import GuidedUNet

    card = generator.card
    condition = condition_map(torch.ones((1, 16, 16, 16), dtype=torch.long), 4, 4)
    model = GuidedUNet(generator.bundle.unet, condition, 2.0, True)
    seen = []

    def after_step(x: torch.Tensor, t_next: int) -> torch.Tensor:
        seen.append(t_next)
        return torch.full_like(x, 0.5)

    shape = (1, card.autoencoder.latent_channels, 4, 4, 4)
    for sampler in ("ddim", "dpm"):
        seen.clear()
        with torch.no_grad():
            latent = sample_latent(model, card.scheduler, shape, sampler=sampler, steps=4,
                                   generator=torch.Generator().manual_seed(0), after_step=after_step)
        assert seen[-1] == -1 and len(seen) == 4 and seen == sorted(seen, reverse=True)
        assert torch.all(latent == 0.5)


def test_feather_is_one_on_the_region_and_zero_from_the_margin() -> None:
    region = np.zeros((9, 30, 11), dtype=bool)
    region[4, 10:14, 5] = True
    feathered = feather(region, (1.0, 0.5, 2.0), 3.0)  # x, y, z spacing of a z, y, x mask
    weight = np.zeros(region.shape)
    weight[feathered.box] = feathered.weight
    assert np.all(weight[region] == 1)
    assert weight[4, 10 - 6, 5] == 0 and 0 < weight[4, 9, 5] < 1  # 6 voxels of 0.5 mm along y: 3 mm
    assert weight[4, 12, 5 - 3] == 0 and 0 < weight[4, 12, 5 - 2] < 1  # x: 1 mm voxels
    assert weight[4 - 2, 12, 5] == 0 and 0 < weight[4 - 1, 12, 5] < 1  # z: 2 mm voxels
    assert np.all(np.diff(weight[4, :11, 5]) >= 0)


def test_latent_box_keeps_context_and_the_unet_sizes() -> None:
    mask = np.zeros((40, 12, 40), dtype=bool)
    mask[20, 5, 3] = True
    box = latent_box(mask, 4, 8, CONTEXT)
    for axis, (point, size) in enumerate(zip((20, 5, 3), mask.shape)):
        start, stop = box[axis].start, box[axis].stop
        assert start % 4 == 0 and stop % 4 == 0 and stop - start >= 8 and 0 <= start and stop <= size
        assert start <= max(point - CONTEXT, 0) and stop >= min(point + 1 + CONTEXT, size)
    assert box[0].stop - box[0].start < 40  # a small region is not the whole grid


@pytest.mark.slow
def test_seam_of_the_demo_model_stays_within_the_real_gradients() -> None:
    """The README's edit (the example's ventricles grown by 4 mm) with the demo model, on a crop of the example
    around them: on the border of the grown region (one voxel either side) the output's gradient magnitude
    stays within the real image's 99th percentile (its own 99th percentile there is below it, and it has no
    more voxels above it than the real image has there), and the new CSF is dark."""
    import importlib.util

    from MedLSDMLib.generation.pipeline import Generator

    spec = importlib.util.spec_from_file_location("make_edit_figures", REPO / "scripts" / "make_edit_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)  # type: ignore[union-attr]
    example = REPO / "Resources" / "Examples"
    labels = sitk.ReadImage(str(example / "brain_example_label.nii.gz"))
    edited = figures.enlarged_ventricles(labels, 4.0)
    real = sitk.ReadImage(str(example / "brain_example_image.nii.gz"))
    crop = (slice(25, 65), slice(24, 79), slice(26, 66))  # x, y, z: the edit plus 8 voxels
    real, labels, edited = real[crop], labels[crop], edited[crop]
    generator = Generator.load(REPO / "Resources" / "Models" / "brain-t1-demo", device="cpu", precision="fp32")
    out = generator.edit(real, edited, original=labels, steps=10, seed=1)[0]
    values, reference = sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(real)
    region = sitk.GetArrayFromImage(edited) != sitk.GetArrayFromImage(labels)
    assert region.sum() > 1000
    spacing = np.array(real.GetSpacing())[::-1]
    distance = ndimage.distance_transform_edt(~region, sampling=spacing)
    assert np.array_equal(values[distance >= MARGIN], reference[distance >= MARGIN])
    seam = np.abs(distance - MARGIN) <= spacing.max()

    def gradient(volume: np.ndarray) -> np.ndarray:
        return np.sqrt(sum(g ** 2 for g in np.gradient(volume.astype(np.float64), *spacing)))

    bound = np.percentile(gradient(reference), 99)
    on_seam, real_on_seam = gradient(values)[seam], gradient(reference)[seam]
    assert np.percentile(on_seam, 99) <= bound
    assert (on_seam > bound).sum() <= (real_on_seam > bound).sum()
    # CSF-dark where the map now says CSF: darker than the tissue that was there, near the real CSF's level
    classes = sitk.GetArrayFromImage(labels)
    csf, grey = reference[classes == 1].mean(), reference[classes == 2].mean()
    assert values[region].mean() < min(reference[region].mean(), (csf + grey) / 2)


@pytest.mark.slow
def test_edit_on_the_command_line_writes_the_result_with_progress(capfd, bundle_dir: Path, files,
                                                                  tmp_path: Path) -> None:
    real, labels, edited = files
    output = tmp_path / "edited.nrrd"  # NRRD keeps the seed in its metadata
    result = run_cli(capfd, "edit", real, edited, "--original-labels", labels, "-o", output, "--model", bundle_dir,
                     "--device", "cpu", "--steps", "2", "--seed", "3", "--progress", "json")
    assert result.code == 0, result.err
    events = result.events()
    assert events[-1]["type"] == "done" and events[-1]["paths"] == [str(output)] and events[-1]["seeds"] == [3]
    stages = [e["stage"] for e in events if e["type"] == "progress"]
    assert [s for i, s in enumerate(stages) if s not in stages[:i]] == ["encode", "sample", "decode", "write"]
    written = sitk.ReadImage(str(output))
    assert written.GetMetaData("medlsdm_seed") == "3"
    outside = grown_outside(array_xyz(read(edited)) != array_xyz(read(labels)), read(real))
    assert np.array_equal(array_xyz(written)[outside], array_xyz(read(real))[outside])


def read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def test_edit_stops_when_cancelled(generator, scan) -> None:
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        edit(generator, scan, cancel=cancel)


@pytest.fixture
def bad(files, tmp_path: Path):
    """Inputs that cannot be used, each with the words its one-line error names."""
    real, labels, edited = files
    image = read(labels)
    shifted = on_grid_of(image, (array_xyz(image) > 0).astype(np.uint8))
    shifted.SetOrigin((500.0, 500.0, 500.0))
    coarse = sitk.Resample(image, [s // 2 for s in image.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                           image.GetOrigin(), [2 * s for s in image.GetSpacing()], image.GetDirection())
    empty = on_grid_of(image, np.zeros(SIZE, dtype=np.uint8))
    grey = on_grid_of(image, (array_xyz(image) * 2).astype(np.uint8))  # values 0-6: not a mask
    same_class = array_xyz(image).copy()
    same_class[array_xyz(image) == 1] = 7  # label 7 mapped to CSF below: the model classes are unchanged
    folder = tmp_path / "bad"
    folder.mkdir()
    paths = {name: write(img, folder / f"{name}.nii.gz") for name, img in (
        ("shifted", shifted), ("coarse", coarse), ("empty", empty), ("grey", grey),
        ("same_class", on_grid_of(image, same_class)))}
    return paths, [
        (["--region", paths["empty"]], ("empty.nii.gz", "empty")),
        (["--region", paths["shifted"]], ("shifted.nii.gz", "outside the image")),
        (["--region", paths["grey"]], ("grey.nii.gz", "binary")),
        (["--original-labels", paths["coarse"]], ("original label map", "another grid")),
        ([], ("--region", "--original-labels")),
        (["--region", paths["empty"], "--original-labels", labels], ("one of them",)),
        (["--original-labels", labels, "--margin", "0"], ("--margin",)),
        (["--original-labels", labels, "--margin", "nan"], ("--margin",)),
        (["--original-labels", labels, "--samples", "1", "--variability", folder / "std.nii.gz"],
         ("--variability", "--samples 2")),
        (["--original-labels", labels, "--map", "7=csf"], ("same model class", "nothing to regenerate"),
         paths["same_class"]),
    ]


def test_edit_bad_inputs_are_one_line_exit_2_and_write_nothing(capfd, bundle_dir: Path, files, bad,
                                                              tmp_path: Path) -> None:
    real, labels, edited = files
    paths, cases = bad
    before = sorted(p.name for p in tmp_path.iterdir())
    for case in cases:
        args, words = case[0], case[1]
        labels_arg = case[2] if len(case) > 2 else edited
        result = run_cli(capfd, "edit", real, labels_arg, *args, "-o", tmp_path / "out.nii.gz", "--model", bundle_dir,
                         "--device", "cpu", "--steps", "2", "--progress", "none")
        assert_one_line_error(result, 2, *words)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    # the edited map on another grid than the image
    result = run_cli(capfd, "edit", real, paths["coarse"], "--original-labels", labels, "-o", tmp_path / "out.nii.gz",
                     "--model", bundle_dir, "--device", "cpu", "--progress", "none")
    assert_one_line_error(result, 2, "edited label map", "another grid")


def test_an_unknown_label_in_the_edit_is_one_line(generator, scan) -> None:
    real, labels, edited = scan
    unknown = array_xyz(edited).copy()
    unknown[12:14, 13:15, 9:11] = 9
    with pytest.raises(InputError, match="9"):
        generator.edit(real, on_grid_of(real, unknown), original=labels, steps=2, seed=1, device="cpu")
