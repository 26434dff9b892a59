"""Training: both stages end to end (also under a 2-process torchrun), resume after kill -9,
falling loss, and each bad input."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import SimpleITK as sitk
import yaml

from MedLSDMLib.cli.main import main

from training_data import diffusion_config, pairs, vqgan_config, write_pair  # noqa: F401  (pairs: the fixture)


def metric(run: Path, name: str) -> list:
    with open(run / "metrics.csv", newline="") as stream:
        return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(stream) if r["name"] == name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_stages_under_torchrun_make_a_bundle_that_generates(tmp_path, pairs):
    """Both stages with 2 gloo processes; the bundle generates on the label map's grid."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage, config in (("vqgan", vqgan_config(tmp_path, pairs)),
                          ("diffusion", diffusion_config(tmp_path, pairs, tmp_path / "vqgan" / "bundle"))):
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                              f"--master_port={free_port()}", "-m", "MedLSDMLib", "train", stage, str(config)],
                             capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
    bundle = tmp_path / "diffusion" / "bundle"
    card = json.loads((bundle / "model.json").read_text())
    assert card["training"]["autoencoder"]["world_size"] == 2
    assert card["training"]["diffusion"]["steps"] == 10
    assert card["latent_scale"] > 0
    assert sorted(p.name for p in (tmp_path / "diffusion" / "figures").iterdir()) == ["step_000010.png"]
    output = tmp_path / "synthetic.nii.gz"
    assert main(["generate", str(pairs / "case0_label.nii.gz"), "-o", str(output), "--model", str(bundle),
                 "--steps", "3", "--seed", "1", "--progress", "none"]) == 0
    label = sitk.ReadImage(str(pairs / "case0_label.nii.gz"))
    result = sitk.ReadImage(str(output))
    assert result.GetSize() == label.GetSize() and result.GetSpacing() == label.GetSpacing()


@pytest.mark.slow
@pytest.mark.subprocess
def test_resume_after_kill_continues_from_the_checkpoint(tmp_path, pairs):
    config = vqgan_config(tmp_path, pairs, steps=400, checkpoint_every=3, adversarial_start=1000)
    checkpoint = tmp_path / "vqgan" / "checkpoint.pt"
    process = subprocess.Popen([sys.executable, "-m", "MedLSDMLib", "train", "vqgan", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists()
    import torch

    saved_step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
    assert 3 <= saved_step < 400 and saved_step % 3 == 0
    # the same config with a few more steps than were done: resume must start at the saved step
    config.write_text(config.read_text().replace("steps: 400", f"steps: {saved_step + 2}"))
    run = subprocess.run([sys.executable, "-m", "MedLSDMLib", "train", "vqgan", str(config), "--resume"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"resuming vqgan training at step {saved_step} of {saved_step + 2}" in run.stderr
    card = json.loads((tmp_path / "vqgan" / "bundle" / "model.json").read_text())
    assert card["training"]["autoencoder"]["steps"] == saved_step + 2


@pytest.mark.slow
def test_loss_falls_on_a_toy_dataset(tmp_path, pairs):
    config = vqgan_config(tmp_path, pairs, steps=40, adversarial_start=1000, validate_every=1000)
    assert main(["train", "vqgan", str(config)]) == 0
    l1 = [v for _, v in metric(tmp_path / "vqgan", "l1")]
    assert len(l1) == 40
    assert np.mean(l1[-10:]) < 0.7 * np.mean(l1[:10])


@pytest.mark.slow
def test_diffusion_loss_falls(tmp_path, pairs):
    assert main(["train", "vqgan", str(vqgan_config(tmp_path, pairs, steps=5))]) == 0
    config = diffusion_config(tmp_path, pairs, tmp_path / "vqgan" / "bundle", steps=40, validate_every=1000)
    assert main(["train", "diffusion", str(config)]) == 0
    loss = [v for _, v in metric(tmp_path / "diffusion", "loss")]
    assert np.mean(loss[-10:]) < np.mean(loss[:10])


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_no_pairs_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(["train", "vqgan", str(vqgan_config(tmp_path, empty))], capsys)
    assert code == 2 and len(err) == 1 and "no image/label pairs" in err[0]
    assert not (tmp_path / "vqgan").exists()


def test_image_and_label_on_different_grids(tmp_path, capsys):
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_pair(folder, "a", 0)
    label = sitk.ReadImage(str(folder / "a_label.nii.gz"))
    label.SetSpacing((1.0, 1.5, 1.5))
    sitk.WriteImage(label, str(folder / "a_label.nii.gz"))
    code, err = run_cli(["train", "vqgan", str(vqgan_config(tmp_path, folder))], capsys)
    assert code == 2 and len(err) == 1 and "different grids" in err[0]


def test_label_values_not_in_the_table(tmp_path, capsys):
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_pair(folder, "a", 0)
    label = sitk.ReadImage(str(folder / "a_label.nii.gz"))
    sitk.WriteImage(label * 3, str(folder / "a_label.nii.gz"))  # values 0, 3, 6, 9
    code, err = run_cli(["train", "vqgan", str(vqgan_config(tmp_path, folder))], capsys)
    assert code == 2 and len(err) == 1 and "not in the config's label table" in err[0] and "6" in err[0]


@pytest.mark.parametrize("change, message", [
    ({"training": {"stepz": 3}}, "unknown key(s) stepz"),
    ({"training": {"steps": "many"}}, "training.steps: expected an integer"),
    ({"model": {"spacing": "1mm"}}, "model.spacing: expected a list"),
    ({"data": None}, "data: expected an object"),
])
def test_bad_config(tmp_path, pairs, capsys, change, message):
    path = vqgan_config(tmp_path, pairs)
    config = yaml.safe_load(path.read_text())
    for section, value in change.items():
        if isinstance(value, dict):
            config[section].update(value)
        else:
            config[section] = value
    path.write_text(yaml.safe_dump(config))
    code, err = run_cli(["train", "vqgan", str(path)], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_output_folder_holding_another_run_is_not_overwritten(tmp_path, pairs, capsys):
    config = vqgan_config(tmp_path, pairs, steps=2)
    assert main(["train", "vqgan", str(config)]) == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "vqgan").rglob("*") if p.is_file()}
    code, err = run_cli(["train", "vqgan", str(config)], capsys)
    assert code == 2 and "already holds a run" in err[-1]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "vqgan").rglob("*") if p.is_file()} == before


def test_resume_with_another_config_is_refused(tmp_path, pairs, capsys):
    config = vqgan_config(tmp_path, pairs, steps=2)
    assert main(["train", "vqgan", str(config)]) == 0
    config.write_text(config.read_text().replace("learning_rate: 0.002", "learning_rate: 0.01"))
    code, err = run_cli(["train", "vqgan", str(config), "--resume"], capsys)
    assert code == 2 and "config differs" in err[-1]


def test_missing_perceptual_weights_is_a_clear_error(tmp_path, pairs, capsys):
    config = vqgan_config(tmp_path, pairs, perceptual_weights=str(tmp_path / "resnet50.pth"))
    code, err = run_cli(["train", "vqgan", str(config)], capsys)
    assert code == 2 and "perceptual_weights" in err[-1]
    assert not (tmp_path / "vqgan").exists()


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, pairs, capsys, monkeypatch):
    """A diverging run stops with one line; the checkpoint written before is kept intact."""
    import torch

    from MedLSDMLib.training import vqgan as train_vqgan

    original = train_vqgan.VQGANTrainer.train_step

    def poisoned(self, batches):
        if self.step >= 4:
            batches = [{**b, "image": b["image"] * float("nan")} for b in batches]
        return original(self, batches)

    monkeypatch.setattr(train_vqgan.VQGANTrainer, "train_step", poisoned)
    config = vqgan_config(tmp_path, pairs, steps=10, checkpoint_every=2)
    code, err = run_cli(["train", "vqgan", str(config)], capsys)
    assert code == 1 and "NaN or infinite at step 5" in err[-1] and "step 4" in err[-1]
    state = torch.load(tmp_path / "vqgan" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_noise_draws_train_each_patch_at_several_noise_levels(tmp_path, pairs, monkeypatch, capsys):
    """training.noise_draws: 3 sends each patch of a batch of 2 through the UNet 3 times, each with its own
    noise and noise level; 0 draws is refused in one line."""
    from MedLSDMLib.training.diffusion import DiffusionTrainer

    assert main(["train", "vqgan", str(vqgan_config(tmp_path, pairs, steps=2))]) == 0
    calls = []
    original = DiffusionTrainer.train_step

    def recording(self, batches):
        forward = type(self.train_unet).forward.__get__(self.train_unet)

        def spy(x, timesteps, seg):
            calls.append((x.detach().clone(), timesteps.clone(), seg.clone()))
            return forward(x, timesteps=timesteps, seg=seg)

        monkeypatch.setattr(self.train_unet, "forward", spy)
        return original(self, batches)

    monkeypatch.setattr(DiffusionTrainer, "train_step", recording)
    config = diffusion_config(tmp_path, pairs, tmp_path / "vqgan" / "bundle", steps=2, validate_every=1000,
                              noise_draws=3, label_dropout=0.0)
    assert main(["train", "diffusion", str(config)]) == 0
    assert len(calls) == 2
    for noisy, timesteps, seg in calls:
        assert noisy.shape[0] == 6 and timesteps.shape == (6,)
        assert torch.equal(seg[:2], seg[2:4]) and torch.equal(seg[:2], seg[4:])  # the same patches ...
        assert not torch.equal(noisy[:2], noisy[2:4])  # ... with their own noise
    assert len({int(t) for _, timesteps, _ in calls for t in timesteps}) > 2
    card = json.loads((tmp_path / "diffusion" / "bundle" / "model.json").read_text())
    assert card["training"]["diffusion"]["config"]["training"]["noise_draws"] == 3

    (tmp_path / "bad").mkdir()
    capsys.readouterr()
    bad = diffusion_config(tmp_path / "bad", pairs, tmp_path / "vqgan" / "bundle", noise_draws=0)
    code, err = run_cli(["train", "diffusion", str(bad)], capsys)
    assert code == 2 and len(err) == 1 and "training.noise_draws must be at least 1" in err[0], err
