"""A detached header (.nhdr, .mhd) is checked against its data file(s) before any voxel is read, as an
attached file is against itself: a small header declaring 2000^3 voxels over a 100-byte data file is
refused at once with one line naming the data file (it took 8 GB and 19 s before), compressed data by
an upper bound of what its compression packs, a missing data file is named, and good files still read."""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedLSDMLib.errors import InputError
from MedLSDMLib.io.volumes import read_image

from conftest import assert_one_line_error, generate_args, run_cli

NRRD = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: {n} {n} {n}\nspacings: 1 1 1\nencoding: {encoding}\ndata file: {data}\n"
MHD = ("ObjectType = Image\nNDims = 3\nDimSize = {n} {n} {n}\nElementType = MET_UCHAR\nElementSpacing = 1 1 1\n"
       "CompressedData = {compressed}\nElementDataFile = {data}\n")


def detached(folder: Path, kind: str, n: int, data_bytes: bytes, data_name: str) -> Path:
    (folder / data_name).write_bytes(data_bytes)
    if kind == "nhdr":
        encoding = "gzip" if data_name.endswith(".gz") else "raw"
        text = NRRD.format(n=n, encoding=encoding, data=data_name)
    else:
        text = MHD.format(n=n, compressed="True" if data_name.endswith(".zraw") else "False", data=data_name)
    header = folder / f"scan.{kind}"
    header.write_text(text)
    return header


@pytest.mark.parametrize("kind, data_name, data_bytes", [
    ("nhdr", "scan.raw", bytes(100)),
    ("nhdr", "scan.raw.gz", gzip.compress(bytes(100))),
    ("mhd", "scan.raw", bytes(100)),
    ("mhd", "scan.zraw", gzip.compress(bytes(100))),
], ids=["nhdr-raw", "nhdr-gzip", "mhd-raw", "mhd-zraw"])
def test_declared_size_beyond_the_data_file_is_refused_at_once(capfd, tmp_path: Path, bundle_dir: Path,
                                                               kind: str, data_name: str, data_bytes: bytes) -> None:
    header = detached(tmp_path, kind, 2000, data_bytes, data_name)
    start = time.perf_counter()
    result = run_cli(capfd, *generate_args(header, tmp_path / "o.nii.gz", bundle_dir))
    seconds = time.perf_counter() - start
    assert_one_line_error(result, 2, data_name, "8000000000 voxels", "truncated")
    assert seconds < 3.0, seconds


def test_data_file_one_voxel_short_is_refused(tmp_path: Path) -> None:
    """Uncompressed data is checked exactly: 8^3 bytes declared, 8^3 - 1 there."""
    header = detached(tmp_path, "nhdr", 8, bytes(8 ** 3 - 1), "scan.raw")
    with pytest.raises(InputError, match="scan.raw"):
        read_image(header)


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    header = detached(tmp_path, "mhd", 8, bytes(8 ** 3), "scan.raw")
    (tmp_path / "scan.raw").unlink()
    with pytest.raises(InputError, match="names the data file .*scan.raw, which does not exist"):
        read_image(header)


@pytest.mark.parametrize("name", ["good.nhdr", "good.mhd"])
@pytest.mark.parametrize("compressed", [True, False])
def test_good_detached_files_still_read(tmp_path: Path, name: str, compressed: bool) -> None:
    """The bound refuses nothing real: highly compressible (constant) data included."""
    image = sitk.GetImageFromArray(np.full((40, 30, 20), 7, dtype=np.int16))
    sitk.WriteImage(image, str(tmp_path / name), useCompression=compressed)
    assert sitk.GetArrayViewFromImage(read_image(tmp_path / name)).max() == 7
