"""Memory planning: too little memory is a clear error (exit 4); decoding is tiled when the whole
decode does not fit; tiled and whole decoding agree; estimates grow with the size."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedLSDMLib.models.bundle import read_card
from MedLSDMLib.errors import OutOfMemory
from MedLSDMLib.io.geometry import working_grid
from MedLSDMLib.generation.memory import DECODE_TILES, decode_bytes, plan_memory, unet_bytes
from MedLSDMLib.runtime.resources import GIB
from MedLSDMLib.models.decoding import decode_latent

from conftest import assert_no_output, assert_one_line_error, brain_labels, generate_args, run_cli, tiny_card

CPU = torch.device("cpu")
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


def stated_bytes(message: str, verb: str) -> float:
    """The amount the message states after ``verb`` (e.g. 'needs about 12.3 MiB')."""
    match = re.search(verb + r" (\d+(?:\.\d+)?) (B|KiB|MiB|GiB)", message)
    assert match, message
    return float(match.group(1)) * UNITS[match.group(2)]


def test_too_little_memory_is_exit_4_saying_what_is_needed(capfd, tmp_path: Path, labels_path: Path,
                                                           bundle_dir: Path, generator) -> None:
    outputs = tmp_path / "out"
    outputs.mkdir()
    result = run_cli(capfd, *generate_args(labels_path, outputs / "synthetic.nii.gz", bundle_dir,
                                           "--max-memory", "0.0001"))
    line = assert_one_line_error(result, 4, "needs about", "available", "crop")
    assert_no_output(outputs, [])

    # the stated need is the engine's own estimate for this request, not a rounded-away 0
    with pytest.raises(OutOfMemory) as raised:
        generator.generate(labels_path, steps=2, max_memory=0.0001)
    assert str(raised.value) in line
    needed = stated_bytes(line, "needs about")
    assert needed > 0
    assert stated_bytes(line, "but") == pytest.approx(0.0001 * GIB, rel=0.01)
    card = read_card(bundle_dir)
    grid = working_grid(brain_labels(), card.spacing, card.orientation, card.size_multiple)
    latent = [s // card.autoencoder.downsample_factor for s in grid.GetSize()]
    minimum = unet_bytes(card, latent, 2) + generator.bundle.weight_bytes()
    assert needed >= minimum * 0.99


def test_whole_decode_when_it_fits() -> None:
    card = tiny_card()
    plan = plan_memory(card, [48, 48, 48], 2, CPU, max_memory_gib=64)
    assert plan.tile is None
    assert plan.needed == max(unet_bytes(card, [48] * 3, 2), decode_bytes(card, [48] * 3, None))
    assert plan.available == 64 * GIB


def test_tiled_decode_when_only_tiles_fit() -> None:
    card = tiny_card()
    latent = [48, 48, 48]
    whole = decode_bytes(card, latent, None)
    sampling = unet_bytes(card, latent, 2)
    tiles = {t: decode_bytes(card, latent, t) for t in DECODE_TILES}
    assert sampling < tiles[32] < whole  # so a budget between them needs tiles
    budget = (tiles[32] + whole) / 2
    plan = plan_memory(card, latent, 2, CPU, max_memory_gib=budget / GIB)
    assert plan.tile == 32
    assert plan.needed <= budget

    # a smaller budget: the largest tile that still fits
    budget = (tiles[16] + tiles[24]) / 2
    plan = plan_memory(card, latent, 2, CPU, max_memory_gib=budget / GIB)
    assert plan.tile == 16 and plan.needed <= budget

    with pytest.raises(OutOfMemory, match="needs about"):
        plan_memory(card, latent, 2, CPU, max_memory_gib=min(tiles.values()) / 2 / GIB)


def test_estimates_grow_with_size_and_batch() -> None:
    card = tiny_card()
    needed = [plan_memory(card, [s] * 3, 2, CPU, max_memory_gib=1024).needed for s in (4, 8, 16, 32, 64)]
    assert all(a < b for a, b in zip(needed, needed[1:])), needed
    assert unet_bytes(card, [16, 16, 16], 2) > unet_bytes(card, [16, 16, 16], 1)
    assert unet_bytes(card, [16, 16, 32], 1) > unet_bytes(card, [16, 16, 16], 1)
    assert decode_bytes(card, [32] * 3, None) > decode_bytes(card, [16] * 3, None)
    # weights count too
    assert plan_memory(card, [8] * 3, 1, CPU, 1024, weights=10 ** 6).needed > plan_memory(card, [8] * 3, 1, CPU, 1024).needed


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@torch.no_grad()
def test_tiled_decoding_agrees_with_whole(generator) -> None:
    autoencoder = generator.bundle.autoencoder
    latent = torch.randn(1, 4, 20, 16, 12, generator=torch.Generator().manual_seed(0))
    whole = decode_latent(autoencoder, latent)
    progress = []
    tiled = decode_latent(autoencoder, latent, tile=8, progress=lambda *e: progress.append(e))
    assert whole.shape == tiled.shape == (1, 1, 80, 64, 48)
    assert whole.std() > 0
    assert correlation(whole, tiled) > 0.95
    steps = [e[1] for e in progress]
    assert steps == list(range(1, len(progress) + 1)) and len(progress) > 1
    assert all(e[0] == "decode" and e[1] <= e[2] for e in progress)


def test_generation_with_tiled_decoding(generator) -> None:
    """A budget the whole decode does not fit: generation decodes in tiles, and the image is on the
    label map's grid and close to the whole-decoded one."""
    labels = brain_labels(size=(40, 40, 40), spacing=(2.0, 2.0, 2.0), direction=np.eye(3))
    card = generator.card
    latent = [10, 10, 10]  # the working grid is 40^3 at 2 mm, so 10^3 latent voxels: more than a tile of 8
    weights = generator.bundle.weight_bytes()
    whole = decode_bytes(card, latent, None) + weights
    tiled = max(unet_bytes(card, latent, 2), decode_bytes(card, latent, 8)) + weights
    assert tiled < whole
    budget = (tiled + whole) / 2 / GIB

    logs, progress = [], []
    image, = generator.generate(labels, steps=2, seed=3, max_memory=budget, precision="fp32", log=logs.append,
                                progress=lambda *e: progress.append(e))
    reference, = generator.generate(labels, steps=2, seed=3, precision="fp32")
    assert "tiled decoding" in logs[0] and "grid 40x40x40" in logs[0]
    assert any(e[0] == "decode" for e in progress)
    assert image.GetSize() == labels.GetSize()
    a, b = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference)
    assert not np.array_equal(a, b)
    assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.95
