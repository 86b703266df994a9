"""Annotators: they see K candidate masks of one (image, class) and return grades or an order, never a mask.

- the virtual annotator (``reference="ground_truth"``): IoU of each candidate with the ground
  truth, the paper's oracle for a human;
- ``reference="prompt"``: IoU with the CRF mask of the visual prompt, an annotator that needs no
  ground truth (the candidates that agree with the unsupervised prompt win).

Modes: ``score`` gives each candidate a grade (:func:`grade`); ``rank`` orders them by IoU. Both
become preference weights per candidate: the positions best to worst get (b1, b2, -b2, -b1), and
the weights of candidates tied on grade (score) or on IoU (rank) are averaged; four tied
candidates get all-zero weights (no preference).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

#: Grade boundaries on IoU: < 0.40 -> 1, [0.40, 0.55) -> 2, [0.55, 0.70) -> 3, >= 0.70 -> 4.
GRADE_EDGES = (0.40, 0.55, 0.70)
MODES = ("score", "rank")
REFERENCES = ("ground_truth", "prompt")


def grade(iou: float | np.ndarray) -> int | np.ndarray:
    """The grade 1..4 of an IoU (scalar or array), with the paper's bins."""
    grades = np.searchsorted(np.asarray(GRADE_EDGES), np.asarray(iou, dtype=np.float64), side="right") + 1
    return int(grades) if np.ndim(grades) == 0 else grades


def mask_iou(candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(K,) IoU of (K, H, W) bool candidates with an (H, W) bool mask; two empty masks have IoU 1."""
    inter = (candidates & reference).reshape(len(candidates), -1).sum(1)
    union = (candidates | reference).reshape(len(candidates), -1).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


@dataclass(frozen=True)
class Annotation:
    """What leaves the annotator for one (image, class).

    Attributes:
        order: (K,) candidate indices, best first (ties keep candidate order).
        grades: (K,) grades 1..4 per candidate (``score`` mode), or None (``rank`` mode).
        ties: (K,) tie group of each candidate (equal values = tied).
    """

    order: np.ndarray
    grades: np.ndarray | None
    ties: np.ndarray

    @property
    def has_preference(self) -> bool:
        """False when all candidates are tied."""
        return len(np.unique(self.ties)) > 1


def annotate(candidates: np.ndarray, reference: np.ndarray, mode: str) -> Annotation:
    """Grade (``score``) or order (``rank``) K candidates against a reference mask."""
    if mode not in MODES:
        raise ConfigError(f"annotator.mode must be one of {MODES}, got {mode!r}")
    iou = mask_iou(candidates, reference)
    if mode == "score":
        grades = np.asarray(grade(iou), dtype=np.int64)
        return Annotation(order=np.argsort(-grades, kind="stable"), grades=grades, ties=grades)
    rounded = np.round(iou, 9)  # equal IoUs (e.g. identical candidates) are ties
    return Annotation(order=np.argsort(-rounded, kind="stable"), grades=None, ties=np.unique(rounded, return_inverse=True)[1])


def preference_weights(annotation: Annotation, beta1: float = 1.0, beta2: float = 0.5) -> np.ndarray:
    """(K,) weight of each candidate: positions best to worst get (b1, b2, -b2, -b1), averaged over ties."""
    count = len(annotation.order)
    if count != 4:
        raise ConfigError(f"the DPO weights are defined for 4 candidates, got {count}")
    by_position = np.array([beta1, beta2, -beta2, -beta1])
    weights = np.zeros(count)
    weights[annotation.order] = by_position
    for group in np.unique(annotation.ties):
        members = annotation.ties == group
        weights[members] = weights[members].mean()
    return weights


def write_annotations(path: Path, rows: list[dict[str, Any]], meta: Mapping[str, Any]) -> None:
    """Write one row per (image, class): order, grades (or null), tie groups, has_preference."""
    schema = pa.schema(
        [
            ("sample_id", pa.string()),
            ("class_index", pa.int16()),
            ("order", pa.list_(pa.int8())),
            ("grades", pa.list_(pa.int8())),
            ("ties", pa.list_(pa.int8())),
            ("has_preference", pa.bool_()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata({"samdpo": json.dumps(dict(meta), sort_keys=True)})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_annotations(path: Path) -> dict[tuple[str, int], Annotation]:
    """(sample id, class index) -> :class:`Annotation`."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no annotations; run the annotate rule first")
    out = {}
    for row in pq.read_table(path).to_pylist():
        grades = None if row["grades"] is None else np.asarray(row["grades"])
        out[(row["sample_id"], row["class_index"])] = Annotation(np.asarray(row["order"]), grades, np.asarray(row["ties"]))
    return out
