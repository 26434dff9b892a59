"""The model bundle: a good one loads and verifies; every kind of damage is a ModelError (exit 3,
one line) that says what is wrong."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Sequence

import pytest
import torch

from MedLSDMLib.models.bundle import AUTOENCODER_FILE, DIFFUSION_FILE, ModelBundle, sha256
from MedLSDMLib.card import CARD_FILE
from MedLSDMLib.card import AutoencoderConfig, UNetConfig
from MedLSDMLib.errors import ModelError

from conftest import (assert_no_output, assert_one_line_error, generate_args, make_bundle, run_cli,
                      run_subprocess, tiny_card)


def copy_bundle(bundle_dir: Path, target: Path) -> Path:
    shutil.copytree(bundle_dir, target)
    return target


def edit_card(folder: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((folder / CARD_FILE).read_text())
    change(data)
    (folder / CARD_FILE).write_text(json.dumps(data))


def rehash(folder: Path, name: str) -> None:
    """Record the file's current SHA-256 in model.json, as a careless hand edit would."""
    edit_card(folder, lambda card: card["weights"].__setitem__(name, sha256(folder / name)))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 10] ^= 0x01  # a byte of the tensor data, not of the header
    path.write_bytes(bytes(data))


def foreign_weights(folder: Path, name: str, **card_changes) -> None:
    """Replace ``name`` by the weights of a model of another configuration, with the right hash."""
    other = make_bundle(tiny_card(**card_changes), seed=1).save(folder.parent / "other-model")
    shutil.copy(other / name, folder / name)
    rehash(folder, name)


class Damage(NamedTuple):
    apply: Callable[[Path], None]
    words: Sequence[str]


DAMAGES: Dict[str, Damage] = {
    "no model.json": Damage(lambda f: (f / CARD_FILE).unlink(), [CARD_FILE, "not a MedLSDM bundle"]),
    "invalid JSON": Damage(lambda f: (f / CARD_FILE).write_text('{"name": "tiny-brain", '),
                           ["not valid JSON", "download it again"]),
    "not UTF-8": Damage(lambda f: (f / CARD_FILE).write_bytes(b"\xff\xfe\x00garbage"), ["not valid JSON"]),
    "unknown key": Damage(lambda f: edit_card(f, lambda c: c.__setitem__("colour_map", "jet")),
                          ["unknown key(s) colour_map"]),
    "unknown nested key": Damage(lambda f: edit_card(f, lambda c: c["unet"].__setitem__("dropout", 0.1)),
                                 ["unet", "dropout"]),
    "wrong type": Damage(lambda f: edit_card(f, lambda c: c.__setitem__("spacing", "2 2 2")),
                         ["spacing", "expected a list"]),
    "weights not an object": Damage(lambda f: edit_card(f, lambda c: c.__setitem__("weights", [])),
                                    ["weights", "expected an object"]),
    "invalid value": Damage(lambda f: edit_card(f, lambda c: c["scheduler"].__setitem__("kind", "ddxm")),
                            ["scheduler.kind"]),
    "no hash recorded": Damage(lambda f: edit_card(f, lambda c: c["weights"].pop(DIFFUSION_FILE)),
                               [DIFFUSION_FILE, "no SHA-256"]),
    "missing autoencoder": Damage(lambda f: (f / AUTOENCODER_FILE).unlink(), [AUTOENCODER_FILE, "missing"]),
    "missing diffusion": Damage(lambda f: (f / DIFFUSION_FILE).unlink(), [DIFFUSION_FILE, "missing"]),
    "truncated": Damage(lambda f: truncate(f / DIFFUSION_FILE), [DIFFUSION_FILE, "SHA-256", "damaged"]),
    "one byte changed": Damage(lambda f: flip_one_byte(f / AUTOENCODER_FILE), [AUTOENCODER_FILE, "SHA-256"]),
    "truncated, hash fixed up": Damage(lambda f: (truncate(f / DIFFUSION_FILE), rehash(f, DIFFUSION_FILE)),
                                       [DIFFUSION_FILE, "not a valid safetensors file"]),
    "UNet of another config": Damage(
        lambda f: foreign_weights(f, DIFFUSION_FILE, unet=UNetConfig(channels=(8, 8), attention_levels=(False, False),
                                                                      num_res_blocks=1, norm_num_groups=4,
                                                                      num_head_channels=8,
                                                                      spade_intermediate_channels=8)),
        [DIFFUSION_FILE, "does not fit", CARD_FILE]),
    "autoencoder of another config": Damage(
        lambda f: foreign_weights(f, AUTOENCODER_FILE, autoencoder=AutoencoderConfig(
            channels=(8, 8), num_res_layers=1, num_res_channels=(8, 8), latent_channels=3, num_embeddings=16)),
        [AUTOENCODER_FILE, "does not fit"]),
    "weights swapped": Damage(lambda f: ((f / AUTOENCODER_FILE).rename(f / "x"),
                                         (f / DIFFUSION_FILE).rename(f / AUTOENCODER_FILE),
                                         (f / "x").rename(f / DIFFUSION_FILE),
                                         rehash(f, AUTOENCODER_FILE), rehash(f, DIFFUSION_FILE)),
                              ["does not fit"]),
}


@pytest.fixture
def good_bundle(tmp_path: Path, bundle_dir: Path) -> Path:
    return copy_bundle(bundle_dir, tmp_path / "models" / "tiny-brain")


def test_good_bundle_loads_the_saved_weights(bundle_dir: Path) -> None:
    saved = make_bundle(tiny_card())  # the same seed as the session bundle
    loaded = ModelBundle.load(bundle_dir)
    expected = tiny_card()
    expected.weights = {name: sha256(bundle_dir / name) for name in (AUTOENCODER_FILE, DIFFUSION_FILE)}
    assert loaded.card == expected
    for mine, theirs in ((saved.unet, loaded.unet), (saved.autoencoder, loaded.autoencoder)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not loaded.unet.training and not loaded.autoencoder.training
    assert loaded.path == bundle_dir


def test_save_in_half_precision_loads(tmp_path: Path) -> None:
    bundle = make_bundle(tiny_card())
    folder = bundle.save(tmp_path / "half", dtype=torch.float16)
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, AUTOENCODER_FILE, DIFFUSION_FILE])
    loaded = ModelBundle.load(folder)
    weight = next(loaded.unet.parameters())
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, next(bundle.unet.parameters()).half().float())


def test_verify_a_good_bundle(capfd, good_bundle: Path) -> None:
    result = run_cli(capfd, "models", "verify", good_bundle)
    assert result.code == 0, result.err
    assert result.out.startswith("OK: tiny-brain 0.1.0")
    info = run_cli(capfd, "models", "info", good_bundle)
    assert info.code == 0, info.err
    assert "0=background, 1=csf, 2=grey matter, 3=white matter" in info.out
    assert "window, [-1, 1] <-> [-100, 300]" in info.out


def test_missing_folder(capfd, tmp_path: Path, labels_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError):
        ModelBundle.load(missing)
    assert_one_line_error(run_cli(capfd, "models", "verify", missing), 3, "no-such-model")
    result = run_cli(capfd, *generate_args(labels_path, tmp_path / "o.nii.gz", missing))
    assert_one_line_error(result, 3, "no-such-model", "neither a bundle folder nor a known model")
    assert not (tmp_path / "o.nii.gz").exists()


def test_a_file_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "model.zip").write_bytes(b"PK")
    with pytest.raises(ModelError, match="is not a folder"):
        ModelBundle.load(tmp_path / "model.zip")


@pytest.mark.parametrize("name", list(DAMAGES))
def test_damaged_bundle(capfd, tmp_path: Path, good_bundle: Path, labels_path: Path, name: str) -> None:
    damage = DAMAGES[name]
    damage.apply(good_bundle)

    with pytest.raises(ModelError) as raised:
        ModelBundle.load(good_bundle)
    message = str(raised.value)
    assert "\n" not in message
    for word in damage.words:
        assert word.lower() in message.lower(), (word, message)

    assert_one_line_error(run_cli(capfd, "models", "verify", good_bundle), 3, *damage.words)

    outputs = tmp_path / "out"
    outputs.mkdir()
    result = run_cli(capfd, *generate_args(labels_path, outputs / "synthetic.nii.gz", good_bundle))
    assert_one_line_error(result, 3, *damage.words)
    assert_no_output(outputs, [])


@pytest.mark.slow
@pytest.mark.subprocess
def test_damaged_bundle_end_to_end(tmp_path: Path, good_bundle: Path) -> None:
    DAMAGES["one byte changed"].apply(good_bundle)
    result = run_subprocess("models", "verify", good_bundle)
    assert_one_line_error(result, 3, AUTOENCODER_FILE, "SHA-256")
    missing = run_subprocess("models", "verify", good_bundle.parent.parent / "missing")
    assert_one_line_error(missing, 3, "missing")


def test_saved_weights_get_the_usual_file_permissions(tmp_path: Path) -> None:
    """safetensors creates its files 0600; a bundle folder shared with others must be readable by them."""
    import os
    import stat

    folder = make_bundle(tiny_card()).save(tmp_path / "bundle")
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("autoencoder.safetensors", "diffusion.safetensors", "model.json"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o666 & ~mask, name
