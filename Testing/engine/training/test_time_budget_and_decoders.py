"""Training options of the sharper-decoder sweep: ``training.max_minutes`` stops a run on time with its
checkpoint and bundle, ``training.workers`` cut patches in worker processes with their own random streams,
the gradient and frequency losses train, and ``init_from`` keeps the decoder only when it is the same
network (another width or upsampling starts a new one on the kept encoder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import brain_array, image_from_xyz, write

from MedLSDMLib.cli.main import main
from MedLSDMLib.training.config import VQGANRun, load_run_config
from MedLSDMLib.training.vqgan import VQGANTrainer, frequency_l1, gradient_l1

LABELS = [{"value": v, "name": n} for v, n in enumerate(("background", "csf", "gm", "wm"))]
AUTOENCODER = {"channels": [8, 8], "num_res_channels": [8, 8], "num_res_layers": 1, "latent_channels": 4,
               "num_embeddings": 16, "decoder": "spade", "spade_hidden_channels": 8}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for i in range(2):
        classes = brain_array((22 + 2 * i, 24, 20))
        image = np.choose(classes, [0.0, 30.0, 60.0, 90.0]) + rng.normal(0, 2, classes.shape)
        spacing, origin, direction = (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3)
        write(image_from_xyz(image.astype(np.float32), spacing, origin, direction), folder / f"c{i}_image.nii.gz")
        write(image_from_xyz(classes, spacing, origin, direction), folder / f"c{i}_label.nii.gz")
    return folder


def config(folder: Path, pairs: Path, name: str, autoencoder=None, init_from=None, **training) -> Path:
    data = {
        "output": str(folder / name),
        "data": {"pairs": str(pairs), "validation_fraction": 0.0},
        "model": {"name": "toy", "labels": LABELS, "spacing": [2.0, 2.0, 2.0],
                  "autoencoder": {**AUTOENCODER, **(autoencoder or {})}},
        "training": {"batch_size": 2, "patch_size": [16, 16, 16], "precision": "fp32", "steps": 4,
                     "checkpoint_every": 100, "validate_every": 100, "log_every": 1, "adversarial_start": 2,
                     "discriminator_layers": 2, "discriminator_channels": 8, **training},
    }
    if init_from is not None:
        data["init_from"] = str(init_from)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def card_of(run: Path) -> dict:
    return json.loads((run / "bundle" / "model.json").read_text())


def test_max_minutes_stops_the_run_with_its_checkpoint_and_bundle(tmp_path: Path, pairs: Path) -> None:
    path = config(tmp_path, pairs, "budget", steps=100000, max_minutes=1e-4)
    assert main(["train", "vqgan", str(path), "--progress", "none"]) == 0
    record = card_of(tmp_path / "budget")["training"]["autoencoder"]
    assert 1 <= record["steps"] < 100000 and record["stopped_by_max_minutes"] is True
    assert (tmp_path / "budget" / "checkpoint.pt").is_file()


def test_a_run_within_its_budget_ends_at_its_steps(tmp_path: Path, pairs: Path) -> None:
    path = config(tmp_path, pairs, "within", steps=2, max_minutes=30, gradient_weight=1.0, frequency_weight=1.0)
    assert main(["train", "vqgan", str(path), "--progress", "none"]) == 0
    record = card_of(tmp_path / "within")["training"]["autoencoder"]
    assert record["steps"] == 2 and record["stopped_by_max_minutes"] is False
    metrics = (tmp_path / "within" / "metrics.csv").read_text()
    assert ",gradient," in metrics and ",frequency," in metrics


@pytest.mark.parametrize("change, message", [
    ({"max_minutes": 0}, "max_minutes"), ({"max_minutes": float("inf")}, "max_minutes"),
    ({"workers": -1}, "workers"), ({"gradient_weight": -1.0}, "gradient_weight"),
])
def test_bad_options_are_refused(tmp_path: Path, pairs: Path, capsys, change, message) -> None:
    path = config(tmp_path, pairs, "bad", **change)
    assert main(["train", "vqgan", str(path), "--progress", "none"]) == 2
    assert message in capsys.readouterr().err


def test_patch_workers_draw_different_patches(tmp_path: Path, pairs: Path) -> None:
    trainer = VQGANTrainer(load_run_config(config(tmp_path, pairs, "workers", workers=2), VQGANRun))
    batches = [next(trainer.batches)["image"] for _ in range(4)]
    assert all(not torch.equal(a, b) for i, a in enumerate(batches) for b in batches[i + 1:])


def test_gradient_and_frequency_losses_are_zero_only_for_the_same_image() -> None:
    torch.manual_seed(0)
    real = torch.randn(2, 1, 8, 8, 8)
    assert float(gradient_l1(real, real)) == 0 and float(frequency_l1(real, real)) == 0
    blurred = torch.nn.functional.avg_pool3d(real, 3, 1, 1)
    assert float(gradient_l1(blurred, real)) > 0.1 and float(frequency_l1(blurred, real)) > 0.01


def test_init_from_keeps_the_decoder_only_when_it_is_the_same_network(tmp_path: Path, pairs: Path) -> None:
    assert main(["train", "vqgan", str(config(tmp_path, pairs, "base", steps=2)), "--progress", "none"]) == 0
    base = tmp_path / "base" / "bundle"
    cases = {"same": {}, "resize": {"upsample": "resize"}, "wide": {"decoder_channels": [16, 16]}}
    for name, change in cases.items():
        path = config(tmp_path, pairs, name, change, init_from=base, steps=1, freeze_encoder=True)
        assert main(["train", "vqgan", str(path), "--progress", "none"]) == 0
        kept = card_of(tmp_path / name)["training"]["autoencoder_initialised_from"]["decoder"]
        assert kept == ("loaded" if name == "same" else "new")
