"""Values beyond what the machine can hold are one clear line, not "unexpected, report it": a mapping
cell over the csv module's field limit or a mapping file of many megabytes (exit 2), more samples than
the output's file system has files and space for (exit 4, before any work), a full disk while a report
is written (exit 4, the earlier report kept), and an output folder removed while a run is going (exit 2,
nothing written)."""
from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from MedLSDMLib.errors import OutOfMemory
from MedLSDMLib.evaluation.report import write_files

from conftest import assert_one_line_error, brain_labels, folder_entries, generate_args, run_cli, write


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return write(brain_labels(), tmp_path / "in" / "labels.nii.gz")


def test_a_cell_over_the_csv_field_limit_is_one_line(capfd, tmp_path: Path, labels: Path, bundle_dir: Path) -> None:
    table = tmp_path / "m.csv"
    table.write_text("1,csf\n2," + "x" * 200_000 + "\n")
    result = run_cli(capfd, *generate_args(labels, tmp_path / "o.nii.gz", bundle_dir, "--map-file", table))
    assert_one_line_error(result, 2, "m.csv line 2", "field limit")


def test_a_mapping_file_of_many_megabytes_is_one_line(capfd, tmp_path: Path, labels: Path, bundle_dir: Path) -> None:
    table = tmp_path / "m.csv"
    table.write_text("1,csf," + "y" * (17 * 2**20))  # one line, no line end
    result = run_cli(capfd, *generate_args(labels, tmp_path / "o.nii.gz", bundle_dir, "--map-file", table))
    assert_one_line_error(result, 2, "m.csv", "16 MiB")


def test_more_samples_than_the_disk_holds_are_refused_at_once(capfd, tmp_path: Path, labels: Path,
                                                            bundle_dir: Path) -> None:
    began = time.monotonic()
    result = run_cli(capfd, *generate_args(labels, tmp_path / "o.nii.gz", bundle_dir, "--samples", "1000000000"))
    assert_one_line_error(result, 4, "--samples 1000000000", "fewer")
    assert time.monotonic() - began < 10
    assert folder_entries(tmp_path) == ["in"]


def test_a_full_disk_while_writing_a_report_is_exit_4_and_keeps_the_old_one(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    report = tmp_path / "report.json"
    report.write_text("the earlier report")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutOfMemory, match="could not write .*report.json .*the disk is full.*kept"):
        write_files({report: "{}", tmp_path / "report.md": "#"})
    monkeypatch.undo()
    assert report.read_text() == "the earlier report"
    assert folder_entries(tmp_path) == ["report.json"]


def test_an_output_folder_removed_during_the_run_is_one_line(capfd, tmp_path: Path, labels: Path,
                                                            bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from MedLSDMLib.generation.variability import SampleWriter

    outputs = tmp_path / "out"
    outputs.mkdir()
    write_sample = SampleWriter.write

    def remove_then_write(self, k, image):
        shutil.rmtree(outputs)
        write_sample(self, k, image)

    monkeypatch.setattr(SampleWriter, "write", remove_then_write)
    result = run_cli(capfd, *generate_args(labels, outputs / "o.nii.gz", bundle_dir, "--progress", "none"))
    assert_one_line_error(result, 2, "was removed", str(outputs))
    assert not outputs.exists()


def test_compare_on_a_full_disk_is_exit_4_and_keeps_the_old_figure(capfd, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    figure = tmp_path / "figure.png"
    figure.write_bytes(b"the earlier figure")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    result = run_cli(capfd, "compare", labels, labels, "-o", figure, "--progress", "none")
    assert_one_line_error(result, 4, "could not write", "the disk is full", "kept")
    assert figure.read_bytes() == b"the earlier figure"
    assert folder_entries(tmp_path) == ["figure.png", "labels.nii.gz"]
