"""The label-conditioned (SPADE) VQ-GAN decoder: it reads the full-resolution map, the map travels
through tiled decoding in place, bundles record it and old bundles keep loading, and generation,
reconstruction and edits hand it the class map."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_bundle, tiny_card

from MedLSDMLib.card import AutoencoderConfig, ModelCard, from_dict, to_dict
from MedLSDMLib.generation.pipeline import Generator
from MedLSDMLib.models.bundle import ModelBundle
from MedLSDMLib.models.decoding import decode_latent
from MedLSDMLib.models.decoding import tile_windows
from MedLSDMLib.models.networks import VQGAN

SPADE = AutoencoderConfig(
    channels=(8, 8),
    num_res_layers=1,
    num_res_channels=(8, 8),
    latent_channels=4,
    num_embeddings=16,
    decoder="spade",
    spade_hidden_channels=8,
)


def spade_card() -> ModelCard:
    return tiny_card(name="tiny-spade", autoencoder=SPADE)


def test_tile_cores_cover_the_volume_once() -> None:
    size = [10, 23, 7]
    seen = torch.zeros(size)
    windows = tile_windows(size, 8)
    for window, core, inner in windows:
        assert all(w.stop - w.start <= 8 for w in window)
        assert all(w.start + i.start == c.start and i.stop - i.start == c.stop - c.start
                   for w, c, i in zip(window, core, inner))
        seen[core] += 1
    assert torch.equal(seen, torch.ones(size))
    assert len(windows) > 1


def test_the_decoder_reads_the_label_map() -> None:
    torch.manual_seed(0)
    model = VQGAN(SPADE, 4).eval()
    latent = torch.randn(1, 4, 4, 4, 4)
    classes = torch.randint(0, 4, (1, 16, 16, 16))
    with torch.no_grad():
        a = decode_latent(model, latent, classes)
        b = decode_latent(model, latent, (classes + 1) % 4)
    assert a.shape == (1, 1, 16, 16, 16)
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="label map"):
        decode_latent(model, latent)


def test_the_plain_decoder_takes_no_map() -> None:
    model = VQGAN(dataclasses.replace(SPADE, decoder="plain"), 4).eval()
    latent = torch.randn(1, 4, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(decode_latent(model, latent), decode_latent(model, latent, torch.zeros(1, 16, 16, 16)))


def test_tiles_carry_the_map_to_their_own_voxels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder that paints each voxel with its class: tiled decoding must give back the class map
    exactly, which holds only if every window gets the map of its own voxels."""
    model = VQGAN(SPADE, 4).eval()

    def paint(quantized: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        assert segmap.shape[2:] == tuple(4 * s for s in quantized.shape[2:])
        return segmap.argmax(1, keepdim=True).float()

    monkeypatch.setattr(model, "decode_quantized", paint)
    classes = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (1, 40, 48, 24)))
    latent = torch.randn(1, 4, 10, 12, 6)
    progress = []
    tiled = decode_latent(model, latent, classes, tile=4, progress=lambda *e: progress.append(e))
    assert len(progress) > 1
    assert torch.allclose(tiled[0, 0], classes[0].float(), atol=1e-4)


def test_tiled_decoding_matches_whole_decoding() -> None:
    torch.manual_seed(1)
    model = VQGAN(SPADE, 4).eval()
    latent = torch.randn(1, 4, 12, 12, 12)
    classes = torch.zeros(1, 48, 48, 48, dtype=torch.long)
    classes[:, 8:40, 8:40, 8:40] = 1
    classes[:, 16:32, 16:32, 16:32] = 3
    with torch.no_grad():
        whole = decode_latent(model, latent, classes)
        tiled = decode_latent(model, latent, classes, tile=8)
    # each tile is decoded with a halo of context, and the decoder is local: the tiles meet without a seam
    assert (tiled - whole).abs().max() < 1e-2 * whole.abs().max()


def test_the_bundle_records_the_decoder_and_old_cards_still_load(tmp_path: Path) -> None:
    bundle = make_bundle(spade_card())
    folder = bundle.save(tmp_path / "spade")
    card = json.loads((folder / "model.json").read_text())
    assert card["autoencoder"]["decoder"] == "spade"
    loaded = ModelBundle.load(folder)
    assert loaded.autoencoder.label_decoder is not None
    for a, b in zip(bundle.autoencoder.state_dict().values(), loaded.autoencoder.state_dict().values()):
        assert torch.equal(a, b)
    # a card written before the option existed (no decoder keys) is the plain decoder
    old = to_dict(tiny_card())
    for key in ("decoder", "spade_hidden_channels", "decoder_channels"):
        del old["autoencoder"][key]
    assert from_dict(ModelCard, old).autoencoder.decoder == "plain"


@pytest.mark.parametrize(
    "change, message",
    [({"decoder": "unet"}, "autoencoder.decoder must be one of plain, spade"),
     ({"decoder_channels": (8, 8)}, "decoder_channels is for the spade decoder"),
     ({"decoder": "spade", "decoder_channels": (8,)}, "one entry per entry of channels"),
     ({"decoder": "spade", "spade_hidden_channels": 0}, "spade_hidden_channels must be at least 1")],
)
def test_bad_decoder_settings(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(AutoencoderConfig(), **change)


def test_generation_reconstruction_and_edit_with_the_spade_decoder(tmp_path: Path, labels_path: Path) -> None:
    folder = make_bundle(spade_card()).save(tmp_path / "spade")
    generator = Generator.load(folder)
    labels = sitk.ReadImage(str(labels_path))
    first = generator.generate(labels, steps=2, seed=3)[0]
    again = generator.generate(labels, steps=2, seed=3)[0]
    assert first.GetSize() == labels.GetSize() and first.GetSpacing() == labels.GetSpacing()
    assert np.array_equal(sitk.GetArrayFromImage(first), sitk.GetArrayFromImage(again))
    round_trip = generator.reconstruct(first, labels)
    assert round_trip.GetSize() == labels.GetSize()
    edited_map = sitk.GetArrayFromImage(labels).copy()
    edited_map[edited_map == 2] = 1
    edited = sitk.GetImageFromArray(edited_map)
    edited.CopyInformation(labels)
    result = generator.edit(first, edited, original=labels, steps=2, seed=3, margin=2.0)[0]
    assert result.GetSize() == labels.GetSize()
