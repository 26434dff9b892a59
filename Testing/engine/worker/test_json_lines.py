"""The worker protocol: with --progress json (and ``python -m MedLSDMLib.worker``) every stdout line
is one JSON object; progress counts up to its total; the last line is done, or an error."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

from MedLSDMLib.runtime.hardware import choose_precision

from conftest import (REPO, assert_one_line_error, brain_labels, folder_entries, generate_args, make_bundle, read,
                      run_cli, run_subprocess, subprocess_env, tiny_card, write)


def check_progress(events: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """Every progress event is well formed; returns them by stage."""
    stages: Dict[str, List[Dict[str, Any]]] = {}
    for event in events:
        assert event["type"] in ("progress", "log", "done", "error"), event
        if event["type"] == "progress":
            assert set(event) == {"type", "stage", "step", "total"}, event
            assert isinstance(event["step"], int) and isinstance(event["total"], int)
            assert 1 <= event["step"] <= event["total"], event
            stages.setdefault(event["stage"], []).append(event)
        if event["type"] == "log":
            assert isinstance(event["message"], str)
    for stage, progress in stages.items():
        steps = [e["step"] for e in progress]
        assert steps == sorted(steps), (stage, steps)
    return stages


@pytest.mark.slow
@pytest.mark.subprocess
def test_worker_speaks_json_lines(tmp_path: Path, labels_path: Path, bundle_dir: Path, generator) -> None:
    output = tmp_path / "synthetic.nii.gz"
    result = run_subprocess(labels_path, "-o", output, "--model", bundle_dir, "--device", "cpu", "--steps", "3",
                            "--seed", "4", module="MedLSDMLib.worker")
    assert result.code == 0, result.err
    events = result.events()  # every line parses as a JSON object
    stages = check_progress(events)
    assert [e["step"] for e in stages["sample"]] == [1, 2, 3]
    assert all(e["total"] == 3 for e in stages["sample"])
    assert stages["write"][-1]["step"] == stages["write"][-1]["total"] == 1
    assert any(e["type"] == "log" and "3 steps" in e["message"] for e in events)
    done = events[-1]
    assert done["type"] == "done"
    assert done["path"] == str(output) and done["paths"] == [str(output)] and done["seeds"] == [4]
    assert isinstance(done["seconds"], float)
    assert sum(e["type"] == "done" for e in events) == 1
    assert output.is_file()

    # the same image as in this process: determinism holds across processes
    expected, = generator.generate(labels_path, steps=3, seed=4)
    assert np.array_equal(sitk.GetArrayFromImage(read(output)), sitk.GetArrayFromImage(expected))


@pytest.mark.slow
@pytest.mark.subprocess
def test_worker_reports_bad_input_as_a_json_error(tmp_path: Path, bundle_dir: Path) -> None:
    labels = write(brain_labels() * 0, tmp_path / "empty.nii.gz")
    result = run_subprocess(labels, "-o", tmp_path / "synthetic.nii.gz", "--model", bundle_dir, "--device", "cpu",
                            module="MedLSDMLib.worker")
    assert result.code == 2
    events = result.events()
    assert events[-1]["type"] == "error" and events[-1]["kind"] == "input"
    assert "no foreground" in events[-1]["message"]
    assert_one_line_error(result, 2, "no foreground")
    assert folder_entries(tmp_path) == ["empty.nii.gz"]


def test_json_progress_of_several_samples(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    output = tmp_path / "synthetic.nrrd"
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir, "--samples", 2, "--progress", "json",
                                           steps=3, seed=8))
    assert result.code == 0, result.err
    assert result.err == ""
    events = result.events()
    stages = check_progress(events)
    assert [e["step"] for e in stages["sample"]] == [1, 2, 3, 4, 5, 6]
    assert {e["total"] for e in stages["sample"]} == {6}
    assert [e["step"] for e in stages["write"]] == [1, 2]
    done = events[-1]
    assert done["type"] == "done"
    assert done["paths"] == [str(tmp_path / "synthetic_01.nrrd"), str(tmp_path / "synthetic_02.nrrd")]
    assert done["path"] == done["paths"][0]
    assert done["seeds"] == [8, 9]


def test_json_errors_carry_their_kind(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    model = run_cli(capfd, *generate_args(labels_path, tmp_path / "a.nii.gz", tmp_path / "nothing",
                                          "--progress", "json"))
    assert model.code == 3
    assert model.events()[-1]["type"] == "error" and model.events()[-1]["kind"] == "model"

    memory = run_cli(capfd, *generate_args(labels_path, tmp_path / "b.nii.gz", bundle_dir, "--max-memory", "1e-6",
                                           "--progress", "json"))
    assert memory.code == 4
    events = memory.events()
    assert events[-1]["type"] == "error" and events[-1]["kind"] == "memory"
    assert not any(e["type"] == "done" for e in events)
    assert folder_entries(tmp_path) == ["in"]


@pytest.mark.slow
def test_text_progress_prints_the_outputs(capfd, tmp_path: Path, labels_path: Path, bundle_dir: Path) -> None:
    output = tmp_path / "synthetic.nii.gz"
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir, "--progress", "text", seed=21))
    assert result.code == 0, result.err
    assert result.out_lines == [f"wrote {output} (seed 21)"]
    auto = choose_precision("auto", "cpu").name  # fp32, or bf16 on a CPU with AMX
    assert "model tiny-brain 0.1.0: CPU, " in result.err and f"precision {auto}" in result.err
    assert "; sampler dpm, 2 steps, guidance 2, seed 21;" in result.err
    quiet = run_cli(capfd, *generate_args(labels_path, tmp_path / "q.nii.gz", bundle_dir, "--progress", "none"))
    assert quiet.code == 0 and quiet.out == "" and quiet.err == ""


@pytest.mark.subprocess
def test_worker_usage_errors_and_help_are_json_lines(tmp_path: Path) -> None:
    """The Slicer module reads stdout: a bad command line and --help are JSON lines there too."""
    bad = run_subprocess("--bogus", module="MedLSDMLib.worker")
    assert bad.code == 2
    event, = bad.events()
    assert event["type"] == "error" and event["kind"] == "input" and "--help" in event["message"]
    shown = run_subprocess("--help", module="MedLSDMLib.worker")
    assert shown.code == 0
    event, = shown.events()
    assert event["type"] == "log" and "usage: medlsdm generate" in event["message"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_worker_whose_reader_goes_away_stops(tmp_path: Path, labels_path: Path, slow_bundle_dir: Path) -> None:
    """A closed stdout pipe (the reader died) ends the worker as a cancel: exit 130, one line on
    stderr, no traceback, no output."""
    output = tmp_path / "synthetic.nii.gz"
    process = subprocess.Popen([sys.executable, "-m", "MedLSDMLib.worker", str(labels_path), "-o", str(output),
                                "--model", str(slow_bundle_dir), "--sampler", "ddpm", "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                               cwd=str(REPO))
    assert process.stdout is not None and process.stderr is not None
    json.loads(process.stdout.readline())  # the first event, then the reader goes away
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == ["medlsdm: error: cancelled; no output was written"]
    assert not output.exists()


@pytest.fixture(scope="module")
def slow_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ancestral sampling over 1000 steps: long enough for the reader to go away first."""
    return make_bundle(tiny_card(timesteps=1000)).save(tmp_path_factory.mktemp("slow") / "slow-model")


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_worker_runs_edit_in_json_lines(tmp_path: Path, bundle_dir: Path, generator) -> None:
    """``python -m MedLSDMLib.worker edit ...``: the Slicer module's edit mode, with the protocol of generate."""
    labels = brain_labels()
    original = write(labels, tmp_path / "original.nii.gz")
    real = tmp_path / "real.nii.gz"
    sitk.WriteImage(generator.generate(original, steps=2, seed=1)[0], str(real))
    array = sitk.GetArrayFromImage(labels)
    array[array == 2] = 1
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(labels)
    edited_path = write(edited, tmp_path / "edited.nii.gz")
    output = tmp_path / "edited_result.nii.gz"
    result = run_subprocess("edit", real, edited_path, "-o", output, "--original-labels", original, "--model",
                            bundle_dir, "--device", "cpu", "--steps", "2", "--seed", "3", module="MedLSDMLib.worker")
    assert result.code == 0, result.err
    events = result.events()
    check_progress(events)
    assert events[-1]["type"] == "done" and events[-1]["paths"] == [str(output)]
    # a usage error is a JSON error line too
    bad = run_subprocess("edit", real, "-o", output, module="MedLSDMLib.worker")
    assert bad.code == 2
    assert bad.events()[-1]["type"] == "error"
