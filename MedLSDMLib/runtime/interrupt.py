"""Cancelling a command: SIGINT/SIGTERM ask it to stop at the next step; if it has not ended
``GRACE_SECONDS`` later, or a second signal comes, it removes its temporary files and exits at once.

The command's work runs in a thread of its own while the main thread waits for signals, so a stop
never waits for a UNet pass, a file write or a download to end. Torch-free: the Slicer module and
the worker may import it.

A process whose entry point calls ``own_process`` first thing (``medlsdm``, ``python -m MedLSDMLib``,
the worker) keeps the handlers from then until it exits, and every stop ends it with 130 within
3 s: during start-up (imports included, until the work marks its first temporary file: nothing of it
is on the disk yet) and after the work ended (its outputs are complete) at once; in between, after
the grace.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Set, TypeVar

if TYPE_CHECKING:
    from typing import NoReturn

from MedLSDMLib.errors import Cancelled, DiskFull, InputError, MedLSDMError

# a clean stop's grace: with the ~0.4 s a busy interpreter may hold the GIL (importing torch on 2
# contended cores), the hard stop still ends the process within 3 s of the signal
GRACE_SECONDS = 2.0
T = TypeVar("T")
START, WORK, END = "start", "work", "end"  # an owned process's phases (module docstring)

_requested = threading.Event()
_requested_at = [0.0]
_temporary: Set[Path] = set()
_lock = threading.Lock()
_stderr_copy: List[Optional[int]] = [None]
_owned = [False]
_phase = [START]
_announce: List[Optional[Callable[[], None]]] = [None]  # what a stop says before the process ends


def requested() -> bool:
    """True once the user asked to stop (a signal, or ``request()``)."""
    return _requested.is_set()


def request() -> None:
    if not _requested.is_set():
        _requested_at[0] = time.monotonic()
        _requested.set()


def reset() -> None:
    """Forget a request (a new command in the same process, e.g. in the tests)."""
    _requested.clear()


def mark(path: Path) -> None:
    """Mark a temporary file or folder as one to remove if the process is stopped at once."""
    with _lock:
        _temporary.add(Path(path))
        if _phase[0] == START:
            _phase[0] = WORK


def unmark(path: Path) -> None:
    with _lock:
        _temporary.discard(Path(path))


@contextmanager
def temporary(path: Path) -> Iterator[Path]:
    """``path`` marked (see ``mark``) within the block."""
    mark(path)
    try:
        yield Path(path)
    finally:
        unmark(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """Write ``path`` atomically: the block writes the hidden temporary this yields, which is then
    renamed into place. An error, or a stop asked for before the rename, removes it and leaves any
    existing ``path`` as it was (a stop raises ``Cancelled``); a hard stop removes it too. A failed
    write (a full disk, a folder removed meanwhile) is one line (``write_error``)."""
    path = Path(path)
    staging = path.with_name(f".{path.stem}.partial-{os.getpid()}{''.join(path.suffixes)}")
    with temporary(staging):
        try:
            yield staging
            if requested():
                raise Cancelled()
            if staging.is_file():  # writers such as safetensors create 0600 files: give the usual permissions
                os.chmod(staging, 0o666 & ~_umask())
            os.replace(staging, path)
        except OSError as exc:
            raise write_error(path, exc.strerror or str(exc)) from None
        finally:
            if staging.exists():
                staging.unlink()


def write_error(path: Path, reason: str) -> MedLSDMError:
    """``could not write PATH (REASON)``, one line: DiskFull (exit 4) when the disk (or quota) is full or
    nearly, else InputError (exit 2; e.g. the folder was removed or is not writable)."""
    try:
        free: Optional[int] = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    except OSError:
        free = None
    room = f"; {free // 1024} KiB are free there" if free is not None and free < 1 << 30 else ""
    full = (free is not None and free < 1 << 20) or reason.lower() in (
        "no space left on device",
        "disk quota exceeded",
        "the disk is full",
    )
    kept = "; the existing file was kept" if path.exists() else ""
    line = (
        f"could not write {path} ({'the disk is full' if full else reason}{room}): free some space or choose "
        f"another folder{kept}"
    )
    return DiskFull(line) if full else InputError(line)


def remove_temporary() -> None:
    """Remove every temporary file and folder still marked (the hard stop's clean-up)."""
    with _lock:
        paths = list(_temporary)
        _temporary.clear()
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass


def _on_signal(signum: int, frame: object) -> None:
    if _owned[0] and _phase[0] != WORK:  # start-up, or the work has ended: nothing to wait for
        hard_stop(_announce[0] if _phase[0] == START else _say_ended)
    if _requested.is_set():  # a second signal: stop now
        _requested_at[0] = -GRACE_SECONDS
    request()


def own_process(announce: Optional[Callable[[], None]] = None) -> None:
    """The process's entry point calls this first thing, before any heavy import: SIGINT and SIGTERM
    end the process with 130 from now until it exits (module docstring). ``announce`` says so until
    the command's reporter does (default: the cancel line on stderr)."""
    _owned[0] = True
    _phase[0] = START
    _announce[0] = announce or _say_cancelled
    _save_stderr()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)


def exit_process(code: int) -> "NoReturn":
    """End an owned process now with ``code`` (130 when a stop came after its work had ended), without
    the interpreter's slow teardown (about a second with torch loaded), during which a signal would
    find the default handlers back and kill the process."""
    if _requested.is_set() and code != Cancelled.exit_code:
        _say_ended()
        code = Cancelled.exit_code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or None
            pass
    os._exit(code)


def _say_cancelled() -> None:
    print(f"medlsdm: error: {Cancelled()}", file=sys.stderr, flush=True)


def _say_ended() -> None:
    print("medlsdm: stopped after the command had ended; what it wrote is complete", file=sys.stderr, flush=True)


@contextmanager
def signals_ask_to_stop() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM ask to stop (``requested()``); the handlers before it
    come back after it (in an owned process they stay until it exits). Only the main thread can take
    signals: elsewhere it changes nothing."""
    reset()
    _save_stderr()
    previous: Dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread() and not _owned[0]:
        previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if _owned[0]:
            _phase[0] = END
        else:
            reset()  # the request ended this command: it must not stop what the program does next


def _must_stop_now() -> bool:
    return _requested.is_set() and time.monotonic() - _requested_at[0] >= GRACE_SECONDS


def run_stoppable(work: Callable[[], T], on_hard_stop: Callable[[], None], poll_seconds: float = 0.05) -> T:
    """Run ``work`` in a thread; return its result or raise its exception. If a stop was asked for
    and ``work`` has not ended ``GRACE_SECONDS`` later (or a second signal came), remove the
    temporary files, call ``on_hard_stop`` (one line to the user) and exit the process with 130."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="medlsdm-work", daemon=True)
    _announce[0] = on_hard_stop
    thread.start()
    try:
        while thread.is_alive():
            thread.join(poll_seconds)
            if thread.is_alive() and _must_stop_now():
                hard_stop(on_hard_stop)
    finally:
        if _owned[0]:
            _phase[0] = END
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _save_stderr() -> None:
    """Keep a copy of the standard error's file descriptor: a stop in the middle of a write finds it
    pointed at /dev/null (the writers' native messages are muted there) and must still report."""
    if _stderr_copy[0] is None:
        try:
            _stderr_copy[0] = os.dup(2)
        except OSError:
            pass


def hard_stop(on_hard_stop: Optional[Callable[[], None]] = None) -> None:
    """Remove the temporary files, tell the user, and end the process with 130 at once."""
    remove_temporary()
    try:
        if _stderr_copy[0] is not None:
            os.dup2(_stderr_copy[0], 2)
        if on_hard_stop is not None:
            on_hard_stop()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a closed pipe must not keep the process alive
        pass
    os._exit(Cancelled.exit_code)
