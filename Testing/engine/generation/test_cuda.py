"""Generation on a CUDA GPU (skipped without one; scripts/gpu_check.sh runs it): precision ``auto``
is the GPU's, the output lies exactly on the label map's grid, the same seed gives the same volume
to within GPU arithmetic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedLSDMLib.runtime.hardware import choose_precision

from conftest import assert_grid, brain_labels, generate_args, read, run_cli, write

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_precision_on_this_gpu() -> None:
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert choose_precision("auto", "cuda").name == expected


@pytest.mark.parametrize("sampler", ["dpm", "ddim"])
def test_generation_on_the_gpu_keeps_the_grid_and_the_seed(capfd, tmp_path: Path, bundle_dir: Path,
                                                           sampler: str) -> None:
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    outputs = []
    for name in ("a", "b"):
        output = tmp_path / f"{name}.nii.gz"
        args = list(generate_args(labels, output, bundle_dir, "--sampler", sampler, "--steps", 4))
        args[args.index("--device") + 1] = "cuda"
        result = run_cli(capfd, *args)
        assert result.code == 0, result.err
        outputs.append(read(output))
    assert_grid(outputs[0], read(labels))
    a, b = (sitk.GetArrayFromImage(image) for image in outputs)
    np.testing.assert_allclose(a, b, atol=1e-3 * (np.abs(a).max() + 1))
