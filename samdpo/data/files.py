"""Listing dataset folders the same way in every reader.

Suffixes match in any letter case (``X.PNG`` is an image like ``X.png``); hidden files (names
starting with ``.``, such as macOS ``._X.png`` resource forks) are skipped; a file name that is not
valid UTF-8 is refused, since it could not be stored or shown later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from samdpo.errors import DataError


def shown(path: Path) -> str:
    """``path`` as printable text: bytes that are not UTF-8 appear as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def stem(path: Path, suffixes: tuple[str, ...]) -> str:
    """The file name without the first of ``suffixes`` (lower case) it ends with in any case."""
    lower = path.name.lower()
    suffix = next(s for s in suffixes if lower.endswith(s))
    return path.name[: -len(suffix)]


def by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Stem -> file for the visible files of ``folder`` ending with one of ``suffixes`` (lower case).

    Raises:
        DataError: a file name is not valid UTF-8, or two files share a stem (``X.png`` and ``X.PNG``).
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.lower().endswith(suffixes) or not path.is_file():
            continue
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{shown(path)}: the file name is not valid UTF-8; rename the file") from None
        key = stem(path, suffixes)
        if key in found:
            raise DataError(f"{path} and {found[key]} are two files for {key!r}; keep one")
        found[key] = path
    return found


def case_id(name: str, path: Path) -> str:
    """Lower-case ``name`` and keep only [a-z0-9_]: ``"benign (12)"`` -> ``"benign_12"``.

    Raises:
        DataError: nothing is left (e.g. a name made only of non-ASCII letters).
    """
    value = re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", name.lower())).strip("_")
    if not value:
        raise DataError(f"{path}: the file name has no ASCII letter or digit to make a case id from; rename the file")
    return value


def check_unique(cases: Iterable[tuple[str, Path]]) -> None:
    """Fail if two files (case id, path) map to the same case id."""
    seen: dict[str, Path] = {}
    for case, path in cases:
        if case in seen:
            raise DataError(f"{path} and {seen[case]} both map to the case id {case!r}; rename one")
        seen[case] = path
