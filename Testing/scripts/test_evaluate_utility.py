"""scripts/evaluate_utility.py's own parts (no training): the cropped tissue maps keep every tissue voxel where
it was, the segmenter config is the project's with the arm's data and the shared steps, the targets, and the
table, chart and JSON it writes."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from conftest import array_xyz, brain_array, image_from_xyz, write

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


utility = load("evaluate_utility")


def test_the_cropped_tissue_map_keeps_every_tissue_voxel_at_its_place(tmp_path: Path):
    array = np.zeros((40, 44, 36), dtype=np.uint16)
    array[8:29, 9:36, 10:27] = np.array([0, 24, 3, 41], dtype=np.uint16)[brain_array((21, 27, 17))]  # FreeSurfer's
    # CSF, cortex and right cerebral white matter
    array[1, 1, 1] = 516  # a non-brain label the table maps to background
    source = write(image_from_xyz(array), tmp_path / "aseg.nii.gz")
    utility.cropped_tissue(source, tmp_path / "tissue.nii.gz", utility.TISSUE_MAP)
    cropped = sitk.ReadImage(str(tmp_path / "tissue.nii.gz"))
    assert all(c < s for c, s in zip(cropped.GetSize(), (40, 44, 36)))
    original = sitk.ReadImage(str(source))
    for index in np.argwhere(array_xyz(cropped) > 0)[::97]:
        point = cropped.TransformIndexToPhysicalPoint([int(i) for i in index])
        value = int(array_xyz(original)[tuple(original.TransformPhysicalPointToIndex(point))])
        assert {24: 1, 3: 2, 41: 3}[value] == int(array_xyz(cropped)[tuple(index)])


def test_every_arm_gets_the_projects_config_with_its_data_and_the_shared_steps(tmp_path: Path):
    args = argparse.Namespace(steps=7, patch=32, batch=1)
    configs = [yaml.safe_load(utility.segmenter_config(arm, tmp_path / arm, tmp_path, args).read_text())
               for arm in "AB"]
    project = yaml.safe_load(utility.SEGMENTER_CONFIG.read_text())
    for arm, config in zip("AB", configs):
        assert config["data"]["pairs"] == str(tmp_path / arm) and config["data"]["validation_fraction"] == 0.0
        assert config["training"]["steps"] == 7 and config["training"]["patch_size"] == [32, 32, 32]
        assert config["model"] == project["model"]
    assert {k: v for k, v in configs[0].items() if k not in ("output", "data")} == \
        {k: v for k, v in configs[1].items() if k not in ("output", "data")}


def test_the_targets_table_chart_and_json(tmp_path: Path):
    def arm(mean: float):
        return {"mean_dice": mean, "per_class": {c: mean for c in utility.CLASSES.values()},
                "per_case": {"subject": {}}, "pairs": 4, "seconds": 60.0}

    arms = {"A": arm(0.8), "B": arm(0.7), "C": arm(0.75), "D": arm(0.81)}
    targets = utility.targets(arms)
    assert [t["met"] for t in targets] == [True, True, False]  # C/A = 0.9375
    utility.write_outputs(tmp_path, {"arms": arms, "targets": targets})
    assert json.loads((tmp_path / "utility.json").read_text())["arms"]["C"]["mean_dice"] == 0.75
    table = (tmp_path / "utility.md").read_text()
    assert "| C | MedLSDM | 4 | 0.750 | 0.750 | 0.750 | 0.750 | 1.0 |" in table
    assert "C >= 0.95 x A: missed (C/A = 0.938)" in table
    assert (tmp_path / "utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
