"""3D-FID and MMD on the features of a 3D ResNet whose weights the user provides (never downloaded).

Features: the globally average-pooled output of the ResNet's last stage (MONAI ``resnet*`` with
``feed_forward=False``), one row per volume, each volume z-scored inside its label map's foreground
(MedicalNet's normalisation) and fed at its own grid. Rows are stacked from real features only: no
preallocated buffer, so no row can be left uninitialised.

FID = |μ_r − μ_s|² + tr(Σ_r + Σ_s − 2 (Σ_r Σ_s)^½), in float64, the matrix square root by
scipy.linalg.sqrtm: of Σ_r Σ_s when there are at least as many volumes as features (with a 1e-6 ridge on
both covariances when that root is not finite or does not square back to the product), else of the small
matrix with the same nonzero eigenvalues (``_trace_sqrt_from_rows``); a numerically complex root's
negligible imaginary part is dropped. MMD is MONAI's ``MMDMetric``: the unbiased MMD² estimate with a
linear kernel between the two feature sets.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

import numpy as np
import scipy.linalg
import torch
from monai.metrics import MMDMetric
from monai.networks import nets
from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

from MedLSDMLib.errors import InputError

NETWORKS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")
RIDGE = 1e-6


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file (weights_only); MedicalNet's ``state_dict`` wrapper
    and DataParallel's ``module.`` prefixes are removed."""
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # each format raises its own kinds for a bad file
        raise InputError(
            f"--fid-weights {path} cannot be read as safetensors or a PyTorch state dict "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"--fid-weights {path} does not hold a state dict of tensors")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def feature_network(name: str, weights: Path) -> torch.nn.Module:
    """MONAI's 3D ResNet ``name`` (MedicalNet's shortcut and bias settings) with the user's weights.
    Every parameter of the network must come from the file; extra entries (a segmentation head) are ignored."""
    if name not in NETWORKS:
        raise InputError(f"--fid-network {name}: use one of {', '.join(NETWORKS)}")
    weights = Path(weights)
    if not weights.is_file():
        raise InputError(f"--fid-weights {weights} does not exist: give the feature network's weights file")
    bias_downsample, shortcut_type = get_medicalnet_pretrained_resnet_args(int(name[len("resnet") :]))
    network = getattr(nets, name)(
        spatial_dims=3,
        n_input_channels=1,
        feed_forward=False,
        shortcut_type=shortcut_type,
        bias_downsample=bias_downsample,
    )
    state = _read_state(weights)
    expected = network.state_dict()
    backbone = {child for child, _ in network.named_children()}
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    extra = [k for k in state if k not in expected and k.split(".")[0] in backbone]  # e.g. a deeper ResNet's blocks
    if missing or wrong or extra:
        first = (missing or wrong or extra)[0]
        raise InputError(
            f"--fid-weights {weights.name} does not fit {name} ({len(missing)} tensors missing, "
            f"{len(wrong)} of another shape, {len(extra)} unknown, e.g. {first}): give --fid-network "
            "the depth the weights were trained with"
        )
    network.load_state_dict({k: state[k] for k in expected}, strict=True)
    return network.eval()


@torch.no_grad()
def features(network: torch.nn.Module, volumes: Iterable[Tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One feature row per (volume, foreground mask), the volume z-scored inside the mask."""
    rows = []
    for volume, mask in volumes:
        values = volume[mask]
        scaled = (volume - values.mean()) / (values.std() or 1.0)
        tensor = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))[None, None]
        rows.append(network(tensor)[0].double().numpy())
    return np.stack(rows)


def _check_sets(real: np.ndarray, synthetic: np.ndarray, what: str) -> None:
    if min(len(real), len(synthetic)) < 2:
        raise InputError(
            f"{what} needs at least two volumes in each set (got {len(real)} real, "
            f"{len(synthetic)} synthetic): evaluate more cases, or leave out --fid-weights"
        )
    if real.shape[1] != synthetic.shape[1]:
        raise InputError(f"{what}: the feature sets have {real.shape[1]} and {synthetic.shape[1]} features")


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's matrix square root; its warning for singular input is handled by the caller's check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(matrix)


def frechet_from_statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    product = sigma1 @ sigma2
    root = _sqrtm(product)
    scale = np.abs(product).max() or 1.0
    if not np.isfinite(root).all() or np.abs(root @ root - product).max() > 1e-6 * scale:
        ridge = RIDGE * np.eye(len(sigma1))
        root = _sqrtm((sigma1 + ridge) @ (sigma2 + ridge))
    root = np.real(root)
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


def _trace_sqrt_from_rows(real: np.ndarray, synthetic: np.ndarray) -> float:
    """tr (Σ_r Σ_s)^½ from the centred rows A, B: Σ_r Σ_s has the nonzero eigenvalues of the small symmetric
    matrix (A Bᵀ)(B Aᵀ) / ((n_r − 1)(n_s − 1)), so its root is taken there (exact; fast and accurate when
    there are fewer volumes than features, where Σ_r Σ_s itself is singular)."""
    a, b = real - real.mean(axis=0), synthetic - synthetic.mean(axis=0)
    if len(a) > len(b):
        a, b = b, a
    cross = a @ b.T
    gram = cross @ cross.T / ((len(a) - 1) * (len(b) - 1))
    root = _sqrtm((gram + gram.T) / 2)
    if not np.isfinite(root).all():
        root = _sqrtm((gram + gram.T) / 2 + RIDGE * np.eye(len(gram)))
    return float(np.trace(np.real(root)))


def frechet_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """3D-FID between two feature sets (rows are volumes); at least two rows in each."""
    _check_sets(real, synthetic, "3D-FID")
    real, synthetic = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    if min(len(real), len(synthetic)) >= real.shape[1]:
        return frechet_from_statistics(
            real.mean(axis=0), np.cov(real, rowvar=False), synthetic.mean(axis=0), np.cov(synthetic, rowvar=False)
        )
    difference = real.mean(axis=0) - synthetic.mean(axis=0)
    traces = np.var(real, axis=0, ddof=1).sum() + np.var(synthetic, axis=0, ddof=1).sum()
    return float(difference @ difference + traces - 2 * _trace_sqrt_from_rows(real, synthetic))


def mmd(real: np.ndarray, synthetic: np.ndarray) -> float:
    """MONAI's unbiased linear-kernel MMD² between two feature sets of equal size."""
    _check_sets(real, synthetic, "MMD")
    if len(real) != len(synthetic):
        raise InputError(f"MMD needs as many synthetic as real volumes (got {len(synthetic)} and {len(real)})")
    return float(MMDMetric()(torch.from_numpy(real), torch.from_numpy(synthetic)).item())
