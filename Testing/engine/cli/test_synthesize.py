"""``medlsdm synthesize``: K pairs per map into one folder with manifest.csv; shards (``--shard``, torchrun)
make exactly the set one process makes; a rerun resumes after SIGTERM or kill -9; a failing map is one summary
line and the others go on; ``--deform``, ``--renderer`` and the nnU-Net layout; bad options are one line."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import (REPO, array_xyz, assert_grid, assert_one_line_error, brain_labels, read, run_cli,
                      subprocess_env, write)

STEPS = ("--steps", "2", "--device", "cpu")


@pytest.fixture
def maps(tmp_path: Path) -> Path:
    """Three label maps on oblique anisotropic grids of different sizes."""
    folder = tmp_path / "maps"
    folder.mkdir()
    for name, size in (("alpha", (21, 27, 17)), ("beta", (19, 23, 15)), ("gamma", (23, 21, 19))):
        write(brain_labels(size=size), folder / f"{name}.nii.gz")
    return folder


def synthesize(capfd, maps: Path, output: Path, model: Path, *extra: Any):
    return run_cli(capfd, "synthesize", maps, "-o", output, "--model", model, *STEPS, *extra)


def manifest(folder: Path) -> List[Dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def without_timing(rows: List[Dict[str, str]]) -> List[Dict[str, str]]:
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in rows), key=lambda r: r["name"])


def files(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.nii.gz"))}


@pytest.mark.slow
def test_every_map_gets_k_pairs_on_its_grid_with_a_manifest(capfd, maps: Path, tmp_path: Path, bundle_dir: Path):
    out = tmp_path / "set"
    result = synthesize(capfd, maps, out, bundle_dir, "--samples", "2", "--deform", "3", "--seed", "5")
    assert result.code == 0, result.err
    rows = manifest(out)
    assert [r["name"] for r in rows] == [f"{m}_s0{k}" for m in ("alpha", "beta", "gamma") for k in (1, 2)]
    assert [int(r["noise_seed"]) for r in rows] == list(range(5, 11))
    assert all(r["deform_seed"] == r["noise_seed"] and r["deform_mm"] == "3" for r in rows)
    assert {r["generator"] for r in rows} == {"tiny-brain 1.0.0"} or len({r["generator"] for r in rows}) == 1
    assert {(r["sampler"], r["steps"], r["guidance"]) for r in rows} == {("dpm", "2", "2")}
    for row in rows:
        image, label = read(out / row["image"]), read(out / row["label"])
        source = read(maps / f"{row['name'].rsplit('_s', 1)[0]}.nii.gz")
        assert_grid(image, source, atol=1e-4)
        assert_grid(label, source, atol=1e-4)
        assert set(np.unique(array_xyz(label))) <= {0, 1, 2, 3}
    assert "6 made, 0 already done, 0 failed of 6 pairs" in result.err
    # the K samples of one map are K anatomies: their labels differ, and each is the map deformed
    first, second = (array_xyz(read(out / f"alpha_s0{k}_label.nii.gz")) for k in (1, 2))
    assert not np.array_equal(first, second)
    original = array_xyz(read(maps / "alpha.nii.gz"))
    assert 0.0 < (first != original).mean() < 0.3


@pytest.mark.slow
def test_the_written_label_is_the_deformed_map_the_image_was_made_from(capfd, maps: Path, tmp_path: Path,
                                                                         bundle_dir: Path):
    from MedLSDMLib.io.deform import deform_labels

    out = tmp_path / "set"
    assert synthesize(capfd, maps / "beta.nii.gz", out, bundle_dir, "--deform", "4", "--seed", "7").code == 0
    expected = deform_labels(read(maps / "beta.nii.gz"), 4.0, seed=7)
    assert np.array_equal(array_xyz(read(out / "beta_s01_label.nii.gz")), array_xyz(expected))
    # and the image is what generate makes from that label with that seed (up to the rounding of the grid that
    # NIfTI's 32-bit header brings to the deformed map written for generate)
    write(expected, tmp_path / "deformed.nii.gz")
    single = run_cli(capfd, "generate", tmp_path / "deformed.nii.gz", "-o", tmp_path / "single.nii.gz", "--model",
                     bundle_dir, *STEPS, "--seed", "7")
    assert single.code == 0, single.err
    np.testing.assert_allclose(array_xyz(read(out / "beta_s01_image.nii.gz")),
                               array_xyz(read(tmp_path / "single.nii.gz")), rtol=0, atol=1e-3)


@pytest.mark.slow
def test_shards_into_one_folder_make_exactly_the_set_of_one_process(capfd, maps: Path, tmp_path: Path,
                                                                     bundle_dir: Path):
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    options = ("--samples", "2", "--deform", "2", "--seed", "3")
    assert synthesize(capfd, maps, one, bundle_dir, *options).code == 0
    for shard in ("1/3", "0/3", "2/3"):
        result = synthesize(capfd, maps, sharded, bundle_dir, *options, "--shard", shard)
        assert result.code == 0, result.err
        assert f"shard {shard}: 2 pairs" in result.err
    assert without_timing(manifest(sharded)) == without_timing(manifest(one))
    assert files(sharded) == files(one)  # names and bytes


@pytest.mark.slow
@pytest.mark.subprocess
def test_torchrun_with_two_cpu_processes_makes_the_set_of_one_process(capfd, maps: Path, tmp_path: Path,
                                                                       bundle_dir: Path):
    one, ranks = tmp_path / "one", tmp_path / "ranks"
    options = ["--samples", "2", "--seed", "1"]
    assert synthesize(capfd, maps, one, bundle_dir, *options).code == 0
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0", "-m", "MedLSDMLib",
         "synthesize", str(maps), "-o", str(ranks), "--model", str(bundle_dir), *STEPS, *options],
        capture_output=True, text=True, env=subprocess_env(), cwd=str(REPO), timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "shard 0/2: 3 pairs" in completed.stderr and "shard 1/2: 3 pairs" in completed.stderr
    assert without_timing(manifest(ranks)) == without_timing(manifest(one))
    assert files(ranks) == files(one)


def test_shard_under_torchrun_and_a_bad_shard_are_one_line_errors(capfd, maps: Path, tmp_path: Path,
                                                                  bundle_dir: Path, monkeypatch):
    result = synthesize(capfd, maps, tmp_path / "x", bundle_dir, "--shard", "3/3")
    assert_one_line_error(result, 2, "--shard 3/3", "0 <= I < N")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = synthesize(capfd, maps, tmp_path / "x", bundle_dir, "--shard", "0/2")
    assert_one_line_error(result, 2, "torchrun")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("extra, words", [
    (("--deform", "-2"), ("--deform -2",)),
    (("--samples", "0"), ("--samples 0",)),
    (("--seed", "-1"), ("--seed -1",)),
    (("--renderer", "nowhere"), ("--renderer nowhere", "NAME_image")),
])
def test_bad_options_are_one_line_errors_before_any_work(capfd, maps: Path, tmp_path: Path, bundle_dir: Path,
                                                         extra, words):
    result = synthesize(capfd, maps, tmp_path / "x", bundle_dir, *extra)
    assert_one_line_error(result, 2, *words)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_failing_map_in_the_middle_is_one_summary_line_and_the_others_are_made(capfd, maps: Path, tmp_path: Path,
                                                                                  bundle_dir: Path):
    bad = brain_labels(size=(19, 23, 15))
    write(sitk.Cast(bad, sitk.sitkUInt8) * 3 + 1, maps / "beta.nii.gz")  # values 1, 4, 7, 10: unknown classes
    out = tmp_path / "set"
    result = synthesize(capfd, maps, out, bundle_dir, "--samples", "2")
    assert result.code == 2
    assert "Traceback" not in result.err
    failed = [line for line in result.err_lines if line.startswith("failed:")]
    assert len(failed) == 1 and "beta (2 pair(s))" in failed[0] and "does not know" in failed[0]
    assert "4 made, 0 already done, 2 failed of 6 pairs" in result.err
    assert result.err_lines[-1].startswith("medlsdm: error: 1 label map(s) failed")
    assert [r["name"] for r in manifest(out)] == ["alpha_s01", "alpha_s02", "gamma_s01", "gamma_s02"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.csv"] + [f"{m}_s0{k}_{kind}.nii.gz" for m in ("alpha", "gamma") for k in (1, 2)
                            for kind in ("image", "label")])


@pytest.mark.slow
def test_a_rerun_skips_what_is_done_and_redoes_a_changed_file(capfd, maps: Path, tmp_path: Path, bundle_dir: Path):
    out = tmp_path / "set"
    assert synthesize(capfd, maps, out, bundle_dir).code == 0
    before = files(out)
    (out / "beta_s01_image.nii.gz").write_bytes(b"damaged")
    result = synthesize(capfd, maps, out, bundle_dir)
    assert result.code == 0
    assert "1 made, 2 already done, 0 failed of 3 pairs" in result.err
    assert files(out) == before
    # other settings (here the seed) make the pairs again
    result = synthesize(capfd, maps, out, bundle_dir, "--seed", "9")
    assert "3 made, 0 already done" in result.err
    assert {r["noise_seed"] for r in manifest(out)[-3:]} == {"9", "10", "11"}


@pytest.mark.slow
def test_a_row_cut_short_by_a_kill_is_ignored_and_the_pair_made_again(capfd, maps: Path, tmp_path: Path,
                                                                       bundle_dir: Path):
    out = tmp_path / "set"
    assert synthesize(capfd, maps, out, bundle_dir).code == 0
    text = (out / "manifest.csv").read_text(encoding="utf-8")
    (out / "manifest.csv").write_text(text[: text.rindex("gamma_s01") + 30], encoding="utf-8")  # the last row cut
    result = synthesize(capfd, maps, out, bundle_dir)
    assert "1 made, 2 already done" in result.err
    from MedLSDMLib.generation.manifest import Manifest

    rows = Manifest(out).rows()
    assert list(rows) == ["alpha_s01", "beta_s01", "gamma_s01"]
    assert rows["gamma_s01"]["image_sha256"] == manifest(out)[-1]["image_sha256"]  # the row made again, whole


def stop_in_the_middle(maps: Path, out: Path, bundle_dir: Path, signum: int) -> subprocess.Popen:
    """Start a job of 16 pairs, and send ``signum`` once two pairs are in the manifest."""
    process = subprocess.Popen(
        [sys.executable, "-m", "MedLSDMLib", "synthesize", str(maps / "alpha.nii.gz"), "-o", str(out), "--model",
         str(bundle_dir), *STEPS, "--samples", "16", "--progress", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=str(REPO))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "manifest.csv").is_file() and len(manifest(out)) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signum)
    return process


def assert_pairs_complete(out: Path) -> None:
    """Every manifest row's files are there with their hashes; no other pair file, no hidden partial file."""
    from MedLSDMLib.models.bundle import sha256

    rows = manifest(out)
    for row in rows:
        assert sha256(out / row["image"]) == row["image_sha256"]
        assert sha256(out / row["label"]) == row["label_sha256"]
    names = {p.name for p in out.iterdir()}
    assert names == {"manifest.csv"} | {r["image"] for r in rows} | {r["label"] for r in rows}


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill -9"])
def test_a_stopped_job_keeps_its_finished_pairs_and_a_rerun_makes_the_rest(capfd, maps: Path, tmp_path: Path,
                                                                           bundle_dir: Path, signum: int):
    out = tmp_path / "set"
    began = time.monotonic()
    process = stop_in_the_middle(maps, out, bundle_dir, signum)
    sent = time.monotonic()
    stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 3.5
    if signum == signal.SIGTERM:
        assert process.returncode == 130, stderr
        error = json.loads(stdout.splitlines()[-1])
        assert error["kind"] == "cancelled" and "finished pairs are kept" in error["message"], error
        assert "Traceback" not in stderr
        assert_pairs_complete(out)
    kept = len(manifest(out))
    assert 2 <= kept < 16, (kept, time.monotonic() - began)
    result = run_cli(capfd, "synthesize", maps / "alpha.nii.gz", "-o", out, "--model", bundle_dir, *STEPS,
                     "--samples", "16")
    assert result.code == 0, result.err
    assert f"{16 - kept} made, {kept} already done, 0 failed of 16 pairs" in result.err
    assert_pairs_complete(out)  # after kill -9 too: the stale partial folder is gone
    assert len({r["name"] for r in manifest(out)}) == 16


def write_real_pair(folder: Path, name: str, means, noise: float, seed: int) -> None:
    labels = brain_labels(size=(24, 26, 20))
    classes = array_xyz(labels)
    rng = np.random.default_rng(seed)
    image = np.asarray(means, dtype=np.float32)[classes] + noise * rng.standard_normal(classes.shape)
    grid = sitk.GetImageFromArray(image.astype(np.float32).transpose(2, 1, 0))
    grid.CopyInformation(labels)
    write(grid, folder / f"{name}_image.nii.gz")
    write(labels, folder / f"{name}_label.nii.gz")


@pytest.mark.slow
def test_the_renderer_paints_each_class_with_a_real_pairs_statistics(capfd, maps: Path, tmp_path: Path,
                                                                      bundle_dir: Path):
    real = tmp_path / "real"
    real.mkdir()
    write_real_pair(real, "one", (0.0, 300.0, 600.0, 900.0), 5.0, 0)
    out = tmp_path / "rendered"
    result = run_cli(capfd, "synthesize", maps, "-o", out, "--model", bundle_dir, "--renderer", real,
                     "--samples", "2", "--deform", "2")
    assert result.code == 0, result.err
    rows = manifest(out)
    assert {(r["generator"], r["sampler"], r["steps"]) for r in rows} == {("renderer", "", "")}
    for row in rows:
        image, label = array_xyz(read(out / row["image"])), array_xyz(read(out / row["label"]))
        assert_grid(read(out / row["image"]), read(out / row["label"]), atol=0)
        for value, mean in ((1, 300.0), (2, 600.0), (3, 900.0)):
            inside = image[label == value]
            assert abs(np.median(inside) - mean) < 60.0, (row["name"], value, np.median(inside))
    again = tmp_path / "again"
    run_cli(capfd, "synthesize", maps, "-o", again, "--model", bundle_dir, "--renderer", real, "--samples", "2",
            "--deform", "2")
    assert files(again) == files(out)  # seeded
    # the same deformations as the model's set with the same seed: B and C of make utility share their maps
    model_set = tmp_path / "model"
    synthesize(capfd, maps, model_set, bundle_dir, "--samples", "2", "--deform", "2")
    for row in rows:
        assert (model_set / row["label"]).read_bytes() == (out / row["label"]).read_bytes()


@pytest.mark.slow
def test_the_nnunet_layout_has_a_valid_dataset_json_and_a_label_for_every_image(capfd, maps: Path, tmp_path: Path,
                                                                                 bundle_dir: Path):
    out = tmp_path / "Dataset001_Synthetic"
    result = synthesize(capfd, maps, out, bundle_dir, "--samples", "2", "--layout", "nnunet", "--shard", "0/2")
    assert result.code == 0, result.err
    assert synthesize(capfd, maps, out, bundle_dir, "--samples", "2", "--layout", "nnunet", "--shard", "1/2").code == 0
    dataset = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert dataset["channel_names"] == {"0": "MRI"}
    assert dataset["labels"] == {"background": 0, "csf": 1, "grey_matter": 2, "white_matter": 3}
    assert dataset["file_ending"] == ".nii.gz"
    images = sorted((out / "imagesTr").iterdir())
    labels = sorted((out / "labelsTr").iterdir())
    assert dataset["numTraining"] == len(images) == len(labels) == 6
    for image in images:
        assert image.name.endswith("_0000.nii.gz")
        label = out / "labelsTr" / image.name.replace("_0000.nii.gz", ".nii.gz")
        assert_grid(read(image), read(label), atol=0)
        assert set(np.unique(array_xyz(read(label)))) <= set(dataset["labels"].values())
