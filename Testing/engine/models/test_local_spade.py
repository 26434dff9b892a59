"""The UNet's SPADE made local (``unet.spade: local``): a patch and the same region of a whole volume get
the same modulation (γ and β), unlike MONAI's instance-normalised γ/β; the weights of either kind fit the
other, and cards without the key (up to 0.2.0) build MONAI's."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from monai.networks.blocks import SPADE

from MedLSDMLib.card import ModelCard, UNetConfig, from_dict, to_dict
from MedLSDMLib.models.networks import build_unet

UNET = UNetConfig(
    channels=(16, 32),
    attention_levels=(False, False),
    num_res_blocks=1,
    norm_num_groups=8,
    num_head_channels=8,
    spade_intermediate_channels=8,
)
# a patch of the whole map, far enough from its border for the γ/β convolutions' reach (two 3³ kernels)
PATCH = (slice(None), slice(None), slice(6, 18), slice(4, 16), slice(8, 20))
INNER = (slice(None), slice(None), slice(2, 10), slice(2, 10), slice(2, 10))


def modulations(block: SPADE, segmap: torch.Tensor) -> torch.Tensor:
    """The block's γ and β for a label map (what multiplies and shifts the normalised activations)."""
    hidden = block.mlp_shared(segmap)
    return torch.cat([block.mlp_gamma(hidden), block.mlp_beta(hidden)], 1)


def first_spade(kind: str) -> SPADE:
    torch.manual_seed(0)
    unet = build_unet(dataclasses.replace(UNET, spade=kind), latent_channels=4, num_classes=4)
    return next(m for m in unet.modules() if isinstance(m, SPADE))


def whole_map() -> torch.Tensor:
    torch.manual_seed(1)
    classes = torch.randint(0, 4, (1, 24, 20, 28))
    classes[:, :12] = 0  # an uneven class mix: the field of view's statistics differ from the patch's
    return torch.nn.functional.one_hot(classes, 4).permute(0, 4, 1, 2, 3).float()


@torch.no_grad()
def test_a_patch_and_the_whole_volume_get_the_same_modulation_with_local_spade() -> None:
    block, segmap = first_spade("local"), whole_map()
    whole = modulations(block, segmap)[PATCH][INNER]
    patch = modulations(block, segmap[PATCH])[INNER]
    torch.testing.assert_close(patch, whole, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_monai_spade_modulates_a_patch_otherwise_than_the_whole_volume() -> None:
    block, segmap = first_spade("monai"), whole_map()
    whole = modulations(block, segmap)[PATCH][INNER]
    patch = modulations(block, segmap[PATCH])[INNER]
    assert (patch - whole).abs().max() > 1e-2


def test_every_spade_block_of_the_unet_is_made_local_and_the_weights_fit_both_kinds() -> None:
    torch.manual_seed(0)
    local = build_unet(dataclasses.replace(UNET, spade="local"), latent_channels=4, num_classes=4)
    monai = build_unet(UNET, latent_channels=4, num_classes=4)
    blocks = [m for m in local.modules() if isinstance(m, SPADE)]
    assert blocks and all(
        isinstance(c.adn, torch.nn.Identity) for b in blocks for c in (b.mlp_gamma, b.mlp_beta)
    )
    assert not any(isinstance(m.mlp_gamma.adn, torch.nn.Identity) for m in monai.modules() if isinstance(m, SPADE))
    local.load_state_dict(monai.state_dict())  # strict: the instance norm has no parameters


def test_cards_without_the_key_build_monai_spade_and_bad_kinds_are_refused(bundle_dir) -> None:
    import json

    card = json.loads((bundle_dir / "model.json").read_text())
    card["unet"].pop("spade", None)
    assert from_dict(ModelCard, card).unet.spade == "monai"
    assert to_dict(dataclasses.replace(UNET, spade="local"))["spade"] == "local"
    with pytest.raises(ValueError, match="unet.spade"):
        dataclasses.replace(UNET, spade="global")
