"""The serving worker (``python -m MedLSDMLib.worker serve``): requests with ids answered by protocol events
carrying those ids, one model load for many requests, cancel within 3 s leaving the worker usable, a bad
request answered by an error event, the idle timeout, and the end of stdin."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from MedLSDMLib.cli import serving
from MedLSDMLib.errors import Cancelled
from MedLSDMLib.generation.model_cache import keeping_models
from MedLSDMLib.generation.pipeline import Generator
from MedLSDMLib.runtime.interrupt import GRACE_SECONDS

from conftest import REPO, brain_labels, folder_entries, make_bundle, subprocess_env, tiny_card, write

Event = Dict[str, Any]
WAIT = 120.0  # seconds a test waits for an event before it fails


class Lines:
    """A stand-in stdout that hands each whole line written to it to a queue."""

    def __init__(self) -> None:
        self.events: "queue.Queue[Event]" = queue.Queue()
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.events.put(json.loads(line))
        return len(text)

    def flush(self) -> None:
        pass

    def next(self) -> Event:
        return self.events.get(timeout=WAIT)

    def until_end(self, request_id: str) -> List[Event]:
        """The events up to and with the done or error event of ``request_id``."""
        events = [self.next()]
        while not (events[-1].get("id") == request_id and events[-1]["type"] in ("done", "error")):
            events.append(self.next())
        return events


class InProcess:
    """A Server in a thread of this process, its stdin a pipe the test writes, its stdout ``Lines``."""

    def __init__(self, idle_seconds: float = serving.IDLE_SECONDS) -> None:
        read, write = os.pipe()
        self.stdin = os.fdopen(write, "w", buffering=1)
        self._stream = os.fdopen(read, "r")
        self.out = Lines()
        self.code: List[int] = []
        self.thread = threading.Thread(target=self._serve, args=(idle_seconds,), daemon=True)

    def _serve(self, idle_seconds: float) -> None:
        self.code.append(serving.Server(idle_seconds).serve(self._stream))

    def start(self, monkeypatch: pytest.MonkeyPatch) -> "InProcess":
        """Start serving, stdout replaced by ``Lines`` (within the test: pytest's capture puts its own back
        between a fixture and its test)."""
        monkeypatch.setattr(sys, "stdout", self.out)
        self.thread.start()
        return self

    def send(self, request: Any) -> None:
        self.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")

    def close(self) -> None:
        if not self.stdin.closed:
            self.stdin.close()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:
    """A serving worker for this process, with models kept (the test starts it); closed (end of stdin) after."""
    server = InProcess()
    with keeping_models():
        yield server
        server.close()
        if server.thread.is_alive():
            server.thread.join(WAIT)


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny networks with 1000 training steps: ddpm sampling takes seconds, long enough to cancel."""
    return make_bundle(tiny_card(timesteps=1000)).save(tmp_path_factory.mktemp("slow") / "slow-model")


def generate_request(request_id: str, labels: Path, output: Path, model: Path, *extra: str, steps: bool = True) -> Event:
    args = [str(labels), "-o", str(output), "--model", str(model), "--device", "cpu", "--threads", "1", "--seed", "1"]
    return {"id": request_id, "command": "generate", "args": args + ["--steps", "2"] * steps + list(extra)}


def test_two_requests_answered_by_id_with_one_model_load(
    served: InProcess, tmp_path: Path, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: List[Path] = []
    load = Generator.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Generator, "load", classmethod(lambda cls, *a, **k: loads.append(a[0]) or load(cls, *a, **k)))
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    served.start(monkeypatch)
    served.send(generate_request("first", labels, tmp_path / "a.nii.gz", bundle_dir))
    served.send(generate_request("second", labels, tmp_path / "b.nii.gz", bundle_dir, "--seed", "2"))
    events = served.out.until_end("second")

    assert {e["id"] for e in events} == {"first", "second"}
    ends = [e for e in events if e["type"] in ("done", "error")]
    assert [(e["id"], e["type"]) for e in ends] == [("first", "done"), ("second", "done")], ends
    assert ends[0]["paths"] == [str(tmp_path / "a.nii.gz")] and ends[1]["seeds"] == [2]
    assert any(e["type"] == "progress" and e["id"] == "second" for e in events)
    assert len(loads) == 1  # the second request used the model the first one loaded
    assert folder_entries(tmp_path) == ["a.nii.gz", "b.nii.gz", "labels.nii.gz"]


def test_a_bad_request_is_an_error_event_and_the_worker_goes_on(
    served: InProcess, tmp_path: Path, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    served.start(monkeypatch)
    served.send("not json")
    served.send({"command": "generate", "args": []})
    served.send({"id": "x", "command": "train", "args": []})
    served.send({"id": "y", "command": "generate", "args": "labels.nii.gz"})
    served.send({"id": "z", "command": "generate", "args": [str(labels), "-o", "z.nii.gz", "--bogus"]})
    served.send({"id": "w", "command": "generate", "args": [str(tmp_path / "missing.nii.gz"), "-o", "o.nii.gz"]})
    served.send({"id": "nothing", "command": "cancel"})
    served.send(generate_request("ok", labels, tmp_path / "ok.nii.gz", bundle_dir))
    events = served.out.until_end("ok")

    errors = [e for e in events if e["type"] == "error"]
    assert all(e["kind"] == "input" for e in errors), errors
    # the lines that are no request are answered at once, in order; the others when they run
    assert [e["id"] for e in errors[:4]] == [None, None, "x", "y"]
    assert "JSON object" in errors[0]["message"] and '"id"' in errors[1]["message"]
    assert "train" in errors[2]["message"] and "list of strings" in errors[3]["message"]
    later = {e["id"]: e["message"] for e in errors[4:]}
    assert sorted(later) == ["nothing", "w", "z"]
    assert "--bogus" in later["z"] and "missing.nii.gz" in later["w"] and "no request" in later["nothing"]
    assert events[-1]["id"] == "ok" and events[-1]["type"] == "done"


@pytest.mark.slow
def test_cancel_ends_the_running_request_and_the_next_one_runs(
    served: InProcess, tmp_path: Path, bundle_dir: Path, slow_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    served.start(monkeypatch)
    slow = generate_request("slow", labels, tmp_path / "slow.nii.gz", slow_bundle, "--sampler", "ddpm", steps=False)
    served.send(slow)
    served.send(generate_request("queued", labels, tmp_path / "queued.nii.gz", bundle_dir))
    served.send(generate_request("after", labels, tmp_path / "after.nii.gz", bundle_dir))
    event = served.out.next()
    while not (event["type"] == "progress" and event["stage"] == "sample"):
        assert event["type"] != "error", event
        event = served.out.next()
    assert event["id"] == "slow" and event["step"] < event["total"] == 1000
    asked = time.monotonic()
    served.send({"command": "cancel", "id": "slow"})
    served.send({"command": "cancel", "id": "queued"})
    events = served.out.until_end("slow")
    assert time.monotonic() - asked < 3.0  # the promise: a cancel ends the request within 3 s
    assert events[-1] == {"type": "error", "kind": "cancelled", "message": str(Cancelled()), "id": "slow"}

    events = served.out.until_end("after")
    assert [(e["id"], e["type"], e.get("kind")) for e in events if e["type"] in ("done", "error")] == [
        ("queued", "error", "cancelled"),
        ("after", "done", None),
    ]
    assert folder_entries(tmp_path) == ["after.nii.gz", "labels.nii.gz"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_the_end_of_stdin_ends_the_worker_after_the_requests_read(tmp_path: Path, bundle_dir: Path) -> None:
    """End to end: requests piped in, then stdin closed; the worker answers both and exits with 0."""
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    lines = [generate_request(name, labels, tmp_path / f"{name}.nii.gz", bundle_dir) for name in ("r1", "r2")]
    completed = subprocess.run(
        [sys.executable, "-m", "MedLSDMLib.worker", "serve"],
        input="".join(json.dumps(line) + "\n" for line in lines),
        capture_output=True, text=True, env=subprocess_env(), cwd=str(REPO), timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [(e["id"], e["type"]) for e in events if e["type"] in ("done", "error")] == [("r1", "done"), ("r2", "done")]
    assert "Traceback" not in completed.stderr
    assert folder_entries(tmp_path) == ["labels.nii.gz", "r1.nii.gz", "r2.nii.gz"]


def test_the_idle_timeout_ends_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    server = InProcess(idle_seconds=0.5)
    started = time.monotonic()
    server.start(monkeypatch)
    server.thread.join(WAIT)
    try:
        assert not server.thread.is_alive() and server.code == [0]
        assert 0.5 <= time.monotonic() - started < 10
        event = server.out.next()
        assert event["type"] == "log" and "no request for 0.5 s" in event["message"] and event["id"] is None
    finally:
        server.close()


@pytest.mark.parametrize("argv,words", [(["--idle-timeout", "0"], "above 0"), (["--idle-timeout", "x"], "invalid")])
def test_bad_serve_options_are_one_error_event(argv: List[str], words: str, capsys: pytest.CaptureFixture) -> None:
    assert serving.main(argv) == 2
    (line,) = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert event["type"] == "error" and event["kind"] == "input" and words in event["message"]
