"""Shared fixtures and helpers of the MedLSDMLib test suite.

The suite runs on the CPU with a tiny random-weight bundle built by the package's own API
(session scoped), tiny label maps and few sampling steps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedLSDMLib.models.bundle import ModelBundle
from MedLSDMLib.card import AutoencoderConfig, IntensityConfig, LabelEntry, ModelCard, SchedulerConfig, UNetConfig

REPO = Path(__file__).resolve().parents[1]
# The Slicer logic suite runs in its own environment (slicer-core pins its own vtk): `make test`
# runs it with --confcutdir=Testing/Slicer, so this conftest is not loaded there.
collect_ignore = ["Slicer", "SlicerModule"]

# The networks are tiny: one thread is as fast as two, and stays fast when other jobs share the
# CPU (busy-waiting OpenMP threads slow down many times on an oversubscribed machine).
torch.set_num_threads(1)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMESTEPS = 20  # the tiny model's training steps: ddpm/reference samplers run all of them
LOW, HIGH = -100.0, 300.0  # the tiny model's intensity window
CLASS_TABLE = "0=background, 1=csf, 2=grey matter, 3=white matter"
MODEL_SPACING = (2.0, 2.0, 2.0)


# ---------------------------------------------------------------------------------------------
# The tiny model
# ---------------------------------------------------------------------------------------------

def tiny_card(name: str = "tiny-brain", timesteps: int = TIMESTEPS, **overrides: Any) -> ModelCard:
    """A model card for a tiny brain MRI model with 4 classes."""
    fields: Dict[str, Any] = dict(
        name=name,
        labels=[LabelEntry(0, "background", (0.0, 0.0, 0.0)), LabelEntry(1, "csf", (0.2, 0.4, 0.9)),
                LabelEntry(2, "grey matter", (0.6, 0.6, 0.6)), LabelEntry(3, "white matter", (0.95, 0.95, 0.95))],
        spacing=MODEL_SPACING,
        orientation="RAS",
        modality="MRI",
        description="tiny random-weight model for the tests",
        intensity=IntensityConfig(mode="window", low=LOW, high=HIGH),
        autoencoder=AutoencoderConfig(channels=(8, 8), num_res_layers=1, num_res_channels=(8, 8),
                                      latent_channels=4, num_embeddings=16),
        unet=UNetConfig(channels=(8, 16), attention_levels=(False, True), num_res_blocks=1, norm_num_groups=4,
                        num_head_channels=8, spade_intermediate_channels=8),
        scheduler=SchedulerConfig(kind="ddpm", num_train_timesteps=timesteps, schedule="cosine",
                                  prediction_type="epsilon"),
        default_guidance=2.0,
        training={"note": "random weights"},
    )
    fields.update(overrides)
    return ModelCard(**fields)


def make_bundle(card: ModelCard, seed: int = 0) -> ModelBundle:
    """Random networks for ``card``. MONAI zero-initialises the UNet's output convolutions, which
    would make the UNet output 0 whatever the label map; they get small random weights here so that
    the conditioning and the guidance really change the result."""
    torch.manual_seed(seed)
    bundle = ModelBundle.create(card)
    with torch.no_grad():
        for parameter in bundle.unet.parameters():
            if parameter.dim() > 1 and not parameter.abs().any():
                parameter.normal_(0.0, 0.05)
    bundle.autoencoder.eval()
    bundle.unet.eval()
    return bundle


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny bundle folder (model.json + two safetensors files). Tests must not modify it:
    copy it first (``copy_bundle``)."""
    folder = tmp_path_factory.mktemp("bundle") / "tiny-brain"
    make_bundle(tiny_card()).save(folder)
    return folder


@pytest.fixture(scope="session")
def generator(bundle_dir: Path):
    """The tiny bundle loaded for in-process generation on the CPU."""
    from MedLSDMLib.generation.pipeline import Generator

    return Generator.load(bundle_dir, device="cpu")


# ---------------------------------------------------------------------------------------------
# Geometry and label maps
# ---------------------------------------------------------------------------------------------

def rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    """A 3x3 rotation matrix about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    a = np.deg2rad(degrees)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * cross + (1 - np.cos(a)) * cross @ cross


OBLIQUE = rotation((1.0, 2.0, 3.0), 25.0)  # not a flip or a permutation: a real obliquity
ODD_SIZE = (21, 27, 17)  # x, y, z
ANISOTROPIC = (1.3, 0.9, 2.5)
ORIGIN = (10.25, -5.5, 3.125)


def image_from_xyz(array: np.ndarray, spacing: Sequence[float] = ANISOTROPIC, origin: Sequence[float] = ORIGIN,
                   direction: np.ndarray = OBLIQUE) -> sitk.Image:
    """A SimpleITK image from an (x, y, z) array with the given geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection(np.asarray(direction, dtype=float).flatten().tolist())
    return image


def brain_array(size: Sequence[int] = ODD_SIZE) -> np.ndarray:
    """An (x, y, z) uint8 map: nested ellipsoids of csf (1) ⊃ grey matter (2) ⊃ white matter (3)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in size], indexing="ij")
    radius = np.sqrt(sum(g ** 2 for g in grids))
    array = np.zeros(tuple(size), dtype=np.uint8)
    array[radius < 0.95] = 1
    array[radius < 0.7] = 2
    array[radius < 0.4] = 3
    return array


def brain_labels(size: Sequence[int] = ODD_SIZE, spacing: Sequence[float] = ANISOTROPIC,
                 origin: Sequence[float] = ORIGIN, direction: np.ndarray = OBLIQUE,
                 dtype: Optional[type] = None) -> sitk.Image:
    """The default test label map: odd-sized, anisotropic and oblique, classes 0-3."""
    array = brain_array(size)
    if dtype is not None:
        array = array.astype(dtype)
    return image_from_xyz(array, spacing, origin, direction)


def region_array(size: Sequence[int]) -> np.ndarray:
    """An (x, y, z) map split into four unequal blocks of classes 0-3 by planes across x and y: big
    regions with planar borders, so a transposed or flipped axis puts the wrong class in them."""
    x0, y0 = int(size[0] * 0.35), int(size[1] * 0.6)
    array = np.zeros(tuple(size), dtype=np.uint8)
    array[x0:, :y0] = 1
    array[:x0, y0:] = 2
    array[x0:, y0:] = 3
    return array


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def array_xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def assert_grid(image: sitk.Image, expected: sitk.Image, atol: float = 1e-6) -> None:
    """``image`` has exactly ``expected``'s size, and its spacing, origin and direction within atol."""
    assert image.GetSize() == expected.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), expected.GetSpacing(), rtol=0, atol=atol)
    np.testing.assert_allclose(image.GetOrigin(), expected.GetOrigin(), rtol=0, atol=atol)
    np.testing.assert_allclose(image.GetDirection(), expected.GetDirection(), rtol=0, atol=atol)


def folder_entries(folder: Path) -> List[str]:
    """Every name in ``folder``, hidden ones included."""
    return sorted(p.name for p in Path(folder).iterdir())


def assert_no_output(folder: Path, expected: Sequence[str]) -> None:
    """The folder holds exactly the ``expected`` names: no output, no hidden .partial file."""
    assert folder_entries(folder) == sorted(expected)


# ---------------------------------------------------------------------------------------------
# Running the command line
# ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> List[str]:
        return self.err.splitlines()

    @property
    def out_lines(self) -> List[str]:
        return self.out.splitlines()

    def events(self) -> List[Dict[str, Any]]:
        """stdout parsed as the worker protocol: every line must be one JSON object."""
        events = []
        for line in self.out_lines:
            event = json.loads(line)
            assert isinstance(event, dict), line
            events.append(event)
        return events


def run_cli(capture: pytest.CaptureFixture, *args: Any) -> Result:
    """``medlsdm ARGS`` in this process, output captured with ``capture`` (capfd: also what C++
    libraries write to the file descriptors). The command installs SIGINT/SIGTERM handlers; they
    are put back afterwards so that the test process keeps its own."""
    from MedLSDMLib.cli.main import main

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    capture.readouterr()
    try:
        code = main([str(a) for a in args])
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    captured = capture.readouterr()
    return Result(code, captured.out, captured.err)


def subprocess_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("MEDLSDM_RESOURCES", None)
    env.update(THREAD_ENV)
    env.update(extra)
    return env


def run_subprocess(*args: Any, module: str = "MedLSDMLib", env: Optional[Dict[str, str]] = None,
                   timeout: float = 300) -> Result:
    """``python -m MODULE ARGS`` in a new process (the real command, end to end)."""
    completed = subprocess.run([sys.executable, "-m", module, *[str(a) for a in args]], capture_output=True,
                               text=True, env=env or subprocess_env(), cwd=str(REPO), timeout=timeout)
    return Result(completed.returncode, completed.stdout, completed.stderr)


def terminal_lines(text: str) -> List[str]:
    """The lines a terminal shows: a progress bar redrawn and erased with carriage returns leaves
    only what follows the last one on its line."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")][:-1 if text.endswith("\n") else None]


def assert_one_line_error(result: Result, code: int, *words: str, after_progress_bar: bool = False) -> str:
    """Exit ``code``, exactly one line on stderr, no traceback, naming each of ``words``. Only with
    ``after_progress_bar`` may an erased progress bar (a download's) come before the line."""
    assert "Traceback" not in result.err, result.err
    assert result.code == code, (result.code, result.err)
    lines = terminal_lines(result.err) if after_progress_bar else result.err_lines
    assert len(lines) == 1 and result.err.endswith("\n"), result.err
    line = lines[0]
    assert line.startswith("medlsdm: error: "), line
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    return line


def generate_args(labels: Path, output: Path, model: Path, *extra: Any, steps: Optional[int] = 2,
                  seed: Optional[int] = 1) -> Tuple[str, ...]:
    """``generate`` arguments with the test defaults (CPU, few steps, a fixed seed)."""
    args: List[Any] = ["generate", labels, "-o", output, "--model", model, "--device", "cpu"]
    if steps is not None:
        args += ["--steps", steps]
    if seed is not None:
        args += ["--seed", seed]
    return tuple(str(a) for a in [*args, *extra])


@pytest.fixture
def labels_path(tmp_path: Path) -> Path:
    """The default label map as a NIfTI file in a folder of its own."""
    folder = tmp_path / "in"
    folder.mkdir()
    return write(brain_labels(), folder / "labels.nii.gz")
