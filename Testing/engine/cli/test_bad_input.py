"""Every bad input through the command: exit code 2, one line on stderr saying what is wrong, no
traceback, and nothing written (no output, no hidden partial file)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Sequence

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import (CLASS_TABLE, TIMESTEPS, assert_no_output, assert_one_line_error, brain_array, brain_labels,
                      folder_entries, generate_args, image_from_xyz, run_cli, run_subprocess, write)


class Case(NamedTuple):
    build: Callable[[Path, Path, Path], List[str]]  # (input folder, output folder, default labels) -> args
    words: Sequence[str]  # what the error line must say


def out(folder: Path) -> Path:
    return folder / "synthetic.nii.gz"


def labels_file(name: str, image: sitk.Image) -> Callable[[Path, Path, Path], List[str]]:
    def build(inputs: Path, outputs: Path, labels: Path) -> List[str]:
        return [str(write(image, inputs / name)), "-o", str(out(outputs))]
    return build


def text_file(name: str) -> Callable[[Path, Path, Path], List[str]]:
    def build(inputs: Path, outputs: Path, labels: Path) -> List[str]:
        path = inputs / name
        path.write_text("this is not an image\n")
        return [str(path), "-o", str(out(outputs))]
    return build


def options(*extra: str) -> Callable[[Path, Path, Path], List[str]]:
    def build(inputs: Path, outputs: Path, labels: Path) -> List[str]:
        return [str(labels), "-o", str(out(outputs)), *extra]
    return build


def png(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    path = inputs / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(brain_array()[:, :, 8].astype(np.uint8)), str(path))
    return [str(path), "-o", str(out(outputs))]


def four_d(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    path = inputs / "timeseries.nii.gz"
    image = sitk.JoinSeries([sitk.Cast(brain_labels(), sitk.sitkUInt8)] * 3)
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(path))
    return [str(path), "-o", str(out(outputs))]


def float_map() -> sitk.Image:
    array = brain_array().astype(np.float32)
    array[array == 2] = 0.5
    return image_from_xyz(array)


def unknown_values() -> sitk.Image:
    array = brain_array()
    array[array == 3] = 9
    return image_from_xyz(array)


def far_reference(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    reference = brain_labels(origin=(500.0, 500.0, 500.0))
    path = write(reference, inputs / "reference.nii.gz")
    return [str(labels), "-o", str(out(outputs)), "--reference", str(path)]


def missing_folder(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    return [str(labels), "-o", str(outputs / "missing" / "synthetic.nii.gz")]


def output_is_input(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    return [str(labels), "-o", str(labels)]


def output_is_reference(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    path = write(brain_labels(), inputs / "reference.nii.gz")
    return [str(labels), "-o", str(path), "--reference", str(path)]


def output_is_folder(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    folder = inputs / "results.nii.gz"
    folder.mkdir()
    return [str(labels), "-o", str(folder)]


def a_folder(inputs: Path, outputs: Path, labels: Path) -> List[str]:
    folder = inputs / "dicom.nii.gz"
    folder.mkdir()
    return [str(folder), "-o", str(out(outputs))]


CASES: Dict[str, Case] = {
    "missing file": Case(lambda i, o, l: [str(i / "nope.nii.gz"), "-o", str(out(o))],
                         ["nope.nii.gz", "does not exist"]),
    "text named .nii.gz": Case(text_file("text.nii.gz"), ["text.nii.gz", "is not an image"]),
    "not an image": Case(text_file("notes.txt"), ["notes.txt", "is not an image"]),
    "a folder": Case(a_folder, ["dicom.nii.gz", "is not a file"]),
    "2D png": Case(png, ["slice.png", "2D", "3D volume"]),
    "single slice": Case(labels_file("slice.nii.gz", brain_labels(size=(21, 27, 1))),
                         ["slice.nii.gz", "single slice"]),
    "4D": Case(four_d, ["timeseries.nii.gz", "4D"]),
    "vector voxels": Case(labels_file("rgb.nrrd", sitk.Compose([brain_labels()] * 3)), ["rgb.nrrd", "components"]),
    "non-integer": Case(labels_file("float.nii.gz", float_map()), ["float.nii.gz", "non-integer"]),
    "no foreground": Case(labels_file("empty.nii.gz", brain_labels() * 0), ["empty.nii.gz", "no foreground"]),
    "unknown labels": Case(labels_file("other.nii.gz", unknown_values()), ["other.nii.gz", "9", CLASS_TABLE]),
    "reference not overlapping": Case(far_reference, ["reference", "does not overlap"]),
    "missing reference": Case(options("--reference", "/no/such/reference.nii.gz"),
                              ["reference image", "does not exist"]),
    "output folder missing": Case(missing_folder, ["folder", "missing", "does not exist"]),
    "output is the input": Case(output_is_input, ["labels.nii.gz", "also an input"]),
    "output is the reference": Case(output_is_reference, ["reference.nii.gz", "also an input"]),
    "output is a folder": Case(output_is_folder, ["results.nii.gz", "is a folder"]),
    "output format": Case(lambda i, o, l: [str(l), "-o", str(o / "synthetic.png")], ["synthetic.png", "extension"]),
    "steps 0": Case(options("--steps", "0"), ["--steps 0", "at least 1"]),
    "steps negative": Case(options("--steps", "-3"), ["--steps -3", "at least 1"]),
    "steps beyond training": Case(options("--steps", str(TIMESTEPS + 1)), [f"at most {TIMESTEPS}"]),
    "steps with ddpm": Case(options("--sampler", "ddpm", "--steps", "5"), ["ddpm", "runs all"]),
    "negative guidance": Case(options("--guidance", "-1"), ["--guidance -1", "0 or more"]),
    "nan guidance": Case(options("--guidance", "nan"), ["--guidance nan"]),
    "unknown sampler": Case(options("--sampler", "euler"), ["unknown sampler 'euler'", "ddim"]),
    "sampler of another process": Case(options("--sampler", "rflow"), ["rflow", "does not fit"]),
    "unknown device": Case(options("--device", "tpu"), ["unknown device 'tpu'", "cpu"]),
    "cuda without a GPU": Case(options("--device", "cuda"), ["cuda", "no CUDA GPU", "--device cpu"]),
    "cuda:1 without a GPU": Case(options("--device", "cuda:1"), ["cuda:1", "no CUDA GPU"]),
    "unknown precision": Case(options("--precision", "fp8"), ["unknown precision 'fp8'"]),
    "samples 0": Case(options("--samples", "0"), ["--samples 0", "at least 1"]),
    "bad map pair": Case(options("--map", "Tumor"), ["--map 'Tumor'", "NAME=CLASS"]),
    "map to no class": Case(options("--map", "1=tumour"), ["'tumour' is not a class", CLASS_TABLE]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(capfd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bundle_dir: Path, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # "no GPU", also on a machine with one
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    labels = write(brain_labels(), inputs / "labels.nii.gz")
    case = CASES[name]
    args = case.build(inputs, outputs, labels)
    before = {p.name: p.read_bytes() for p in inputs.iterdir() if p.is_file()}

    result = run_cli(capfd, "generate", *args, "--model", bundle_dir, "--seed", "1", *(
        [] if any(a in args for a in ("--steps", "--sampler")) else ["--steps", "2"]))

    assert_one_line_error(result, 2, *case.words)
    assert result.out == ""
    assert_no_output(outputs, [])
    assert {p.name: p.read_bytes() for p in inputs.iterdir() if p.is_file()} == before  # inputs untouched


def test_bad_input_reports_json_error_too(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    result = run_cli(capfd, *generate_args(labels_path, tmp_path / "o.nii.gz", bundle_dir, "--guidance", "-2",
                                           "--progress", "json"))
    assert_one_line_error(result, 2, "guidance")
    assert result.events() == [{"type": "error", "kind": "input", "message": result.err_lines[0][16:]}]


def test_existing_output_is_untouched_by_a_failed_run(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    labels = write(image_from_xyz(brain_array() * 0), folder / "empty.nii.gz")
    output = folder / "synthetic.nii.gz"
    output.write_bytes(b"an earlier result")
    result = run_cli(capfd, *generate_args(labels, output, bundle_dir))
    assert_one_line_error(result, 2, "no foreground")
    assert output.read_bytes() == b"an earlier result"
    assert folder_entries(folder) == ["empty.nii.gz", "synthetic.nii.gz"]


# End to end, in a fresh process: the real exit status and the real stderr (warnings included).

@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("name", ["text named .nii.gz", "unknown labels"])
def test_bad_input_end_to_end(tmp_path: Path, bundle_dir: Path, name: str) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    labels = write(brain_labels(), inputs / "labels.nii.gz")
    case = CASES[name]
    result = run_subprocess("generate", *case.build(inputs, outputs, labels), "--model", bundle_dir,
                            "--device", "cpu", "--steps", "2")
    assert_one_line_error(result, 2, *case.words)
    assert_no_output(outputs, [])


@pytest.mark.parametrize("args, says", [
    (["generate", "labels.nii.gz"], "the following arguments are required: -o/--output"),
    (["generate", "labels.nii.gz", "-o", "o.nii.gz", "--steps", "many"], "--steps: invalid int value: 'many'"),
    (["generate", "labels.nii.gz", "-o", "o.nii.gz", "--progress", "xml"], "--progress: invalid choice: 'xml'"),
])
def test_usage_errors_exit_2(capfd, args: List[str], says: str) -> None:
    """argparse's own errors also exit 2, without a traceback."""
    with pytest.raises(SystemExit) as raised:
        run_cli(capfd, *args)
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert says in err
