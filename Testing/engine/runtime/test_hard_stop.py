"""A stop ends at once: with a network whose forward pass sleeps for a minute, or a write that hangs,
SIGTERM ends the command with 130 within 3 s (after a 2 s grace), a second signal ends it at once,
and nothing is left behind: no output, no temporary file, an existing output kept, the last
training checkpoint kept."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest

from conftest import REPO, brain_labels, folder_entries, subprocess_env, write
from training_data import pairs, vqgan_config  # noqa: F401  (the training data fixture)

# Runs the real command line with one part replaced by a stub that creates $STUB_MARKER and sleeps.
STUB = """
import os, sys, time

def stall(*args, **kwargs):
    open(os.environ["STUB_MARKER"], "w").close()  # a file: the write stub runs with stderr muted
    time.sleep(60)

part = sys.argv[1]
if part == "unet":
    import MedLSDMLib.sampling.guidance as sampling
    sampling.GuidedUNet._run = stall
elif part == "write":
    import SimpleITK
    SimpleITK.WriteImage = stall
elif part == "train":
    import MedLSDMLib.training.vqgan as train_vqgan
    original = train_vqgan.VQGANTrainer.train_step
    def train_step(self, batches):
        if self.step >= 3:
            stall()
        return original(self, batches)
    train_vqgan.VQGANTrainer.train_step = train_step
from MedLSDMLib.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def start(part: str, args: Sequence[str], marker: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", STUB, part, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(STUB_MARKER=str(marker)),
                            cwd=str(REPO))


def wait_for_stub(process: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        process.kill()
        pytest.fail(f"the stub was not reached: {process.communicate()}")


def stop(process: subprocess.Popen, signals: Sequence[int]) -> Tuple[float, str, str]:
    """Send the signals (0.2 s apart); return the seconds until the process ended, stdout and stderr."""
    began = time.monotonic()
    try:
        for signum in signals:
            process.send_signal(signum)
            time.sleep(0.2)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return time.monotonic() - began, out, err


def generate_command(labels: Path, output: Path, model: Path) -> List[str]:
    return ["generate", str(labels), "-o", str(output), "--model", str(model), "--device", "cpu", "--steps", "2",
            "--seed", "1", "--progress", "json"]


@pytest.fixture
def folders(tmp_path: Path) -> Tuple[Path, Path]:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    write(brain_labels(), inputs / "labels.nii.gz")
    return inputs, outputs


def assert_cancelled(code: int, out: str, err: str) -> None:
    assert code == 130, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["type"] == "error" and events[-1]["kind"] == "cancelled", events[-1]
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("medlsdm:")] == [
        f"medlsdm: error: {events[-1]['message']}"]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_in_the_middle_of_a_unet_pass_ends_within_3_s(folders: Tuple[Path, Path], bundle_dir: Path,
                                                             signum: int) -> None:
    inputs, outputs = folders
    marker = inputs.parent / "marker"
    process = start("unet", generate_command(inputs / "labels.nii.gz", outputs / "synthetic.nii.gz", bundle_dir),
                    marker)
    wait_for_stub(process, marker)
    seconds, out, err = stop(process, [signum])
    assert_cancelled(process.returncode, out, err)
    assert 1.8 < seconds < 3.0  # the grace of 2 s for a clean stop, then at once
    assert folder_entries(outputs) == []
    assert folder_entries(inputs) == ["labels.nii.gz"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_second_signal_ends_at_once(folders: Tuple[Path, Path], bundle_dir: Path) -> None:
    inputs, outputs = folders
    marker = inputs.parent / "marker"
    process = start("unet", generate_command(inputs / "labels.nii.gz", outputs / "synthetic.nii.gz", bundle_dir),
                    marker)
    wait_for_stub(process, marker)
    seconds, out, err = stop(process, [signal.SIGTERM, signal.SIGTERM])
    assert_cancelled(process.returncode, out, err)
    assert seconds < 2.0
    assert folder_entries(outputs) == []


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_stop_while_writing_keeps_the_existing_output(folders: Tuple[Path, Path], bundle_dir: Path) -> None:
    """The write hangs (a slow network disk): the stop removes the half-written temporary folder and
    the previous output of that name stays as it was."""
    inputs, outputs = folders
    existing = outputs / "synthetic.nii.gz"
    existing.write_bytes(b"the previous result")
    marker = inputs.parent / "marker"
    process = start("write", generate_command(inputs / "labels.nii.gz", existing, bundle_dir), marker)
    wait_for_stub(process, marker)
    hidden = [name for name in folder_entries(outputs) if name.startswith(".")]
    assert hidden, "the write should be staged in a hidden temporary folder"
    seconds, out, err = stop(process, [signal.SIGTERM])
    assert_cancelled(process.returncode, out, err)
    assert seconds < 3.0
    assert folder_entries(outputs) == ["synthetic.nii.gz"]
    assert existing.read_bytes() == b"the previous result"


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_signal_right_after_start_is_a_clean_cancel(folders: Tuple[Path, Path], bundle_dir: Path) -> None:
    """The handlers come before the heavy imports (torch, MONAI): a signal then is a cancel (130), not
    the default death by SIGTERM (143)."""
    inputs, outputs = folders
    process = subprocess.Popen([sys.executable, "-m", "MedLSDMLib",
                                *generate_command(inputs / "labels.nii.gz", outputs / "out.nii.gz", bundle_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                               cwd=str(REPO))
    time.sleep(0.3)
    seconds, out, err = stop(process, [signal.SIGTERM])
    assert_cancelled(process.returncode, out, err)
    assert seconds < 3.0
    assert folder_entries(outputs) == []


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_stop_during_training_keeps_the_last_checkpoint(tmp_path: Path, pairs: Path) -> None:  # noqa: F811
    import torch

    config = vqgan_config(tmp_path, pairs, steps=50, checkpoint_every=2, adversarial_start=1000)
    marker = tmp_path / "marker"
    process = start("train", ["train", "vqgan", str(config)], marker)
    wait_for_stub(process, marker)
    seconds, out, err = stop(process, [signal.SIGTERM])
    assert process.returncode == 130, err
    assert seconds < 3.0
    assert "Traceback" not in err
    run = tmp_path / "vqgan"
    assert int(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["step"]) == 2
    assert not [name for name in folder_entries(run) if "partial" in name]
