"""Control characters (NUL, escape sequences, newlines) that a user's file puts in a message reach the
terminal as '?': the error line stays one printable line, as card text already is; the worker's JSON
carries them escaped too."""
from __future__ import annotations

import json
from pathlib import Path

from MedLSDMLib.runtime.progress import make_reporter

from conftest import assert_one_line_error, brain_labels, generate_args, run_cli, write


def test_control_characters_of_a_mapping_file_are_not_printed_raw(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    table = tmp_path / "m.csv"
    table.write_bytes(b"1,csf\n2,grey\x00matter\x1b[31m\n3,white_matter\n")
    result = run_cli(capfd, *generate_args(labels, tmp_path / "o.nii.gz", bundle_dir, "--map-file", table))
    line = assert_one_line_error(result, 2, "m.csv line 2")
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in line), repr(line)
    assert "grey?matter?[31m" in line


def test_every_reporter_escapes_control_characters(capfd) -> None:
    message = "bad\x00name\x1b[2J\nsecond line"
    for mode in ("text", "none", "json"):
        reporter = make_reporter(mode)
        reporter.log(message)
        reporter.error("input", message)
        captured = capfd.readouterr()
        for text in (captured.err, captured.out):
            assert "\x00" not in text and "\x1b" not in text, (mode, text)
        assert captured.err.count("\n") == (2 if mode == "text" else 1), (mode, captured.err)
        for line in captured.out.splitlines():
            assert "\x00" not in json.loads(line)["message"]
