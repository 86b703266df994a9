"""Assertions shared by the reliability tests: bad input gets one clear line, exit 2, nothing half-written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from samdpo.cli import main


def error_line(err: str) -> str:
    """The one ``samdpo: error:`` line of a command's standard error (asserted: one, no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("samdpo: error:")]
    assert len(lines) == 1, err
    return lines[0]


def expect_error(
    argv: Sequence[str],
    capsys: pytest.CaptureFixture[str],
    *needles: str,
    absent: Iterable[Path] = (),
    intact: Mapping[Path, bytes] | None = None,
) -> str:
    """Run ``samdpo argv`` in process and assert the reliability contract; returns the error line.

    Args:
        argv: the command's arguments.
        capsys: pytest's capture fixture.
        needles: texts the error line must contain (the file or setting it names, what to do).
        absent: outputs that must not exist afterwards.
        intact: path -> the bytes it must still hold (a previous output left as it was).
    """
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    line = error_line(err)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    for path in absent:
        assert not Path(path).exists(), f"{path} was written"
    for path, content in (intact or {}).items():
        assert Path(path).read_bytes() == content, f"{path} changed"
    return line
