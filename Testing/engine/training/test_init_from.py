"""Starting training from a bundle: a new (label-conditioned) decoder on a bundle's frozen encoder and
codebook, and fine-tuning a bundle's UNet on that latent space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from training_data import diffusion_config, pairs, vqgan_config  # noqa: F401 (pairs: the fixture)

from MedLSDMLib.cli.main import main

ENCODER = ("vqvae.encoder.", "vqvae.quantizer.")


@pytest.fixture(scope="module")
def source(tmp_path_factory, pairs) -> Path:
    """A complete toy bundle (plain decoder) to start from."""
    folder = tmp_path_factory.mktemp("source")
    assert main(["train", "vqgan", str(vqgan_config(folder, pairs, steps=3))]) == 0
    config = diffusion_config(folder, pairs, folder / "vqgan" / "bundle", steps=3, validate_every=1000)
    assert main(["train", "diffusion", str(config)]) == 0
    return folder / "diffusion" / "bundle"


def edit_config(path: Path, change) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


def spade_on(source: Path):
    def change(data) -> None:
        data["init_from"] = str(source)
        data["model"]["autoencoder"].update(decoder="spade", spade_hidden_channels=8)
        data["training"]["freeze_encoder"] = True

    return change


@pytest.mark.slow
def test_a_new_decoder_on_a_frozen_encoder_keeps_the_latent_space(tmp_path, pairs, source, capsys) -> None:
    config = edit_config(vqgan_config(tmp_path, pairs, steps=4, adversarial_start=2), spade_on(source))
    assert main(["train", "vqgan", str(config)]) == 0
    bundle = tmp_path / "vqgan" / "bundle"
    before, after = load_file(str(source / "autoencoder.safetensors")), load_file(str(bundle / "autoencoder.safetensors"))
    encoder = [k for k in before if k.startswith(ENCODER)]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(k.startswith("label_decoder.") for k in after)
    assert not any(k.startswith("vqvae.decoder.") for k in after)
    card = json.loads((bundle / "model.json").read_text())
    assert card["autoencoder"]["decoder"] == "spade"
    assert card["training"]["autoencoder_initialised_from"]["decoder"] == "new"

    # the source's UNet learned this latent space: it can be fine-tuned on the new autoencoder
    tune = diffusion_config(tmp_path, pairs, bundle, steps=2, validate_every=1000)
    edit_config(tune, lambda data: data.update(init_from=str(source)))
    assert main(["train", "diffusion", str(tune)]) == 0
    tuned = json.loads((tmp_path / "diffusion" / "bundle" / "model.json").read_text())
    assert tuned["latent_scale"] == json.loads((source / "model.json").read_text())["latent_scale"]
    assert tuned["training"]["diffusion_initialised_from"]["unet"] == "loaded"
    assert main(["generate", str(pairs / "case0_label.nii.gz"), "-o", str(tmp_path / "s.nii.gz"), "--model",
                 str(tmp_path / "diffusion" / "bundle"), "--steps", "2", "--progress", "none"]) == 0


@pytest.mark.slow
def test_fine_tuning_a_unet_of_another_latent_space_is_refused(tmp_path, pairs, source, capsys) -> None:
    # a new autoencoder trained from scratch: another encoder, so the source UNet does not fit it
    assert main(["train", "vqgan", str(vqgan_config(tmp_path, pairs, steps=2))]) == 0
    tune = diffusion_config(tmp_path, pairs, tmp_path / "vqgan" / "bundle", steps=2, validate_every=1000)
    edit_config(tune, lambda data: data.update(init_from=str(source)))
    assert main(["train", "diffusion", str(tune)]) == 2
    assert "its encoder or codebook differs" in capsys.readouterr().err


def test_freeze_encoder_needs_init_from(tmp_path, pairs, capsys) -> None:
    config = edit_config(vqgan_config(tmp_path, pairs), lambda data: data["training"].update(freeze_encoder=True))
    assert main(["train", "vqgan", str(config)]) == 2
    assert "training.freeze_encoder needs init_from" in capsys.readouterr().err


@pytest.mark.slow
def test_init_from_a_bundle_with_another_encoder_is_refused(tmp_path, pairs, source, capsys) -> None:
    def change(data) -> None:
        spade_on(source)(data)
        data["model"]["autoencoder"]["num_embeddings"] = 64

    config = edit_config(vqgan_config(tmp_path, pairs), change)
    assert main(["train", "vqgan", str(config)]) == 2
    assert "its encoder differs from model.autoencoder" in capsys.readouterr().err
    assert not (tmp_path / "vqgan").exists()


def test_init_from_a_folder_that_is_no_bundle(tmp_path, pairs, capsys) -> None:
    config = edit_config(vqgan_config(tmp_path, pairs), lambda data: data.update(init_from=str(tmp_path)))
    assert main(["train", "vqgan", str(config)]) == 2
    assert "init_from" in capsys.readouterr().err
