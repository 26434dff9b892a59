"""The worker process: started in a process group of its own, its output read on background threads.

Each stdout line of ``python -m MedLSDMLib.worker`` is one JSON object (progress, log, done, error):
the engine's protocol (MedLSDMLib.protocol), read with its ``parse_line``; any other line (stderr
included) becomes a log event. Events are handed over on the thread that
calls ``poll`` (the GUI thread, from a QTimer, or ``wait``), never on the reader threads.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional

from .engine import useEngine

useEngine()
from MedLSDMLib.protocol import Event, log_event, parse_line  # noqa: E402  (the engine's folder is on sys.path now)

KILL_GRACE_SECONDS = 10.0  # after SIGTERM, how long the worker may take to stop before it is killed
_EOF = object()


class WorkerProcess:
    """One run of the worker. ``onEvent`` receives every event; ``returncode`` is set when it ended.

    Cancel ends the whole process tree: on POSIX the worker leads a new session and the signal goes
    to its process group (PythonSlicer is a launcher that runs Python as a child); on Windows
    ``taskkill /T`` ends the tree."""

    def __init__(self, args: List[str], env: Dict[str, str], onEvent: Callable[[Event], None],
                 killGrace: float = KILL_GRACE_SECONDS) -> None:
        self.args = list(args)
        self.returncode: Optional[int] = None
        self.cancelRequested = False
        self._onEvent = onEvent
        self._killGrace = killGrace
        self._killDeadline: Optional[float] = None
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._openStreams = 2
        if os.name == "nt":
            flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
            self._proc = subprocess.Popen(self.args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                          creationflags=flags)
        else:
            self._proc = subprocess.Popen(self.args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                          start_new_session=True)
        for stream, protocol in ((self._proc.stdout, True), (self._proc.stderr, False)):
            threading.Thread(target=self._read, args=(stream, protocol), daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self, stream: IO[str], protocol: bool) -> None:
        for line in stream:
            line = line.rstrip("\r\n")
            if line:
                self._queue.put(parse_line(line) if protocol else log_event(line))
        stream.close()
        self._queue.put(_EOF)

    def poll(self, timeout: float = 0.0) -> bool:
        """Hand over the events that arrived (waiting up to ``timeout`` for the first); True once the
        worker has ended and all its output has been handed over."""
        if self.returncode is not None:
            return True
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            while True:
                if item is _EOF:
                    self._openStreams -= 1
                else:
                    self._onEvent(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        exited = self._exited()
        pastDeadline = self._killDeadline is not None and time.monotonic() > self._killDeadline
        if not exited:
            if pastDeadline:
                self._signalTree(force=True)
            return False
        if self._openStreams > 0 and self.cancelRequested and not pastDeadline:
            return False  # the launcher ended on SIGTERM; its Python child gets its grace period to stop cleanly
        self._endLeftovers()  # left-over children must not keep the output pipes open
        if self._openStreams > 0:
            return False
        self.returncode = self._proc.wait()
        return True

    def _exited(self) -> bool:
        """Whether the worker ended, without reaping it where the system allows (then its id, which
        is also its group's, stays reserved until ``wait``, and signalling the group stays safe)."""
        if os.name == "nt" or not hasattr(os, "waitid"):
            return self._proc.poll() is not None
        try:
            return os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def wait(self, idle: Optional[Callable[[], None]] = None) -> int:
        """Block until the worker has ended, handing over events; ``idle`` runs between polls."""
        while not self.poll(timeout=0.1):
            if idle is not None:
                idle()
        assert self.returncode is not None
        return self.returncode

    def cancel(self) -> None:
        """Ask the worker to stop (it exits with 130 at its next step, writing nothing); the tree
        is killed if it is still running ``killGrace`` seconds later."""
        if self.returncode is not None or self.cancelRequested:
            return
        self.cancelRequested = True
        self._killDeadline = time.monotonic() + self._killGrace
        self._signalTree(force=os.name == "nt")

    def _signalTree(self, force: bool) -> None:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._proc.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, creationflags=subprocess.CREATE_NO_WINDOW, check=False)
            return
        if self._proc.returncode is not None:
            return  # reaped: its id may belong to another process now
        try:
            os.killpg(self._proc.pid, signal.SIGKILL if force else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def _endLeftovers(self) -> None:
        """Kill what is left of the worker's process group once the worker itself has ended but is
        not yet reaped (its id cannot have been reused then); elsewhere nothing is done."""
        if os.name != "nt":
            self._signalTree(force=True)
