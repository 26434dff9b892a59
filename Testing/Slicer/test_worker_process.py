"""The worker process wrapper on stand-in workers (plain Python scripts): protocol lines, other
output, and cancel reaching the whole process tree (POSIX: the checks read /proc)."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path
from typing import List

from MedLSDMSlicer import process as processModule
from MedLSDMSlicer.process import WorkerProcess

from conftest import livingProcessesInGroup


def script(tmp_path: Path, body: str) -> List[str]:
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_protocol_lines_and_other_output_become_events(tmp_path: Path) -> None:
    events: List[dict] = []
    process = WorkerProcess(script(tmp_path, """
        import json, sys
        print(json.dumps({"type": "progress", "stage": "sample", "step": 1, "total": 2}), flush=True)
        print("a warning", file=sys.stderr, flush=True)
        print("[1, 2]", flush=True)
        print(json.dumps({"type": "error", "kind": "input", "message": "bad label"}), flush=True)
        sys.exit(2)
    """), dict(os.environ), events.append)
    assert process.wait() == 2
    assert {"type": "progress", "stage": "sample", "step": 1, "total": 2} in events
    assert {"type": "log", "message": "a warning"} in events
    assert {"type": "log", "message": "[1, 2]"} in events  # JSON, but not an event object
    assert events.index({"type": "error", "kind": "input", "message": "bad label"}) > 0
    from MedLSDMLib import protocol  # importable: the module put the engine on sys.path

    assert processModule.parse_line is protocol.parse_line  # the engine's reader, not a copy


def test_cancel_kills_the_tree_even_when_the_worker_ignores_sigterm(tmp_path: Path) -> None:
    """Like PythonSlicer, a launcher whose child does the work: both go, after the grace time."""
    events: List[dict] = []
    process = WorkerProcess(script(tmp_path, """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
    """), dict(os.environ), events.append, killGrace=0.5)
    deadline = time.monotonic() + 20
    while not events:
        assert time.monotonic() < deadline
        process.poll(timeout=0.1)
    child = int(events[0]["message"])
    start = time.monotonic()
    process.cancel()
    process.wait()
    assert time.monotonic() - start < 10
    assert process.cancelRequested and process.returncode == -9
    assert livingProcessesInGroup(process.pid) == []
    assert not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] == "Z"
