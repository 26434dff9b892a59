"""Training run folders and configs: one process per run folder, a run killed before its first
checkpoint can start again, a damaged checkpoint is one line with exit 3 and is never unpickled
beyond tensors; bad config values, YAML alias bombs, an output that is a file, and the device choice.
Every failure: one line, its exit code, no traceback."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from MedLSDMLib.cli.main import main
from MedLSDMLib.training.trainer import CHECKPOINT, LOCK_FILE, RUN_FILE, RunLock

from training_data import pairs, vqgan_config  # noqa: F401  (pairs is a fixture)


def one_line(capsys, args, code: int, *words: str) -> str:
    result = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert result == code, err
    assert len(lines) == 1 and lines[0].startswith("medlsdm: error: "), err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 6. Run folders
# ---------------------------------------------------------------------------------------------

def test_a_second_process_on_a_run_folder_is_refused(tmp_path: Path, pairs: Path, capsys) -> None:  # noqa: F811
    config = vqgan_config(tmp_path, pairs, steps=2)
    folder = tmp_path / "vqgan"
    with RunLock(folder):  # what the first training process holds while it runs
        one_line(capsys, ["train", "vqgan", config], 2, "in use by another training process", str(os.getpid()))
        one_line(capsys, ["train", "vqgan", config, "--resume"], 2, "in use by another training process")
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
    assert not folder.exists()  # it held nothing: the refused runs and the lock leave nothing


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_running_training_process_holds_its_folder(tmp_path: Path, pairs: Path, capsys) -> None:  # noqa: F811
    config = vqgan_config(tmp_path, pairs, steps=400, checkpoint_every=1000, adversarial_start=1000)
    folder = tmp_path / "vqgan"
    process = subprocess.Popen([sys.executable, "-m", "MedLSDMLib", "train", "vqgan", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 180
        while not (folder / RUN_FILE).exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert (folder / RUN_FILE).exists(), "the training process did not start"
        one_line(capsys, ["train", "vqgan", config, "--resume"], 2, "in use by another training process",
                 str(process.pid))
        # kill -9 before the first checkpoint: the kernel drops the lock; --resume says what to do ...
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (folder / CHECKPOINT).exists()
    one_line(capsys, ["train", "vqgan", config, "--resume"], 2, "before its first checkpoint", "without --resume")
    # ... and a fresh start starts over
    config.write_text(config.read_text().replace("steps: 400", "steps: 2"))
    assert main(["train", "vqgan", str(config)]) == 0
    assert "starting over" in capsys.readouterr().err
    assert (folder / "bundle" / "model.json").is_file() and not (folder / LOCK_FILE).exists()


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIDENCE}",))


EVIDENCE = "/tmp/medlsdm-audit-pickle-ran"


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "wrong shape":
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["model"] = {k: torch.zeros(3, 3) for k in state["model"]}
        torch.save(state, path)
    elif how == "missing keys":
        torch.save({"step": 1}, path)
    elif how == "malicious pickle":
        buffer = io.BytesIO()
        torch.save({"step": 1, "evil": Evil()}, buffer)
        path.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, pairs: Path) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("run")
    assert main(["train", "vqgan", str(vqgan_config(folder, pairs, steps=2))]) == 0
    return folder


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "wrong shape", "missing keys", "malicious pickle"])
def test_damaged_checkpoint_is_one_line_exit_3(tmp_path: Path, finished_run: Path, capsys, how: str) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    config = run / "vqgan.yaml"
    config.write_text(config.read_text().replace(str(finished_run), str(run)).replace("steps: 2", "steps: 4"))
    record = run / "vqgan" / RUN_FILE
    record.write_text(record.read_text().replace(str(finished_run), str(run)))
    Path(EVIDENCE).unlink(missing_ok=True)
    damage(run / "vqgan" / CHECKPOINT, how)
    one_line(capsys, ["train", "vqgan", config, "--resume"], 3, "checkpoint", "damaged")
    assert not Path(EVIDENCE).exists()  # the pickled code never ran


# ---------------------------------------------------------------------------------------------
# 12. Configs
# ---------------------------------------------------------------------------------------------

def edited(tmp_path: Path, pairs: Path, change) -> Path:  # noqa: F811
    path = vqgan_config(tmp_path, pairs)
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name, change, words", [
    ("nan learning rate", lambda c: c["training"].update(learning_rate=float("nan")), ["learning_rate", "finite"]),
    ("zero learning rate", lambda c: c["training"].update(learning_rate=0.0), ["learning_rate"]),
    ("duplicate label values", lambda c: c["model"]["labels"].append({"value": 2, "name": "again"}),
     ["labels", "2", "more than once"]),
    ("bad orientation", lambda c: c["model"].update(orientation="XYZ"), ["orientation"]),
    ("nan spacing", lambda c: c["model"].update(spacing=[float("nan"), 2.0, 2.0]), ["spacing"]),
])
def test_bad_config_values(tmp_path: Path, pairs: Path, capsys, name, change, words) -> None:  # noqa: F811
    one_line(capsys, ["train", "vqgan", edited(tmp_path, pairs, change)], 2, *words)
    assert not (tmp_path / "vqgan").exists()


def test_output_that_is_a_file(tmp_path: Path, pairs: Path, capsys) -> None:  # noqa: F811
    config = vqgan_config(tmp_path, pairs)
    (tmp_path / "vqgan").write_text("a file in the way")
    one_line(capsys, ["train", "vqgan", config], 2, "is a file")
    assert (tmp_path / "vqgan").read_text() == "a file in the way"


def test_yaml_alias_bomb_is_refused(tmp_path: Path, capsys) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("output: *a11")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 2000
    start = time.perf_counter()
    one_line(capsys, ["train", "vqgan", path], 2, "laughs.yaml", "aliases")
    assert time.perf_counter() - start < 10


def test_yaml_self_reference_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("output: &x [*x]\n")
    one_line(capsys, ["train", "vqgan", path], 2, "loop.yaml")


def test_cuda_without_a_gpu_is_the_generation_message(tmp_path: Path, pairs: Path, capsys,  # noqa: F811
                                                      monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = one_line(capsys, ["train", "vqgan", vqgan_config(tmp_path, pairs), "--device", "cuda"], 2)
    assert line == "medlsdm: error: device cuda was asked for but PyTorch sees no CUDA GPU: use --device cpu"
    assert not (tmp_path / "vqgan").exists()
