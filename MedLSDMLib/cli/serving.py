"""The serving worker: one process answers generate, edit and synthesize requests and keeps the model loaded
between them (a synthesize job loads its model once for all its maps).

    python -m MedLSDMLib.worker serve [--idle-timeout SECONDS]

stdin, one JSON object a line:

    {"id": "r1", "command": "generate", "args": ["LABELS", "-o", "OUT", ...]}      the arguments of medlsdm generate
    {"id": "r2", "command": "edit", "args": ["IMAGE", "LABELS", "-o", "OUT", ...]}  those of medlsdm edit
    {"id": "r3", "command": "synthesize", "args": ["MAPS", "-o", "FOLDER", ...]}   those of medlsdm synthesize
    {"command": "cancel", "id": "r1"}

stdout: the worker protocol's events (MedLSDMLib.protocol), each with its request's ``"id"``; a request ends with
one done or error event. Requests run one at a time, in the order they came; the models they load stay loaded
(generation.model_cache). A cancel ends the running request within ``GRACE_SECONDS`` (its error event, kind
cancelled) or drops a waiting one, and the worker goes on. A line that is no request is an error event of kind
input (``"id"`` null when it has none), and the worker goes on. The worker ends with exit code 0 at the end of
stdin (after the requests already read) or after ``--idle-timeout`` seconds without a request; SIGINT and
SIGTERM end it as they end a command (130).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, TextIO

from MedLSDMLib import protocol
from MedLSDMLib.cli.main import ProtocolParser, UsageError, build_parser
from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError
from MedLSDMLib.generation.model_cache import keeping_models
from MedLSDMLib.runtime.hardware import threads_set_to
from MedLSDMLib.runtime.interrupt import GRACE_SECONDS, requested, run_stoppable, signals_ask_to_stop
from MedLSDMLib.runtime.progress import JsonReporter

SERVED = ("generate", "edit", "synthesize")
CANCEL = "cancel"
IDLE_SECONDS = 600.0
POLL_SECONDS = 0.05
EXAMPLE = '{"id": "r1", "command": "generate", "args": ["labels.nii.gz", "-o", "out.nii.gz"]}'

_output_lock = threading.Lock()


class RequestReporter(JsonReporter):
    """The protocol's events of one request, each with its ``"id"``, whole lines on the shared stdout; after the
    request's done or error event, nothing more of it. The done event waits for ``release`` (the command has
    returned: its temporary files are gone)."""

    def __init__(self, request_id: Optional[str]) -> None:
        self.request_id = request_id
        self.ended = False
        self._done: Optional[protocol.Event] = None

    def done(self, paths: List[str], seeds: List[int], seconds: float) -> None:
        self._done = protocol.done_event(paths, seeds, seconds)

    def release(self) -> None:
        if self._done is not None:
            self._emit(self._done)

    def _emit(self, event: protocol.Event) -> None:
        with _output_lock:
            if self.ended:
                return
            self.ended = event["type"] in (protocol.DONE, protocol.ERROR)
            super()._emit({**event, "id": self.request_id})


class BadRequest(Exception):
    """A request line the worker cannot take: the message, and the request's id if it has one."""

    def __init__(self, message: str, request_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass
class Request:
    id: str
    command: str
    args: List[str]
    cancelled: threading.Event = field(default_factory=threading.Event)


def parse_request(line: str) -> Request:
    """A request line as its Request, or BadRequest saying what is wrong with it."""
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest(f"the request is not a JSON object: send one a line, such as {EXAMPLE}")
    request_id, command, args = data.get("id"), data.get("command"), data.get("args", [])
    if not isinstance(request_id, str) or not request_id:
        raise BadRequest(f'the request has no "id": give each request a text id, as in {EXAMPLE}')
    if command not in (*SERVED, CANCEL):
        raise BadRequest(f"unknown command {command!r}: use generate, edit, synthesize or cancel", request_id)
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise BadRequest(f'"args" must be a list of strings: the arguments of medlsdm {command}', request_id)
    return Request(request_id, command, args)


def execute(request: Request, reporter: RequestReporter) -> None:
    """Run one request's command; every outcome ends in the reporter's done or error event."""

    def cancel() -> bool:
        return request.cancelled.is_set() or requested()

    try:
        args = build_parser(ProtocolParser).parse_args([request.command, *request.args])
        if cancel():
            raise Cancelled()
        with threads_set_to(args.threads):
            args.run(args, reporter, cancel)
        reporter.release()
    except UsageError as exc:
        if not str(exc):
            reporter.log(exc.help_text)
        reporter.error(InputError.kind, f"{exc or 'the request asked for --help'}: see the options with --help")
    except MedLSDMError as exc:
        reporter.error(exc.kind, str(exc))
    except Exception as exc:  # anything unforeseen: the request's error, and the worker goes on
        reporter.error("internal", f"unexpected {type(exc).__name__}: {exc} (report it)")
    if not reporter.ended:
        reporter.error("internal", f"medlsdm {request.command} ended without an answer (report it)")


class Server:
    """The request loop: a reader thread takes the lines of stdin (cancels at once, requests into a queue);
    ``serve`` runs the queued requests one at a time."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self.queue: "queue.Queue[Optional[Request]]" = queue.Queue()
        self.pending: Dict[str, Request] = {}  # waiting or running, by id
        self.lock = threading.Lock()
        self.straggler: Optional[threading.Thread] = None  # a cancelled request's thread, still ending

    def read(self, stream: TextIO) -> None:
        try:
            for line in stream:
                if line.strip():
                    self.take(line)
        finally:
            self.queue.put(None)

    def take(self, line: str) -> None:
        try:
            request = parse_request(line)
        except BadRequest as exc:
            RequestReporter(exc.request_id).error(InputError.kind, str(exc))
            return
        with self.lock:
            known = self.pending.get(request.id)
            if request.command == CANCEL:
                if known is not None:
                    known.cancelled.set()
                    return
                message = f"cancel: no request {request.id!r} is waiting or running"
            elif known is not None:
                message = f"a request with id {request.id!r} is already waiting or running: give each its own id"
            else:
                self.pending[request.id] = request
                self.queue.put(request)
                return
        RequestReporter(request.id).error(InputError.kind, message)

    def serve(self, stream: TextIO) -> int:
        threading.Thread(target=self.read, args=(stream,), name="medlsdm-requests", daemon=True).start()
        idle_since = time.monotonic()
        while not requested():
            try:
                request = self.queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if time.monotonic() - idle_since < self.idle_seconds:
                    continue
                RequestReporter(None).log(f"no request for {self.idle_seconds:g} s: the worker ends")
                break
            if request is None:
                break
            self.run(request)
            idle_since = time.monotonic()
        self.settle()
        if requested():
            raise Cancelled()
        return protocol.EXIT_DONE

    def settle(self) -> None:
        """Wait for a cancelled request still ending (it holds the model, and its temporary files)."""
        if self.straggler is not None:
            self.straggler.join()
            self.straggler = None

    def run(self, request: Request) -> None:
        """Run one request in a thread of its own; a cancel (or a signal) not obeyed within GRACE_SECONDS
        ends the request for its reader at once, and its thread finishes unheard before the next request."""
        reporter = RequestReporter(request.id)
        try:
            self.settle()
            thread = threading.Thread(target=execute, args=(request, reporter), name=f"medlsdm-{request.id}")
            thread.daemon = True
            thread.start()
            asked_at: Optional[float] = None
            while thread.is_alive():
                thread.join(POLL_SECONDS)
                if asked_at is None and (request.cancelled.is_set() or requested()):
                    asked_at = time.monotonic()
                if thread.is_alive() and asked_at is not None and time.monotonic() - asked_at >= GRACE_SECONDS:
                    reporter.error(Cancelled.kind, str(Cancelled()))
                    self.straggler = thread
                    break
        finally:
            with self.lock:
                self.pending.pop(request.id, None)


def parse_options(argv: List[str]) -> float:
    """The idle timeout of ``serve [--idle-timeout SECONDS]``, or UsageError."""
    parser = ProtocolParser(prog="python -m MedLSDMLib.worker serve", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_SECONDS,
        metavar="SECONDS",
        help=f"end after this long without a request, freeing the memory (default {IDLE_SECONDS:g})",
    )
    seconds = parser.parse_args(argv).idle_timeout
    if not seconds > 0:
        raise UsageError(f"--idle-timeout {seconds:g}: give a number of seconds above 0", parser.format_help())
    return float(seconds)


def main(argv: Optional[List[str]] = None) -> int:
    """Serve requests from stdin until its end, the idle timeout or a signal (module docstring)."""
    reporter = RequestReporter(None)
    try:
        idle_seconds = parse_options(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        if not str(exc):
            reporter.log(exc.help_text)
            return protocol.EXIT_DONE
        reporter.error(InputError.kind, f"{exc}: see the options with --help")
        return protocol.EXIT_INPUT
    with signals_ask_to_stop(), keeping_models():
        try:
            return run_stoppable(
                lambda: Server(idle_seconds).serve(sys.stdin),
                lambda: reporter.error(Cancelled.kind, str(Cancelled())),
            )
        except Cancelled as exc:
            reporter.error(exc.kind, str(exc))
            return exc.exit_code
