"""The base trainer's shared parts: the device check it shares with generation, the atomic run.json
(a run killed while writing it starts over), and the training record."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from MedLSDMLib.errors import InputError
from MedLSDMLib.training.config import VQGANRun, load_run_config
from MedLSDMLib.training.distributed import setup
from MedLSDMLib.training.trainer import CHECKPOINT, PARTIAL_CHECKPOINT, RUN_FILE, Trainer


def run_config(folder: Path) -> Path:
    """A VQ-GAN config whose data is never read (the base trainer only checks the run folder)."""
    config = {"output": str(folder / "run"), "data": {"pairs": str(folder / "pairs")},
              "model": {"name": "toy", "labels": [{"value": 0, "name": "background"}, {"value": 1, "name": "a"}]},
              "training": {"steps": 2, "patch_size": [16, 16, 16], "precision": "fp32"}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_training_asked_for_cuda_without_a_gpu_is_the_generation_error(monkeypatch) -> None:
    """Training asked for CUDA without a GPU says what generation says; auto falls back to the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="device cuda was asked for but PyTorch sees no CUDA GPU: use --device cpu"):
        setup("cuda")
    assert setup("auto").device.type == "cpu"


def test_run_json_is_written_atomically_and_a_run_killed_while_writing_it_starts_over(tmp_path: Path) -> None:
    """run.json goes through interrupt.staged_file; a run killed while writing it leaves only early files,
    so the next start begins again instead of refusing a folder that 'already holds a run'."""
    config = load_run_config(run_config(tmp_path), VQGANRun)
    output = Path(config.output)
    output.mkdir()
    (output / RUN_FILE).write_text("{}")
    (output / ".run.partial-12345.json").write_text('{"stage"')
    assert PARTIAL_CHECKPOINT.fullmatch(".run.partial-12345.json")
    assert PARTIAL_CHECKPOINT.fullmatch(".checkpoint.partial-7.pt")
    trainer: Trainer = Trainer(config, device="cpu")
    assert trainer.restart
    trainer.open_run()
    assert sorted(p.name for p in output.iterdir()) == ["figures", RUN_FILE]
    assert '"stage": "stage"' in (output / RUN_FILE).read_text()
    assert not (output / CHECKPOINT).exists()


def test_the_training_record_is_the_base_trainers(tmp_path: Path) -> None:
    config = load_run_config(run_config(tmp_path), VQGANRun)
    trainer: Trainer = Trainer(config, device="cpu")
    trainer.step, trainer.seconds = 7, 12.345
    trainer.data_summary = {"training": [], "validation": ["a"], "sources": []}
    record = trainer.record()
    assert record["steps"] == 7 and record["seconds"] == 12.3 and record["world_size"] == 1
    assert record["config"]["output"] == config.output and record["data"]["validation"] == ["a"]
    module = torch.nn.Linear(2, 2)
    assert trainer.parallel(module) is module  # alone: no DistributedDataParallel
