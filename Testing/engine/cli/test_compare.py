"""``medlsdm compare``: A | B | A − B on three planes through the labels' centre (or a given point), titles
with file names and seeds, and bad inputs as one line with no figure."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.figure import Figure

from MedLSDMLib.io.figures import centre_of

from conftest import ODD_SIZE, assert_no_output, assert_one_line_error, brain_array, brain_labels, image_from_xyz, run_cli, write


@pytest.fixture
def images(tmp_path: Path) -> Dict[str, Path]:
    classes = brain_array(ODD_SIZE)
    a = image_from_xyz(np.choose(classes, [0.0, 40.0, 80.0, 120.0]).astype(np.float32))
    b = image_from_xyz(np.choose(classes, [0.0, 50.0, 75.0, 110.0]).astype(np.float32))
    b.SetMetaData("medlsdm_seed", "7")
    inputs = tmp_path / "in"
    inputs.mkdir()
    return {"a": write(a, inputs / "real.nii.gz"), "b": write(b, inputs / "synthetic_01.nrrd"),
            "labels": write(brain_labels(), inputs / "labels.nii.gz")}


@pytest.fixture
def drawn(monkeypatch) -> List[Figure]:
    """The figures saved during the test, as they were when saved."""
    figures: List[Figure] = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def test_compare_draws_a_b_and_their_difference(capfd, images, tmp_path: Path, drawn: List[Figure]) -> None:
    output = tmp_path / "figure.png"
    result = run_cli(capfd, "compare", images["a"], images["b"], "--labels", images["labels"], "-o", output)
    assert result.code == 0, result.err
    assert output.is_file() and output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure, = drawn
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles == ["A: real.nii.gz", "B: synthetic_01.nrrd (seed 7)", "A − B"]
    point = centre_of(brain_array(ODD_SIZE), ODD_SIZE)
    assert figure._suptitle.get_text() == f"planes through voxel ({', '.join(map(str, point))})"
    panels = figure.axes[:9]  # rows: axial, coronal, sagittal; columns: A, B, A − B (colour bars after)
    axial_a, axial_b, axial_difference = [axis.images[0] for axis in panels[:3]]
    np.testing.assert_allclose(axial_difference.get_array(), np.asarray(axial_a.get_array()) - axial_b.get_array())
    low, high = axial_difference.get_clim()
    assert low == -high and axial_difference.get_cmap().name == "RdBu_r"
    assert axial_a.get_clim() == axial_b.get_clim()  # A and B in one grey window
    assert len(figure.axes) == 9 + 3  # the difference column has a colour bar on each plane
    assert all(axis.collections for axis in panels[:9])  # label outlines on every panel


def test_compare_through_a_given_point(capfd, images, tmp_path: Path, drawn: List[Figure]) -> None:
    output = tmp_path / "figure.pdf"
    result = run_cli(capfd, "compare", images["a"], images["b"], "--point", 3, 4, 5, "-o", output)
    assert result.code == 0, result.err
    assert output.read_bytes()[:4] == b"%PDF"
    assert drawn[0]._suptitle.get_text() == "planes through voxel (3, 4, 5)"


def respaced(path: Path) -> Path:
    image = sitk.ReadImage(str(path))
    image.SetSpacing([2 * s for s in image.GetSpacing()])
    return write(image, path.with_name("respaced.nii.gz"))


@pytest.mark.parametrize("extra, words", [
    (lambda i, o: [i["a"], respaced(i["b"]), "-o", o / "f.png"], ["respaced.nii.gz", "not on the grid"]),
    (lambda i, o: [i["a"], i["b"], "--labels", respaced(i["labels"]), "-o", o / "f.png"], ["not on the grid"]),
    (lambda i, o: [i["a"], i["b"], "--point", 0, 99, 0, "-o", o / "f.png"], ["--point", "outside"]),
    (lambda i, o: [i["a"], i["b"], "-o", o / "f.nii.gz"], [".png"]),
    (lambda i, o: [i["a"], o / "missing.nrrd", "-o", o / "f.png"], ["image B", "does not exist"]),
])
def test_bad_inputs(capfd, images, tmp_path: Path, extra, words) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(capfd, "compare", *extra(images, out))
    assert_one_line_error(result, 2, *words)
    assert_no_output(out, [])
