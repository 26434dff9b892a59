"""3D-FID and MMD: the Fréchet distance against its closed form, the two-volume minimum, feature rows that
are all real features, and loading the user's feature network weights (safetensors, MedicalNet files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import resnet10, resnet18
from safetensors.torch import save_file

from MedLSDMLib.errors import InputError
from MedLSDMLib.evaluation.fid import feature_network, features, frechet_distance, frechet_from_statistics, mmd

MU1, SIGMA1 = np.array([0.0, 0.0, 0.0]), np.diag([1.0, 4.0, 9.0])
MU2, SIGMA2 = np.array([1.0, 2.0, 2.0]), np.diag([4.0, 4.0, 1.0])
# |mu1 - mu2|^2 = 9; for commuting covariances tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt a - sqrt b)^2 = 1 + 0 + 4
CLOSED_FORM = 14.0


def test_frechet_distance_of_known_gaussians() -> None:
    assert frechet_from_statistics(MU1, SIGMA1, MU2, SIGMA2) == pytest.approx(CLOSED_FORM, abs=1e-9)
    assert frechet_from_statistics(MU1, SIGMA1, MU1, SIGMA1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_with_non_commuting_covariances() -> None:
    """Against the symmetric form tr((S1^½ S2 S1^½)^½), computed by eigendecomposition."""
    s1, s2 = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 0.3], [0.3, 3.0]])
    values, vectors = np.linalg.eigh(s1)
    root1 = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    cross = np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1)).sum()
    expected = 0.25 + np.trace(s1) + np.trace(s2) - 2 * cross
    assert frechet_from_statistics(np.zeros(2), s1, np.array([0.5, 0.0]), s2) == pytest.approx(expected, abs=1e-9)


def test_frechet_distance_of_gaussian_samples_approaches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    real = rng.multivariate_normal(MU1, SIGMA1, 40000)
    synthetic = rng.multivariate_normal(MU2, SIGMA2, 40000)
    assert frechet_distance(real, synthetic) == pytest.approx(CLOSED_FORM, abs=0.3)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)


def test_fewer_than_two_volumes_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="at least two volumes"):
        frechet_distance(np.ones((1, 8)), np.ones((5, 8)))
    with pytest.raises(InputError, match="at least two volumes"):
        mmd(np.ones((1, 8)), np.ones((1, 8)))


def test_mmd_is_the_unbiased_linear_kernel_estimate() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, (6, 4)), rng.normal(0.5, 1, (6, 4))
    xx, yy, xy = x @ x.T, y @ y.T, x @ y.T
    by_hand = ((xx.sum() - np.trace(xx)) / 30 + (yy.sum() - np.trace(yy)) / 30 - 2 * xy.sum() / 36)
    assert mmd(x, y) == pytest.approx(by_hand, rel=1e-9)
    big_x, big_y = rng.normal(0, 1, (1500, 3)), rng.normal([1, 0, 0], 1, (1500, 3))
    assert mmd(big_x, big_y) == pytest.approx(1.0, abs=0.15)  # the squared distance of the means


def medicalnet_resnet10() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("fid")
    network = medicalnet_resnet10().eval()
    state = network.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "resnet10.safetensors"))
    medicalnet = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    medicalnet["state_dict"]["module.conv_seg.0.weight"] = torch.zeros(2, 512, 1, 1, 1)  # its segmentation head
    torch.save(medicalnet, folder / "resnet_10.pth")
    torch.save(resnet18(spatial_dims=3, n_input_channels=1, feed_forward=False).state_dict(), folder / "resnet18.pth")
    (folder / "garbage.pth").write_bytes(b"not a checkpoint")
    return {"network": network, "folder": folder}


def volumes(count: int):
    rng = np.random.default_rng(2)
    mask = np.zeros((16, 18, 14), bool)
    mask[2:14, 3:15, 2:12] = True
    return [(rng.normal(50 * k, 10 + k, mask.shape).astype(np.float32), mask) for k in range(count)]


def test_every_feature_row_is_the_feature_of_its_volume(weights) -> None:
    loaded = feature_network("resnet10", weights["folder"] / "resnet10.safetensors")
    data = volumes(3)
    rows = features(loaded, data)
    assert rows.shape == (3, 512) and np.isfinite(rows).all()
    for row, (volume, mask) in zip(rows, data):
        scaled = (volume - volume[mask].mean()) / volume[mask].std()
        with torch.no_grad():
            expected = weights["network"](torch.from_numpy(scaled.astype(np.float32))[None, None])[0].numpy()
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
        assert np.abs(row).sum() > 0
    assert not np.allclose(rows[0], rows[1])


def test_medicalnet_checkpoints_load_like_safetensors(weights) -> None:
    data = volumes(2)
    a = features(feature_network("resnet10", weights["folder"] / "resnet10.safetensors"), data)
    b = features(feature_network("resnet10", weights["folder"] / "resnet_10.pth"), data)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, network, words", [
    ("resnet18.pth", "resnet10", "does not fit resnet10"),  # deeper weights: its extra blocks must not be dropped
    ("resnet_10.pth", "resnet18", "does not fit resnet18"),
    ("garbage.pth", "resnet10", "cannot be read"),
    ("missing.safetensors", "resnet10", "does not exist"),
    ("resnet10.safetensors", "vgg16", "use one of"),
])
def test_unusable_weights_are_input_errors(weights, name: str, network: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        feature_network(network, Path(weights["folder"]) / name)


def test_few_volumes_take_the_small_matrix_route_to_the_same_distance() -> None:
    """With fewer volumes than features, FID from the rows equals the covariance formula."""
    rng = np.random.default_rng(3)
    real, synthetic = rng.normal(0, 1, (4, 40)), rng.normal(0.3, 1.5, (6, 40))
    expected = frechet_from_statistics(real.mean(0), np.cov(real, rowvar=False), synthetic.mean(0),
                                       np.cov(synthetic, rowvar=False))
    assert frechet_distance(real, synthetic) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(synthetic, real) == pytest.approx(expected, rel=1e-6)
