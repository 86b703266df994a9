"""One person's decisions on the candidates, kept in ``annotations_human_{name}.parquet``.

The file has the columns ``align`` reads from the virtual annotator (order, grades, ties,
has_preference, reason per (image, class)) plus who decided, when (UTC, ISO 8601) and in how many
seconds. Every decision rewrites the whole file atomically (temporary file, fsync, rename) before it is
acknowledged, so a killed server loses nothing it acknowledged and the file is never half-written; a
few hundred rows rewrite in milliseconds. Reopening the file resumes: the pairs it holds are decided.

The file's metadata names the candidates it grades (dataset, model settings hash, candidate settings) and the
mode; a file of other candidates or another mode is refused, never mixed.
"""

from __future__ import annotations

import datetime
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from samdpo.align.annotator import MODES, Annotation, _from_values, annotation_row, write_annotations
from samdpo.align.human_files import IDENTITY, decision_meta
from samdpo.errors import ConfigError, DataError

#: The columns a human's file adds after the annotator's.
HUMAN_FIELDS = (("annotator", pa.string()), ("decided_at", pa.string()), ("seconds", pa.float64()))
#: What an annotator name may hold (it becomes part of a file name).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def check_name(name: str) -> str:
    """An annotator name usable in a file name: letters, digits, ``_ . -``, at most 40 characters."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ConfigError(f"annotator name {name!r}: use 1-40 letters, digits, '_', '.' or '-' (it names a file)")
    return name


def decisions_path(folder: Path | str, name: str) -> Path:
    """``folder/annotations_human_{name}.parquet``."""
    return Path(folder) / f"annotations_human_{check_name(name)}.parquet"


def graded(grades: Sequence[int], count: int) -> Annotation:
    """The annotation of ``count`` grades 1..4 given by a person (``score`` mode)."""
    values = np.asarray(grades, dtype=np.int64)
    if values.shape != (count,) or not np.isin(values, (1, 2, 3, 4)).all():
        raise DataError(f"a score needs {count} grades in 1..4, got {list(grades)}")
    return _from_values(values, True)


def ranked(order: Sequence[int], count: int) -> Annotation:
    """The annotation of an order (candidate indices, best first, each once) given by a person (``rank``)."""
    if sorted(int(k) for k in order) != list(range(count)):
        raise DataError(f"a ranking orders each of the {count} candidates once, got {list(order)}")
    values = np.empty(count, np.int64)
    values[np.asarray(order, dtype=np.int64)] = np.arange(count - 1, -1, -1)
    return _from_values(values, False)


class DecisionLog:
    """The decisions of one annotator on one candidate set, in decision order; thread-safe.

    Args:
        path: the decision file (created at the first decision; resumed when it exists).
        annotator: the person's name (:func:`check_name`).
        mode: ``score`` or ``rank``.
        candidates: the candidates' metadata (``candidates.json``); the :data:`IDENTITY` keys are kept.
    """

    def __init__(self, path: Path | str, annotator: str, mode: str, candidates: Mapping[str, Any]) -> None:
        if mode not in MODES:
            raise ConfigError(f"annotation mode must be one of {MODES}, got {mode!r}")
        self.path, self.annotator, self.mode = Path(path), check_name(annotator), mode
        self.meta = {"annotator": annotator, "mode": mode, **{key: candidates[key] for key in IDENTITY}}
        self._lock = threading.Lock()
        self.rows: list[dict[str, Any]] = self._read() if self.path.exists() else []

    def _read(self) -> list[dict[str, Any]]:
        """The rows of an existing file, after checking it grades the same candidates in the same mode."""
        found = decision_meta(self.path)
        differing = sorted(key for key in self.meta if found.get(key) != self.meta[key])
        if differing:
            raise DataError(
                f"{self.path}: decisions on other candidates or settings ({', '.join(differing)} differ); "
                "they were made on an earlier run: move the file away to grade these candidates"
            )
        return pq.read_table(self.path).to_pylist()

    def decided(self) -> set[tuple[str, int]]:
        """The (sample id, class index) pairs with a decision (a skip is one)."""
        with self._lock:
            return {(row["sample_id"], row["class_index"]) for row in self.rows}

    def append(self, sample_id: str, class_index: int, annotation: Annotation, seconds: float) -> None:
        """Record a decision and rewrite the file; an already decided pair is refused."""
        when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        row = annotation_row(sample_id, class_index, annotation)
        row |= {"annotator": self.annotator, "decided_at": when, "seconds": float(max(seconds, 0.0))}
        with self._lock:
            if any((r["sample_id"], r["class_index"]) == (sample_id, class_index) for r in self.rows):
                raise DataError(f"image {sample_id} class {class_index} is already decided by {self.annotator}")
            self._write(self.rows + [row])

    def undo(self) -> tuple[str, int] | None:
        """Remove the last decision and rewrite the file; its (sample id, class index), or None if none."""
        with self._lock:
            if not self.rows:
                return None
            last = self.rows[-1]
            self._write(self.rows[:-1])
            return last["sample_id"], last["class_index"]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` atomically, then keep them (a failed write changes nothing)."""
        write_annotations(self.path, rows, self.meta, HUMAN_FIELDS)
        self.rows = rows
