"""``--progress``: a mode no reporter knows is one line and exit 2, from argparse or past it."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from MedLSDMLib.cli.main import _main, main


def run_config(folder: Path) -> Path:
    """A VQ-GAN config whose data is never read (the base trainer only checks the run folder)."""
    config = {"output": str(folder / "run"), "data": {"pairs": str(folder / "pairs")},
              "model": {"name": "toy", "labels": [{"value": 0, "name": "background"}, {"value": 1, "name": "a"}]},
              "training": {"steps": 2, "patch_size": [16, 16, 16], "precision": "fp32"}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_unknown_progress_mode_is_one_line_and_exit_2_not_a_keyerror(capsys) -> None:
    """A progress mode no reporter knows (reached past argparse) is one line and exit 2, not a traceback."""
    code = _main(argparse.Namespace(progress="bogus", debug=False, run=lambda *a: 0))
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("medlsdm: error: --progress 'bogus'"), err


def test_train_progress_bogus_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "vqgan", str(run_config(tmp_path)), "--progress", "bogus"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "Traceback" not in err and "--progress" in err and "bogus" in err
