"""Stops at the edges of a run end with 130 within 3 s, in the command (``python -m MedLSDMLib``) and
the worker: a signal while the command line module is still being imported (the handlers come first),
while torch is being imported (start-up is interruptible: at once, not after the grace), right after the
``done`` event and after the command returned (the handlers stay until the process ends, which it does
at once); and a worker whose stdout is closed from the start ends like a reader that went away (130,
nothing written, no traceback). Each stop is sent by the process itself at the named moment, so that
the test does not race with the machine's load."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import REPO, brain_labels, folder_entries, subprocess_env, write

# Runs an entry point (MedLSDMLib or MedLSDMLib.worker) as `python -m` does, with SIGTERM sent to itself
# at one moment: when a module starts to be imported ("import:NAME"), or after a function or method
# returns ("after:MODULE:NAME[.METHOD]"). It prints the monotonic time of the signal first.
SELF_STOP = """
import importlib, importlib.abc, os, runpy, signal, sys, time

module, moment = sys.argv[1], sys.argv[2]
sys.argv = [module] + sys.argv[3:]

def stop():
    print(f"stop-at {time.monotonic()}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

kind, _, where = moment.partition(":")
if kind == "import":
    class StopOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == where:
                stop()
            return None
    sys.meta_path.insert(0, StopOnImport())
else:
    module_name, _, names = where.partition(":")
    owner = importlib.import_module(module_name)
    *path, attribute = names.split(".")
    for name in path:
        owner = getattr(owner, name)
    original = getattr(owner, attribute)
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        stop()
        return result
    setattr(owner, attribute, wrapped)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
MODULES = ["MedLSDMLib", "MedLSDMLib.worker"]


def run_self_stopping(module: str, moment: str, args: List[str]) -> Tuple[int, float, str, str]:
    """Exit code, seconds from the signal to the end of the process, stdout, stderr."""
    completed = subprocess.run([sys.executable, "-c", SELF_STOP, module, moment, *args], capture_output=True,
                               text=True, env=subprocess_env(), cwd=str(REPO), timeout=120)
    ended = time.monotonic()
    stops = [float(line.split()[1]) for line in completed.stderr.splitlines() if line.startswith("stop-at ")]
    assert stops, f"the stop was not reached: {completed}"
    return completed.returncode, ended - stops[0], completed.stdout, completed.stderr


def command(module: str, labels: Path, output: Path, model: Path) -> List[str]:
    args = [str(labels), "-o", str(output), "--model", str(model), "--device", "cpu", "--steps", "2", "--seed", "1"]
    return ["generate", *args, "--progress", "json"] if module == "MedLSDMLib" else args


@pytest.fixture
def folders(tmp_path: Path) -> Tuple[Path, Path]:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    write(brain_labels(), inputs / "labels.nii.gz")
    return inputs / "labels.nii.gz", outputs


def messages(err: str) -> List[str]:
    return [line for line in err.splitlines() if not line.startswith("stop-at ")]


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("moment", ["import:MedLSDMLib.cli.main", "import:torch"])
def test_a_stop_during_start_up_is_130_at_once(folders, bundle_dir: Path, module: str, moment: str) -> None:
    """Before the work has written anything a stop ends the process at once, said in the worker protocol."""
    labels, outputs = folders
    code, seconds, out, err = run_self_stopping(module, moment, command(module, labels, outputs / "o.nii.gz",
                                                                        bundle_dir))
    assert code == 130, (code, err)
    assert "Traceback" not in err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["type"] == "error" and events[-1]["kind"] == "cancelled", events
    assert messages(err) == [f"medlsdm: error: {events[-1]['message']}"]
    assert folder_entries(outputs) == []
    assert seconds < 1.5, seconds  # at once: not after the grace, not after the rest of the imports


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("moment", ["after:MedLSDMLib.runtime.progress:JsonReporter.done",
                                    "after:MedLSDMLib.cli.main:main"])
def test_a_stop_after_done_is_130_with_the_outputs_complete(folders, bundle_dir: Path, module: str,
                                                             moment: str) -> None:
    labels, outputs = folders
    code, seconds, out, err = run_self_stopping(module, moment, command(module, labels, outputs / "o.nii.gz",
                                                                        bundle_dir))
    assert code == 130, (code, err)
    assert "Traceback" not in err
    assert json.loads(out.splitlines()[-1])["type"] == "done"
    assert messages(err)[-1] == "medlsdm: stopped after the command had ended; what it wrote is complete"
    assert folder_entries(outputs) == ["o.nii.gz"]
    assert seconds < 1.5, seconds


def test_a_worker_with_stdout_closed_ends_as_cancelled(folders, bundle_dir: Path) -> None:
    """No reader from the start: as if it had gone at once (130), nothing written, no traceback."""
    labels, outputs = folders
    args = command("MedLSDMLib.worker", labels, outputs / "o.nii.gz", bundle_dir)
    completed = subprocess.run(["bash", "-c", 'exec "$0" -m MedLSDMLib.worker "$@" >&-', sys.executable, *args],
                               capture_output=True, text=True, env=subprocess_env(), cwd=str(REPO), timeout=120)
    assert completed.returncode == 130, completed.stderr
    assert "Traceback" not in completed.stderr
    assert folder_entries(outputs) == []
