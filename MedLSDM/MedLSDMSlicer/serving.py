"""The module's one serving worker (``python -m MedLSDMLib.worker serve``): every generate, edit, batch item and
batch into a folder (one synthesize job) is a request to it, so the model is loaded once; it is started on first
use, started again if it died, and ended when the module is closed or Slicer exits.

A request (``ServedRequest``) is what the logic follows: ``poll``, ``wait``, ``cancel``,
``returncode`` (the one-shot worker's exit code for its done or error event) and ``cancelRequested``. Events
are handed over on the thread that polls (the GUI thread), never on the reader threads.
"""
from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional

from .engine import useEngine

useEngine()
from MedLSDMLib.protocol import (  # noqa: E402  (the engine's folder is on sys.path now)
    EXIT_CANCELLED,
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_MEMORY,
    EXIT_MODEL,
    Event,
    log_event,
    parse_line,
)

KILL_GRACE_SECONDS = 10.0  # after a cancel (or at the end), how long the worker may take before it is killed
IDLE_SECONDS = 600  # the worker ends itself after this long without a request, freeing its memory
IDLE_MARGIN_SECONDS = 30  # a worker idle for nearly that long is replaced rather than sent a request it may miss
EXIT_CODES = {"input": EXIT_INPUT, "model": EXIT_MODEL, "memory": EXIT_MEMORY, "cancelled": EXIT_CANCELLED}
_ids = itertools.count(1)


class ServedRequest:
    """One request to the serving worker: ``onEvent`` receives its events; ``returncode`` is set when it ended
    (0 done, the error kind's exit code, or the worker's own exit code if it ended in the middle)."""

    def __init__(self, worker: "ServingWorker", command: str, args: List[str], onEvent: Callable[[Event], None],
                 killGrace: float) -> None:
        self.id = f"slicer-{os.getpid()}-{next(_ids)}"
        self.command, self.args = command, list(args)
        self.returncode: Optional[int] = None
        self.cancelRequested = False
        self._worker = worker
        self._onEvent = onEvent
        self._killGrace = killGrace
        self._killDeadline: Optional[float] = None
        self._queue: "queue.Queue[Event]" = queue.Queue()
        self._ended: Optional[int] = None  # the code once the final event (or the worker's end) is queued
        self.proc: Optional[subprocess.Popen] = None  # the worker process it was sent to

    @property
    def pid(self) -> int:
        return self._worker.pid

    def line(self) -> str:
        return json.dumps({"id": self.id, "command": self.command, "args": self.args})

    def put(self, event: Event) -> None:
        """An event of this request, from the reader thread (queued before the end is marked, so that a poll
        that sees the end hands over every event)."""
        self._queue.put(event)
        if event.get("type") == "done":
            self._ended = EXIT_DONE
        elif event.get("type") == "error":
            self._ended = EXIT_CODES.get(str(event.get("kind")), EXIT_FAILED)

    def workerEnded(self, code: int) -> None:
        """The worker ended before this request did (from the reader thread)."""
        if self._ended is None:
            self._ended = code

    def poll(self, timeout: float = 0.0) -> bool:
        """Hand over the events that arrived (waiting up to ``timeout`` for the first); True once the request
        has ended and all its events have been handed over."""
        if self.returncode is not None:
            return True
        ended = self._ended  # read before the queue is emptied: every event before the end is then handed over
        try:
            event = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            while True:
                self._onEvent(event)
                event = self._queue.get_nowait()
        except queue.Empty:
            pass
        if ended is None:
            if self._killDeadline is not None and time.monotonic() > self._killDeadline:
                self._worker.kill(self.proc)  # the cancel was not obeyed: the next request starts a new worker
            return False
        self.returncode = ended
        return True

    def wait(self, idle: Optional[Callable[[], None]] = None) -> int:
        """Block until the request has ended, handing over events; ``idle`` runs between polls."""
        while not self.poll(timeout=0.1):
            if idle is not None:
                idle()
        assert self.returncode is not None
        return self.returncode

    def cancel(self) -> None:
        """Ask the worker to end this request (it answers within 3 s and stays for the next); the worker is
        killed if the request has not ended ``killGrace`` seconds later."""
        if self.returncode is not None or self.cancelRequested:
            return
        self.cancelRequested = True
        self._killDeadline = time.monotonic() + self._killGrace
        self._worker.send(json.dumps({"command": "cancel", "id": self.id}))


class ServingWorker:
    """The serving worker process and the requests sent to it. ``submit`` starts it when there is none (or it
    died, or the Python or environment to run it changed); ``stop`` ends it."""

    def __init__(self, killGrace: float = KILL_GRACE_SECONDS) -> None:
        self.starts = 0  # how many worker processes were started (the tests read it)
        self._killGrace = killGrace
        self._proc: Optional[subprocess.Popen] = None
        self._key: Optional[Any] = None
        self._requests: Dict[str, ServedRequest] = {}
        self._lock = threading.Lock()
        self._lastActivity = 0.0  # when the last request was sent or ended (time.monotonic)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else -1

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def submit(self, python: str, env: Dict[str, str], command: str, args: List[str],
               onEvent: Callable[[Event], None]) -> ServedRequest:
        """Send one request (``command`` generate, edit or synthesize with the arguments of ``medlsdm COMMAND``)."""
        key = (python, tuple(sorted(env.items())))
        with self._lock:
            idle = not self._requests and time.monotonic() - self._lastActivity > IDLE_SECONDS - IDLE_MARGIN_SECONDS
        if not self.alive() or key != self._key or idle:
            self.stop()
            self._start(python, env)
            self._key = key
        request = ServedRequest(self, command, args, onEvent, self._killGrace)
        request.proc = self._proc
        with self._lock:
            self._requests[request.id] = request
            self._lastActivity = time.monotonic()
        if not self.send(request.line()):
            request.workerEnded(self._proc.poll() if self._proc is not None else EXIT_FAILED)
        return request

    def _start(self, python: str, env: Dict[str, str]) -> None:
        args = [python, "-m", "MedLSDMLib.worker", "serve", "--idle-timeout", str(IDLE_SECONDS)]
        options: Dict[str, Any] = dict(env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, encoding="utf-8", errors="replace", bufsize=1)
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            options["start_new_session"] = True
        proc = subprocess.Popen(args, **options)
        self._proc = proc
        self.starts += 1
        for stream, protocol in ((proc.stdout, True), (proc.stderr, False)):
            threading.Thread(target=self._read, args=(proc, stream, protocol), daemon=True).start()

    def send(self, line: str) -> bool:
        """Write one line to the worker; False if it is gone."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return False
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def _read(self, proc: subprocess.Popen, stream: IO[str], protocol: bool) -> None:
        for line in stream:
            line = line.rstrip("\r\n")
            if not line:
                continue
            event = parse_line(line) if protocol else log_event(line)
            with self._lock:
                request = self._requests.get(str(event.get("id"))) if protocol else None
                if request is not None and event.get("type") in ("done", "error"):
                    del self._requests[request.id]
                    self._lastActivity = time.monotonic()
            if request is not None:
                request.put(event)
            elif event.get("type") == "error" or not protocol:  # the worker's own words: to the log
                logging.info(f"MedLSDM serving worker: {event.get('message', '')}")
        stream.close()
        if protocol:  # stdout closed: the worker has ended; every request still open ends with it
            code = proc.wait()
            with self._lock:
                orphans = [r for r in self._requests.values() if r.proc is proc]
                for request in orphans:
                    del self._requests[request.id]
            for request in orphans:
                request.workerEnded(code if code != 0 else EXIT_FAILED)

    def kill(self, proc: Optional[subprocess.Popen] = None) -> None:
        """End the worker (``proc``, default the current one) and its process tree at once."""
        proc = proc or self._proc
        if proc is None or proc.poll() is not None:
            return
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, creationflags=subprocess.CREATE_NO_WINDOW, check=False)
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: Optional[float] = None) -> None:
        """End the worker: the end of its stdin (it finishes the request it runs, which is cancelled first),
        then, if it has not ended ``grace`` seconds later, kill it."""
        proc = self._proc
        if proc is None:
            return
        with self._lock:
            running = list(self._requests.values())
        for request in running:
            request.cancel()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=self._killGrace if grace is None else grace)
        except subprocess.TimeoutExpired:
            self.kill()
            proc.wait()
        self._proc = None


_shared = ServingWorker()
atexit.register(_shared.stop)  # Slicer (or the Python console's process) exits: the worker ends with it


def sharedWorker() -> ServingWorker:
    """The serving worker of this process (one for every logic: the module's, the console's)."""
    return _shared


def submit(workerArgs: List[str], env: Dict[str, str], onEvent: Callable[[Event], None]) -> ServedRequest:
    """A one-shot worker command line (``PYTHON -m MedLSDMLib.worker [edit|synthesize] ARGS...``) sent as a
    request to the shared serving worker instead."""
    python, args = workerArgs[0], list(workerArgs[3:])
    command = args.pop(0) if args[:1] in (["edit"], ["synthesize"]) else "generate"
    return _shared.submit(python, env, command, args, onEvent)
