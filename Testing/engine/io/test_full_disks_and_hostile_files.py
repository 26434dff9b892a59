"""Reading and writing volumes under hostile conditions: a full disk loses nothing, a tiny file
claiming a huge size is refused before any voxel is read, degenerate geometry is one line with exit 2
or comes out exact, output names and existing outputs, stale partial folders. Every failure: one line
on stderr, no traceback, no output, nothing existing lost."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from MedLSDMLib.io import volumes

from conftest import (ODD_SIZE, assert_grid, assert_one_line_error, brain_array,
                      brain_labels, folder_entries, generate_args, read, run_cli, write)


def hidden(folder: Path) -> List[str]:
    return [n for n in folder_entries(folder) if n.startswith(".")]


# ---------------------------------------------------------------------------------------------
# 1. A write that comes out short must not replace the existing file
# ---------------------------------------------------------------------------------------------

def short_writer(monkeypatch: pytest.MonkeyPatch, keep: float = 0.5) -> None:
    """SimpleITK's WriteImage as on a full disk where it reports success: the file is cut short."""
    real = sitk.WriteImage

    def write_short(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        size = os.path.getsize(path)
        with open(path, "r+b") as stream:
            stream.truncate(int(size * keep))

    monkeypatch.setattr(volumes.sitk, "WriteImage", write_short)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_short_write_keeps_the_old_file(capfd, monkeypatch, tmp_path: Path, labels_path: Path, bundle_dir: Path,
                                        suffix: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    output = folder / f"synthetic{suffix}"
    output.write_bytes(b"an earlier good result")
    short_writer(monkeypatch)
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir, "--progress", "none"))
    assert_one_line_error(result, 2, "could not write", output.name, "kept")
    assert output.read_bytes() == b"an earlier good result"
    assert folder_entries(folder) == [output.name]


@pytest.mark.slow
def test_short_write_of_a_later_sample_stops_and_replaces_nothing(capfd, monkeypatch, tmp_path: Path,
                                                                  labels_path: Path, bundle_dir: Path) -> None:
    """Samples are written (and checked) as they are done, into a hidden folder; the first failed
    write stops the run with one line, and no output of the set replaces an existing file."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "s_01.nii.gz").write_bytes(b"an earlier good result")
    real, calls = sitk.WriteImage, []

    def fail_third(image, path, *args, **kwargs):
        calls.append(path)
        real(image, path, *args, **kwargs)
        if len(calls) == 3:
            with open(path, "r+b") as stream:
                stream.truncate(10)

    monkeypatch.setattr(volumes.sitk, "WriteImage", fail_third)
    result = run_cli(capfd, *generate_args(labels_path, folder / "s.nii.gz", bundle_dir, "--samples", "4",
                                           "--progress", "none"))
    assert_one_line_error(result, 2, "could not write", "s_03.nii.gz")
    assert len(calls) == 3  # it stopped at the failed write
    assert folder_entries(folder) == ["s_01.nii.gz"]
    assert (folder / "s_01.nii.gz").read_bytes() == b"an earlier good result"


@pytest.mark.slow
def test_samples_are_written_as_they_are_done(capfd, monkeypatch, tmp_path: Path, labels_path: Path,
                                              bundle_dir: Path) -> None:
    """Each sample leaves memory once written; none is kept until the end."""
    from MedLSDMLib.generation.pipeline import Generator

    events = []
    real_write = volumes.StagedImages.write
    monkeypatch.setattr(volumes.StagedImages, "write", lambda self, k, image: (events.append(("write", k)),
                                                                               real_write(self, k, image)))
    real_generate = Generator.generate

    def generate(self, *args, **kwargs):
        images = real_generate(self, *args, **kwargs)
        events.append(("returned", len(images)))
        return images

    monkeypatch.setattr(Generator, "generate", generate)
    result = run_cli(capfd, *generate_args(labels_path, tmp_path / "s.nrrd", bundle_dir, "--samples", "3"))
    assert result.code == 0, result.err
    assert events == [("write", 0), ("write", 1), ("write", 2), ("returned", 0)]
    assert [read(tmp_path / f"s_0{k}.nrrd").GetMetaData("medlsdm_seed") for k in (1, 2, 3)] == ["1", "2", "3"]


def test_memory_plan_counts_the_samples_kept(generator, labels_path: Path, monkeypatch) -> None:
    from MedLSDMLib.generation import runner

    needs = []
    real = runner.plan_memory
    monkeypatch.setattr(runner, "plan_memory", lambda *a, **k: needs.append(k["resident"]) or real(*a, **k))
    generator.generate(labels_path, steps=2, seed=1, samples=3)
    generator.generate(labels_path, steps=2, seed=1, samples=3, on_sample=lambda k, image: None)
    voxels = 4 * int(np.prod(brain_labels().GetSize()))
    assert needs[0] - needs[1] == 2 * voxels  # three images kept, against one at a time


def tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_full_tmpfs_keeps_the_old_file(capfd, tmp_path: Path, bundle_dir: Path, suffix: str) -> None:
    """A real full file system (a 160 KB tmpfs, when this user may mount one)."""
    disk = tmp_path / "disk"
    if not tmpfs(disk, "160k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        labels = write(brain_labels(size=(60, 60, 60), spacing=(1.0, 1.0, 1.0)), tmp_path / "labels.nii.gz")
        output = disk / f"synthetic{suffix}"
        output.write_bytes(b"an earlier good result")
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as stream:  # fill it, then leave about 8 KB free
            try:
                while True:
                    stream.write(b"\1" * 4096)
            except OSError:
                pass
            stream.truncate(max(os.path.getsize(filler) - 8192, 0))
        result = run_cli(capfd, *generate_args(labels, output, bundle_dir, "--progress", "none"))
        assert_one_line_error(result, 4, "could not write", "the disk is full", "kept")  # 4: out of memory or disk
        assert output.read_bytes() == b"an earlier good result"
        assert sorted(folder_entries(disk)) == ["filler", output.name]

        result = run_cli(capfd, *generate_args(labels, disk / f"many{suffix}", bundle_dir, "--samples", "5",
                                               "--progress", "none"))
        assert_one_line_error(result, 4, "free some space")  # refused before the work, or at the first full write
        for name in folder_entries(disk):
            if name.startswith("many"):
                assert read(disk / name).GetSize() == (60, 60, 60)  # what is there is complete
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ---------------------------------------------------------------------------------------------
# 2. A tiny file that claims a huge size
# ---------------------------------------------------------------------------------------------

def nifti_claiming(path: Path, size: int) -> Path:
    small = path.with_name("small.nii")
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkUInt8), str(small))
    header = bytearray(small.read_bytes()[:352])
    struct.pack_into("<8h", header, 40, 3, size, size, size, 1, 1, 1, 1)
    path.write_bytes(bytes(header) + b"\0" * 64)
    small.unlink()
    return path


@pytest.mark.parametrize("size", [1200, 1600, 2000])
def test_tiny_file_claiming_a_huge_size(capfd, tmp_path: Path, bundle_dir: Path, size: int) -> None:
    labels = nifti_claiming(tmp_path / "claims.nii", size)
    assert labels.stat().st_size == 416
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(capfd, *generate_args(labels, out / "s.nii.gz", bundle_dir))
    assert_one_line_error(result, 2, "claims.nii", f"{size ** 3} voxels", "416 bytes")
    assert folder_entries(out) == []


def test_declared_size_beyond_the_memory_is_exit_4(capfd, monkeypatch, tmp_path: Path, labels_path: Path,
                                                    bundle_dir: Path) -> None:
    from MedLSDMLib.runtime import resources

    monkeypatch.setattr(resources, "available_ram", lambda: 1000)
    result = run_cli(capfd, *generate_args(labels_path, tmp_path / "s.nii.gz", bundle_dir))
    assert_one_line_error(result, 4, "labels.nii.gz", "needs about", "1000 B")
    assert not (tmp_path / "s.nii.gz").exists()


# ---------------------------------------------------------------------------------------------
# 8. Degenerate geometry
# ---------------------------------------------------------------------------------------------

def nrrd_with(path: Path, directions, origin=(0.0, 0.0, 0.0)) -> Path:
    import nrrd

    header = {"type": "uint8", "dimension": 3, "space": "left-posterior-superior", "encoding": "gzip",
              "space directions": np.array(directions, float), "space origin": np.array(origin, float)}
    nrrd.write(str(path), np.ascontiguousarray(brain_array()), header)
    return path


def seg_with(path: Path, ijk_to_lps: np.ndarray) -> Path:
    import nrrd

    segmentation = slicerio.create_segmentation(ODD_SIZE, np.eye(4))
    slicerio.add_segment(segmentation, brain_array() >= 1, {"id": "Segment_1", "name": "csf"})
    slicerio.write_segmentation(str(path), segmentation)
    data, header = nrrd.read(str(path))  # then the damaged geometry, as a hand-edited header would have
    header["space directions"] = np.asarray(ijk_to_lps, float)[:3, :3].T
    header["space origin"] = np.asarray(ijk_to_lps, float)[:3, 3]
    nrrd.write(str(path), data, header)
    return path


EYE = np.eye(3)
GEOMETRY = {
    "zero spacing": ([[0, 0, 0], [0, 1, 0], [0, 0, 1]], (0, 0, 0), ["spacing"]),
    "singular direction": ([[1, 0, 0], [1, 0, 0], [0, 0, 1]], (0, 0, 0), ["singular"]),
    "nan direction": ([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]], (0, 0, 0), []),
    "huge spacing": ([[1e30, 0, 0], [0, 1, 0], [0, 0, 1]], (0, 0, 0), ["spacing"]),
    "sheared direction": ([[1, 0.5, 0], [0, 1, 0], [0, 0, 1]], (0, 0, 0), ["orthogonal"]),
    "huge origin": (EYE.tolist(), (1e12, 0, 0), ["origin"]),
}


@pytest.mark.parametrize("kind", ["nrrd", "seg.nrrd"])
@pytest.mark.parametrize("case", list(GEOMETRY))
def test_degenerate_geometry_is_one_line(capfd, tmp_path: Path, bundle_dir: Path, case: str, kind: str) -> None:
    directions, origin, words = GEOMETRY[case]
    if kind == "nrrd":
        labels = nrrd_with(tmp_path / "bad.nrrd", directions, origin)
    else:
        matrix = np.eye(4)
        matrix[:3, :3] = np.array(directions, float).T
        matrix[:3, 3] = origin
        labels = seg_with(tmp_path / "bad.seg.nrrd", matrix)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(capfd, *generate_args(labels, out / "s.nii.gz", bundle_dir))
    assert_one_line_error(result, 2, labels.name, *words)
    assert folder_entries(out) == []


def test_degenerate_reference_is_one_line(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    reference = nrrd_with(tmp_path / "ref.nrrd", [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    result = run_cli(capfd, *generate_args(labels_path, tmp_path / "s.nii.gz", bundle_dir,
                                           "--reference", reference))
    assert_one_line_error(result, 2, "ref.nrrd", "orthogonal")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_large_origin_comes_out_exact(capfd, tmp_path: Path, bundle_dir: Path, suffix: str) -> None:
    """An origin far from 0 (but a body's) comes out as it went in, in every format."""
    labels = write(brain_labels(origin=(-9876.5, 4321.25, 777.125)), tmp_path / "far.nrrd")
    output = tmp_path / f"s{suffix}"
    result = run_cli(capfd, *generate_args(labels, output, bundle_dir))
    assert result.code == 0, result.err
    assert_grid(read(output), read(labels), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# 10. Output names and existing outputs
# ---------------------------------------------------------------------------------------------

def test_upper_case_extension(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    output = tmp_path / "OUT.NII.GZ"
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir))
    assert result.code == 0, result.err
    assert_grid(read(output), read(labels_path))
    assert folder_entries(tmp_path) == ["OUT.NII.GZ", "in"]


def test_long_output_name(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    output = tmp_path / ("n" * 245 + ".nii.gz")  # 252 characters: valid
    assert len(output.name) == 252
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir))
    assert result.code == 0, result.err
    assert output.is_file()


def test_too_long_output_name(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    result = run_cli(capfd, *generate_args(labels_path, tmp_path / ("n" * 300 + ".nii.gz"), bundle_dir))
    assert_one_line_error(result, 2, "shorter name")


def test_immutable_existing_output(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    output = tmp_path / "s.nii.gz"
    output.write_bytes(b"protected")
    immutable = subprocess.run(["chattr", "+i", str(output)], capture_output=True).returncode == 0
    if not immutable:
        output.chmod(0o444)
        if os.access(output, os.W_OK):
            pytest.skip("neither chattr +i nor a read-only mode holds for this user")
    try:
        result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir))
        assert_one_line_error(result, 2, "s.nii.gz", "cannot be replaced")
        assert output.read_bytes() == b"protected"
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(output)], capture_output=True)


# ---------------------------------------------------------------------------------------------
# 14. Stale partial folders
# ---------------------------------------------------------------------------------------------

def test_stale_partial_folders_are_cleaned(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{volumes.PARTIAL_PREFIX}{volumes._host()}-{dead.pid}-abc"
    alive = tmp_path / f"{volumes.PARTIAL_PREFIX}{volumes._host()}-{os.getpid()}-xyz"
    legacy = tmp_path / ".s.nii.gz.partial-old"
    young_legacy = tmp_path / ".s.nii.gz.partial-new"
    for folder in (stale, alive, legacy, young_legacy):
        folder.mkdir()
        (folder / "s.nii.gz").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(legacy, (old, old))
    volumes.write_image(brain_labels(), tmp_path / "s.nii.gz")
    assert sorted(hidden(tmp_path)) == sorted([alive.name, young_legacy.name])
    assert read(tmp_path / "s.nii.gz").GetSize() == brain_labels().GetSize()
