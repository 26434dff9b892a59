"""The module's one serving worker, on real MRML with the real worker: generate and batch items go to the same
worker process (the model is loaded once), a worker that died is started again, one that dies during a request
ends that request with an error, a cancelled request leaves the worker for the next, and stopping ends it."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from MedLSDMSlicer import serving
from MedLSDMSlicer.logic import GenerationLogic

from conftest import addReferenceVolume, addSegmentation, livingProcessesInGroup, runEventLoop


@pytest.fixture
def worker() -> Iterator[serving.ServingWorker]:
    """The module's serving worker, not started yet; stopped after the test."""
    shared = serving.sharedWorker()
    shared.stop()
    shared.starts = 0
    yield shared
    shared.stop()


def test_generate_and_a_batch_share_one_worker(scene, bundle: Path, tmp_path: Path,
                                               worker: serving.ServingWorker) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    node = GenerationLogic().generate(segmentation, reference, model=str(bundle), steps=2, seed=1, device="cpu")
    assert node.GetName() == "brain synthetic seed 1"
    pid = worker.pid
    summary = GenerationLogic().generateBatch([segmentation] * 3, tmp_path, model=str(bundle), steps=2, seed=2,
                                              device="cpu")
    assert [item.ok for item in summary] == [True] * 3, [item.message for item in summary]
    assert worker.starts == 1 and worker.pid == pid and worker.alive()


def test_a_worker_that_died_is_started_again(scene, bundle: Path, worker: serving.ServingWorker) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    logic = GenerationLogic()
    logic.generate(segmentation, reference, model=str(bundle), steps=2, seed=1, device="cpu")
    first = worker.pid
    os.killpg(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while worker.alive():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node = logic.generate(segmentation, reference, model=str(bundle), steps=2, seed=2, device="cpu")
    assert node.GetName() == "brain synthetic seed 2"
    assert worker.starts == 2 and worker.pid != first


def test_a_worker_that_dies_during_a_request_ends_it_with_an_error(scene, bundle: Path,
                                                                    worker: serving.ServingWorker) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    sampling: List[int] = []
    logic = GenerationLogic()
    task = logic.generate(segmentation, reference, model=str(bundle), steps=1000, seed=1, device="cpu",
                          waitForCompletion=False, progressCallback=lambda stage, step, total: sampling.append(step))
    runEventLoop(lambda: len(sampling) > 0)
    os.killpg(worker.pid, signal.SIGKILL)
    runEventLoop(lambda: task.state != "running", timeout=30)
    assert task.state == "error" and "killed by signal 9" in task.message, task.message
    node = logic.generate(segmentation, reference, model=str(bundle), steps=2, seed=2, device="cpu")
    assert node.GetName() == "brain synthetic seed 2" and worker.starts == 2


def test_a_cancelled_request_leaves_the_worker_for_the_next(scene, bundle: Path,
                                                           worker: serving.ServingWorker) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    sampling: List[int] = []
    logic = GenerationLogic()
    task = logic.generate(segmentation, reference, model=str(bundle), steps=1000, seed=1, device="cpu",
                          waitForCompletion=False, progressCallback=lambda stage, step, total: sampling.append(step))
    runEventLoop(lambda: len(sampling) > 0)
    asked = time.monotonic()
    task.cancel()
    runEventLoop(lambda: task.state != "running", timeout=30)
    assert task.state == "cancelled" and time.monotonic() - asked < 3.5
    assert sampling[-1] < 1000 and worker.alive()
    node = logic.generate(segmentation, reference, model=str(bundle), steps=2, seed=2, device="cpu")
    assert node.GetName() == "brain synthetic seed 2" and worker.starts == 1


def test_stopping_ends_the_worker(scene, bundle: Path, worker: serving.ServingWorker) -> None:
    reference = addReferenceVolume(scene)
    segmentation = addSegmentation(scene, reference)
    logic = GenerationLogic()
    logic.generate(segmentation, reference, model=str(bundle), steps=2, seed=1, device="cpu")
    pid = worker.pid
    logic.stopWorker()
    assert not worker.alive() and livingProcessesInGroup(pid) == []
