"""Stops in the long commands beside generation: a model download and `evaluate` end with 130 and
leave nothing; a download that never ends hits its deadline; a report or a figure is never renamed
into place once a stop was asked for."""
from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from MedLSDMLib.runtime import interrupt
from MedLSDMLib.errors import Cancelled

from conftest import assert_one_line_error, brain_labels, folder_entries, run_cli, write
from model_registry import Registry


@pytest.fixture
def registry(tmp_path: Path, bundle_dir: Path, generator, monkeypatch: pytest.MonkeyPatch) -> Registry:
    return Registry(tmp_path / "registry", bundle_dir, generator, monkeypatch)


class SlowResponse:
    """A download that sends SIGTERM to this process after its first block (the user pressing Ctrl-C)."""

    def __init__(self, data: bytes, signal_after: bool) -> None:
        self.data, self.sent, self.signal_after = data, 0, signal_after
        self.headers = {"Content-Length": str(len(data))}

    def read(self, size: int) -> bytes:
        if self.sent and self.signal_after:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not interrupt.requested() and time.monotonic() < deadline:
                time.sleep(0.01)
        block = self.data[self.sent:self.sent + min(size, 4096)]
        self.sent += len(block)
        return block

    def __enter__(self) -> "SlowResponse":
        return self

    def __exit__(self, *args: object) -> None:
        pass


def test_a_stop_during_a_download_removes_it(capfd, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    data = registry.archive.read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: SlowResponse(data, True))
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert result.code == 130, result.err
    assert "cancelled" in result.err.splitlines()[-1]
    assert folder_entries(registry.cache) == []


def test_a_download_has_a_deadline(capfd, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import MedLSDMLib.models.registry as registry_module

    data = registry.archive.read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: SlowResponse(data, False))
    monkeypatch.setattr(registry_module, "DOWNLOAD_SECONDS", -1)
    result = run_cli(capfd, "models", "verify", "tiny-download")
    assert_one_line_error(result, 3, "took longer than", after_progress_bar=True)
    assert folder_entries(registry.cache) == []


def test_evaluate_stops_and_writes_no_report(capfd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import MedLSDMLib.evaluation.evaluate as evaluation

    labels = brain_labels()
    folder = tmp_path / "case"
    folder.mkdir()
    write(labels, folder / "a_label.nii.gz")
    write(labels * 10, folder / "a_image.nii.gz")
    write(labels * 11, folder / "a_synthetic.nii.gz")
    evaluate = evaluation.evaluate

    def evaluate_then_signal(*args, **kwargs):
        report = evaluate(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not interrupt.requested() and time.monotonic() < deadline:
            time.sleep(0.01)
        return report

    monkeypatch.setattr(evaluation, "evaluate", evaluate_then_signal)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(capfd, "evaluate", "--real", folder / "a_image.nii.gz", "--synthetic",
                     folder / "a_synthetic.nii.gz", "--labels", folder / "a_label.nii.gz", "-o", out / "report",
                     "--progress", "none")
    assert result.code == 130, result.err
    assert folder_entries(out) == []


def test_a_staged_file_is_not_renamed_after_a_stop(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("the previous report")
    interrupt.reset()
    try:
        with pytest.raises(Cancelled):
            with interrupt.staged_file(target) as staging:
                staging.write_text("the new report")
                interrupt.request()
    finally:
        interrupt.reset()
    assert folder_entries(tmp_path) == ["report.json"]
    assert target.read_text() == "the previous report"
