"""Running the worker: its command line (commands.py), its environment and Python, the request to the module's
serving worker (serving.py) followed to its end, blocking or from a timer, and the task's final state."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import slicer

from . import commands, serving
from .engine import GenerationError, engineFolder, useEngine
from .export import Geometry
from .models import PathLike, resourcesFolder

useEngine()
from MedLSDMLib import protocol  # noqa: E402
from MedLSDMLib.generation.edit_options import DEFAULT_MARGIN  # noqa: E402
from MedLSDMLib.protocol import Event  # noqa: E402

ProgressCallback = Callable[[str, int, int], None]
LogCallback = Callable[[str], None]
POLL_INTERVAL_MS = 100


@dataclass
class GenerationTask:
    """One generation: ``state`` is running, done, error or cancelled; ``message`` says why it
    failed; ``outputNodes`` (or ``outputPaths`` when written to a folder) hold the results."""

    name: str
    state: str = "running"
    message: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    seeds: List[int] = field(default_factory=list)
    outputNodes: List[Any] = field(default_factory=list)
    outputPaths: List[str] = field(default_factory=list)
    temporaryFolder: Optional[str] = None
    process: Optional[serving.ServedRequest] = None
    variabilityNode: Any = None

    def cancel(self) -> None:
        """Stop the run (the serving worker ends it within 3 s and stays); the task ends in the cancelled state."""
        if self.state == "running" and self.process is not None:
            self.process.cancel()


@dataclass
class _Job:
    """What a started worker needs when it ends: where its output goes and how to check it."""

    task: GenerationTask
    labelName: str
    scene: Any
    load: bool = True
    geometry: Optional[Geometry] = None
    referenceNode: Any = None
    transformNodeId: Optional[str] = None
    outputVolumeNode: Any = None
    progressCallback: Optional[ProgressCallback] = None
    logCallback: Optional[LogCallback] = None
    finishedCallback: Optional[Callable[[GenerationTask], None]] = None
    errorEvent: Optional[Event] = None
    doneEvent: Optional[Event] = None
    resultName: str = "synthetic"  # the loaded volumes are "<labelName> <resultName> seed N"
    variabilityPath: Optional[str] = None  # a standard-deviation map to load beside the results


class WorkerRuns:
    """The logic's worker runs (a mixin of GenerationLogic, which sets ``pythonExecutable``, ``debug`` and
    ``temporaryRoot``; ``_collect`` is ResultLoading's)."""

    pythonExecutable: Optional[str] = None
    debug = False

    def _beforeWorker(self) -> None:
        """Called once the inputs are checked and before the worker starts; raise GenerationError to
        stop. Slicer's module makes sure the worker's packages are installed here."""

    def workerPython(self) -> str:
        if self.pythonExecutable:
            return self.pythonExecutable
        found = shutil.which("PythonSlicer")
        if found:
            return found
        beside = Path(sys.executable).with_name("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
        if beside.is_file():
            return str(beside)
        raise GenerationError("PythonSlicer was not found: run MedLSDM inside 3D Slicer, or set "
                              "MEDLSDM_WORKER_PYTHON to a Python that has MedLSDM's requirements")

    @staticmethod
    def stopWorker() -> None:
        """End the serving worker (the module is closed, Slicer exits); the next run starts a new one."""
        serving.sharedWorker().stop()

    def workerEnvironment(self) -> Dict[str, str]:
        """Slicer's startup environment (without Slicer's own Python settings) plus the engine's
        folder on PYTHONPATH and MEDLSDM_RESOURCES."""
        env = dict(slicer.util.startupEnvironment())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(engineFolder()), env.get("PYTHONPATH", "")) if p)
        env["MEDLSDM_RESOURCES"] = str(resourcesFolder())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def workerCommand(self, labels: PathLike, output: PathLike, **options: Any) -> List[str]:
        """The worker's command line for generate; ``options`` as commands.workerCommand's."""
        return commands.workerCommand(self.workerPython(), [labels], output, **options)

    def synthesizeWorkerCommand(self, maps: PathLike, folder: PathLike, **options: Any) -> List[str]:
        """The worker's command line for ``medlsdm synthesize`` (``maps``: the job's list, ``folder``: its output)."""
        return commands.workerCommand(self.workerPython(), [maps], folder, command="synthesize", **options)

    def editWorkerCommand(self, real: PathLike, labels: PathLike, original: PathLike, output: PathLike, *,
                          margin: float = DEFAULT_MARGIN, variability: Optional[PathLike] = None,
                          **options: Any) -> List[str]:
        """The worker's command line for ``medlsdm edit`` (every outcome, usage errors too, a JSON line)."""
        extra = ["--original-labels", str(original), "--margin", repr(float(margin))]
        if variability is not None:
            extra += ["--variability", str(variability)]
        return commands.workerCommand(self.workerPython(), [real, labels], output, command="edit", extra=extra,
                                      **options)

    def _launch(self, job: "_Job", task: GenerationTask, prepare: Callable[[], List[str]], waitForCompletion: bool,
                samples: int) -> Any:
        """``prepare`` (checks, exports, the command line), then the worker. A GenerationError of prepare ends
        the task in the error state (and is raised when blocking); blocking, the result node(s)."""
        try:
            args = prepare()
        except GenerationError as exc:
            self._finish(job, "error", str(exc))
            if waitForCompletion:
                raise
            return task
        self._start(job, args, waitForCompletion)
        if not waitForCompletion:
            return task
        if task.state != "done":
            raise GenerationError(task.message)
        return task.outputNodes[0] if samples == 1 else list(task.outputNodes)

    def _runToEnd(self, job: _Job, command: Callable[[], List[str]]) -> None:
        """Prepare the worker's command line, run it to the end, and raise GenerationError unless done."""
        try:
            args = command()
            self._beforeWorker()
        except GenerationError as exc:
            self._finish(job, "error", str(exc))
            raise
        self._start(job, args, waitForCompletion=True)
        if job.task.state != "done":
            raise GenerationError(job.task.message)

    def _start(self, job: _Job, args: List[str], waitForCompletion: bool) -> None:
        """Start the worker; blocking, return when it has ended, else poll it from a QTimer."""
        try:
            env = self.workerEnvironment()
            logging.info(f"MedLSDM: {' '.join(args)}")
            job.task.process = serving.submit(args, env, lambda event: self._onEvent(job, event))
        except (GenerationError, OSError) as exc:
            self._finish(job, "error", str(exc) if isinstance(exc, GenerationError)
                         else f"the worker could not be started ({exc}): check the Python it runs with")
            return
        if waitForCompletion:
            job.task.process.wait(idle=slicer.app.processEvents)
            self._onExit(job)
        else:
            import qt

            def check() -> None:
                try:
                    ended = job.task.process.poll()
                    if ended:
                        self._onExit(job)
                except Exception as exc:  # e.g. a callback into a widget that was reloaded
                    logging.exception("MedLSDM: handling the worker's output failed")
                    job.progressCallback = job.logCallback = None  # they must not fail again while it stops
                    job.task.process.cancel()
                    job.task.process.wait()
                    if job.task.state == "running":
                        self._finish(job, "error", f"handling the worker's output failed ({exc})")
                    return
                if not ended:
                    qt.QTimer.singleShot(POLL_INTERVAL_MS, check)

            qt.QTimer.singleShot(POLL_INTERVAL_MS, check)

    def _onEvent(self, job: _Job, event: Event) -> None:
        kind = event.get("type")
        if kind == "progress":
            job.task.stage, job.task.step, job.task.total = str(event.get("stage", "")), int(event.get("step", 0)), \
                int(event.get("total", 0))
            if job.progressCallback is not None:
                job.progressCallback(job.task.stage, job.task.step, job.task.total)
        elif kind == "error":
            job.errorEvent = event
        elif kind == "done":
            job.doneEvent = event
        elif kind == "log":
            message = str(event.get("message", ""))
            logging.info(f"MedLSDM worker: {message}")
            if job.logCallback is not None:
                job.logCallback(message)

    def _onExit(self, job: _Job) -> None:
        process = job.task.process
        assert process is not None
        code = process.returncode
        if process.cancelRequested or code == protocol.EXIT_CANCELLED:
            self._finish(job, "cancelled", "cancelled; nothing was generated")
        elif code != 0 or job.doneEvent is None:
            if job.errorEvent is not None:
                message = str(job.errorEvent.get("message", ""))
            elif code == 0:
                message = "the worker ended without reporting a result: see the log for details"
            elif code is not None and code < 0:
                message = (f"the worker was killed by signal {-code} (the system may have run out of memory: "
                           "crop the segmentation or generate fewer samples)")
            else:
                reason = protocol.exit_meaning(code if code is not None else protocol.EXIT_FAILED)
                message = f"the worker ended with exit code {code} ({reason}): see the log for details"
            self._finish(job, "error", message)
        else:
            try:
                self._collect(job)
            except GenerationError as exc:
                self._finish(job, "error", str(exc))
            else:
                self._finish(job, "done", "")

    def _finish(self, job: _Job, state: str, message: str) -> None:
        """Set the final state, tidy the temporary folder (kept when the worker failed, and in debug
        mode), and tell the caller."""
        task = job.task
        task.state, task.message = state, message
        folder = task.temporaryFolder
        if folder is not None:
            if (state == "error" and task.process is not None) or self.debug:
                logging.info(f"MedLSDM: temporary files kept in {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        if state == "error":
            logging.error(f"MedLSDM: {task.name}: {message}")
        if job.finishedCallback is not None:
            job.finishedCallback(task)
