"""The worker protocol's one home (MedLSDMLib.protocol): the events the JSON reporter writes are the
ones ``parse_line`` reads back, anything else is a log line, and the exit codes are the errors'."""
from __future__ import annotations

import json

import pytest

from MedLSDMLib import protocol
from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError, ModelError, OutOfMemory
from MedLSDMLib.runtime.progress import JsonReporter


def test_events_round_trip_through_their_lines() -> None:
    events = [
        protocol.progress_event("sample", 3, 10),
        protocol.log_event("loading the model"),
        protocol.done_event(["/out/a.nrrd", "/out/b.nrrd"], [1, 2], 1.23456),
        protocol.error_event("input", "label map x.nrrd has no foreground"),
    ]
    assert [e["type"] for e in events] == list(protocol.EVENT_TYPES)
    for event in events:
        line = protocol.to_line(event)
        assert "\n" not in line
        assert protocol.parse_line(line) == event
    done = events[2]
    assert done["path"] == "/out/a.nrrd" and done["seeds"] == [1, 2] and done["seconds"] == 1.235


@pytest.mark.parametrize("line", ["not json", "[1, 2]", "3", '"text"', '{"message": "no type"}', '{"type": 5}', "{"])
def test_other_lines_are_log_events(line: str) -> None:
    assert protocol.parse_line(line) == {"type": "log", "message": line}


def test_json_reporter_writes_the_protocol_events(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = JsonReporter()
    reporter.progress("decode", 1, 2)
    reporter.log("hello")
    reporter.done(["/out/x.nrrd"], [7], 0.5)
    reporter.error("model", "damaged")
    lines = capsys.readouterr().out.splitlines()
    assert [protocol.parse_line(line) for line in lines] == [
        protocol.progress_event("decode", 1, 2),
        protocol.log_event("hello"),
        protocol.done_event(["/out/x.nrrd"], [7], 0.5),
        protocol.error_event("model", "damaged"),
    ]
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_exit_codes_are_the_errors_and_say_what_they_mean() -> None:
    assert (protocol.EXIT_DONE, protocol.EXIT_FAILED, protocol.EXIT_INPUT, protocol.EXIT_MODEL,
            protocol.EXIT_MEMORY, protocol.EXIT_CANCELLED) == (0, 1, 2, 3, 4, 130)
    for error in (MedLSDMError, InputError, ModelError, OutOfMemory, Cancelled):
        assert error.exit_code in protocol.EXIT_MEANINGS
    assert protocol.exit_meaning(protocol.EXIT_MODEL) == "the model is missing or damaged"
    assert "out of memory" in protocol.exit_meaning(4)
    assert protocol.exit_meaning(77) == protocol.exit_meaning(protocol.EXIT_FAILED) == "it failed"
