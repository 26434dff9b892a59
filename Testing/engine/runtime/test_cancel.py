"""Cancellation: in process (the cancel callback) and end to end (SIGTERM / SIGINT to the command):
exit code 130, a "cancelled" error event, and nothing written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from MedLSDMLib.runtime import interrupt
from MedLSDMLib.errors import Cancelled
from MedLSDMLib.generation.pipeline import Generator
from MedLSDMLib.models.decoding import decode_latent

from conftest import (REPO, brain_labels, folder_entries, generate_args, make_bundle, run_cli, subprocess_env,
                      tiny_card, write)

LONG_TIMESTEPS = 1000  # ddpm runs every training step: long enough to be interrupted


class CancelAfter:
    """A cancel callback that turns true after it has been asked ``n`` times."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked > self.n


def test_cancel_before_the_first_step(generator) -> None:
    calls: List[int] = []
    handle = generator.bundle.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(Cancelled) as raised:
            generator.generate(brain_labels(), steps=4, seed=0, cancel=lambda: True)
    finally:
        handle.remove()
    assert calls == []
    assert raised.value.exit_code == 130 and raised.value.kind == "cancelled"


def test_cancel_after_a_few_steps(generator) -> None:
    progress: List[tuple] = []
    cancel = CancelAfter(2)
    calls: List[int] = []
    handle = generator.bundle.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(Cancelled):
            generator.generate(brain_labels(), steps=6, seed=0, cancel=cancel,
                               progress=lambda *event: progress.append(event))
    finally:
        handle.remove()
    assert len(calls) == 2  # polled before each step: two steps ran, the third was not started
    assert progress == [("sample", 1, 6), ("sample", 2, 6)]


def test_cancel_during_tiled_decoding(generator) -> None:
    import torch

    latent = torch.randn(1, 4, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    cancel = CancelAfter(1)
    with pytest.raises(Cancelled):
        decode_latent(generator.bundle.autoencoder, latent, tile=8, cancel=cancel)
    assert cancel.asked == 2


@pytest.mark.slow
def test_signal_after_sampling_writes_nothing(capfd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              bundle_dir: Path) -> None:
    """A SIGTERM that arrives when the images are made but not yet written still cancels the run."""
    generate = Generator.generate

    def generate_then_signal(self, *args, **kwargs):
        images = generate(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the command's handler only raises its cancel flag
        deadline = time.monotonic() + 10
        while not interrupt.requested() and time.monotonic() < deadline:  # the main thread takes the signal
            time.sleep(0.01)
        return images

    monkeypatch.setattr(Generator, "generate", generate_then_signal)
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    outputs = tmp_path / "out"
    outputs.mkdir()
    result = run_cli(capfd, *generate_args(labels, outputs / "synthetic.nii.gz", bundle_dir, "--samples", 2,
                                           "--progress", "json"))
    assert result.code == 130, result.err
    assert result.events()[-1] == {"type": "error", "kind": "cancelled", "message": str(Cancelled())}
    assert folder_entries(outputs) == []


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny networks trained (so to speak) with 1000 steps: ddpm sampling takes seconds."""
    return make_bundle(tiny_card(timesteps=LONG_TIMESTEPS)).save(tmp_path_factory.mktemp("slow") / "slow-model")


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_cancels_the_command(tmp_path: Path, slow_bundle: Path, signum: int) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    labels = write(brain_labels(), inputs / "labels.nii.gz")
    command = [sys.executable, "-m", "MedLSDMLib", "generate", str(labels), "-o", str(outputs / "synthetic.nii.gz"),
               "--model", str(slow_bundle), "--sampler", "ddpm", "--seed", "1", "--device", "cpu",
               "--progress", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=subprocess_env(), cwd=str(REPO))
    try:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            event = json.loads(line)
            if event.get("type") == "progress" and event.get("stage") == "sample":
                break
        else:
            pytest.fail(f"no sampling progress before the end: {lines} {process.stderr.read()}")
        assert event["step"] < event["total"] == LONG_TIMESTEPS
        process.send_signal(signum)
        rest, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130, err
    events = [json.loads(line) for line in lines + rest.splitlines()]
    assert events[-1]["type"] == "error" and events[-1]["kind"] == "cancelled", events[-1]
    assert not any(e["type"] == "done" for e in events)
    samples = [e["step"] for e in events if e["type"] == "progress" and e["stage"] == "sample"]
    assert max(samples) < LONG_TIMESTEPS  # stopped part way, not after the work was done
    assert "Traceback" not in err
    assert err.splitlines() == [f"medlsdm: error: {events[-1]['message']}"]
    assert folder_entries(outputs) == []
    assert folder_entries(inputs) == ["labels.nii.gz"]
