"""Annotators: they see K candidate masks of one (image, class) and return grades or an order, never a mask.

- the virtual annotator (``reference="ground_truth"``): IoU of each candidate with the ground
  truth, the paper's oracle for a human;
- ``reference="prompt"``: IoU with the CRF mask of the visual prompt, an annotator that needs no
  ground truth (the candidates that agree with the unsupervised prompt win);
- ``reference="uncertainty"``: IoU with the model's own consensus under test-time augmentation
  (:mod:`samdpo.align.uncertainty`), needing no ground truth either;
- ``reference="human"``: real people's grades or orders from the browser app (:mod:`samdpo.human`),
  merged (:mod:`samdpo.align.human_files`).

Which pairs are graded: ``classes="present"`` grades an organ's candidates only on the images that
show it (what a person grading them would do; needs the ground truth, so the virtual annotator
only), ``all`` grades every class of every image. Rating noise (:func:`add_noise`) flips a share
of the grades to a random other grade, seeded, to reproduce the paper's robustness figure.

Modes: ``score`` gives each candidate a grade (:func:`grade`); ``rank`` orders them by IoU. Both
become preference weights per candidate: the positions best to worst get (b1, b2, -b2, -b1) for
K = 4 (:func:`position_weights` for other K), and the weights of candidates tied on grade (score)
or on IoU (rank) are averaged; K tied candidates get all-zero weights (no preference).

Absent classes: the reference of a class the image does not show is the empty mask, and the IoU of
two empty masks is 1, so an empty candidate gets grade 4 (rank: first) and every non-empty one
grade 1 (its IoU is 0). With ``align.candidates.empty`` the empty mask is always a candidate, so
every absent (image, class) pair with a non-empty candidate carries the preference "nothing here".
Every annotation also records its grade spread (best minus worst grade, from the IoU bins in both
modes), which stage 2's ``min_grade_gap`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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
#: The annotators the code itself plays (what a study can rerun on other splits), and with people's decisions.
SIMULATED_REFERENCES = ("ground_truth", "prompt", "uncertainty")
REFERENCES = SIMULATED_REFERENCES + ("human",)
CLASSES = ("present", "all")
#: Why an (image, class) pair carries no preference.
NOT_GRADED, IDENTICAL, EQUAL = "class absent, not graded", "identical candidates", "equal grades"


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
        ties: (K,) tie group of each candidate (equal values = tied, a higher value is better).
        reason: why the pair carries no preference (:data:`NOT_GRADED`, :data:`IDENTICAL`,
            :data:`EQUAL`); empty when it carries one.
        spread: ``rank`` mode: best minus worst grade of the candidates' IoUs (None: unknown, a
            person's order); ``score`` mode reads it off ``grades``.
    """

    order: np.ndarray
    grades: np.ndarray | None
    ties: np.ndarray
    reason: str = ""
    spread: int | None = None

    @property
    def has_preference(self) -> bool:
        """False when all candidates are tied."""
        return len(np.unique(self.ties)) > 1

    @property
    def grade_spread(self) -> int | None:
        """Best minus worst grade (0..3); None when unknown (a person's order, ``rank`` mode)."""
        return int(self.grades.max() - self.grades.min()) if self.grades is not None else self.spread


def _from_values(values: np.ndarray, scored: bool, identical: bool = False, spread: int | None = None) -> Annotation:
    """The annotation of (K,) per-candidate values, higher = better (grades, or dense IoU ranks)."""
    values = np.asarray(values, dtype=np.int64)
    tied = len(np.unique(values)) == 1
    reason = "" if not tied else IDENTICAL if identical else EQUAL
    return Annotation(
        order=np.argsort(-values, kind="stable"),
        grades=values if scored else None,
        ties=values,
        reason=reason,
        spread=None if scored else spread,
    )


def annotate(candidates: np.ndarray, reference: np.ndarray, mode: str) -> Annotation:
    """Grade (``score``) or order (``rank``) K candidates against a reference mask."""
    if mode not in MODES:
        raise ConfigError(f"annotator.mode must be one of {MODES}, got {mode!r}")
    iou = mask_iou(candidates, reference)
    identical = bool((candidates == candidates[:1]).all())
    grades = grade(iou)
    if mode == "score":
        return _from_values(grades, True, identical)
    rounded = np.round(iou, 9)  # equal IoUs (e.g. identical candidates) are ties
    spread = int(grades.max() - grades.min())
    return _from_values(np.unique(rounded, return_inverse=True)[1], False, identical, spread)


def not_graded(count: int, mode: str, reason: str = NOT_GRADED) -> Annotation:
    """The annotation of a pair that carries no decision, all candidates tied: the class is absent
    (``classes="present"``), a person skipped it, or nobody decided it (``reason`` says which)."""
    return Annotation(
        order=np.arange(count),
        grades=np.ones(count, np.int64) if mode == "score" else None,
        ties=np.zeros(count, np.int64),
        reason=reason,
        spread=None if mode == "score" else 0,
    )


def add_noise(annotation: Annotation, noise: float, rng: np.random.Generator) -> Annotation:
    """Each candidate's grade (``score``: 1..4; ``rank``: its position 0..K-1, best highest) replaced,
    with probability ``noise``, by a uniformly drawn other grade. Pairs not graded stay so, and so do
    pairs of identical candidates: whatever their grades, their DPO margin is 0 (no signal, no cost)."""
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"align.noise must be in [0, 1], got {noise}")
    count = len(annotation.order)
    flips = rng.random(count) < noise
    if annotation.reason in (NOT_GRADED, IDENTICAL) or not flips.any():
        return annotation
    scored = annotation.grades is not None
    levels = np.arange(1, 5) if scored else np.arange(count)
    values = annotation.ties.copy() if scored else _dense_positions(annotation.ties)
    for k in np.flatnonzero(flips):
        values[k] = rng.choice(levels[levels != values[k]])
    return _from_values(values, scored, spread=annotation.spread)


def _dense_positions(ties: np.ndarray) -> np.ndarray:
    """Tie groups -> positions 0..K-1 on the same scale for every pair (best = K-1, ties share)."""
    groups = np.unique(ties, return_inverse=True)[1]
    return groups + (len(ties) - 1 - groups.max())


def kendall_tau(first: Annotation, second: Annotation) -> float:
    """Kendall's tau-b between two annotators' verdicts on the same candidates; NaN when either has no preference."""
    from scipy.stats import kendalltau

    if not (first.has_preference and second.has_preference):
        return float("nan")
    return float(kendalltau(first.ties, second.ties).statistic)


def annotate_all(
    packed: np.ndarray,
    size: int,
    references: Callable[[int], np.ndarray],
    mode: str,
    graded: np.ndarray | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> list[list[Annotation]]:
    """Annotate every (image, class) pair of a candidate set.

    Args:
        packed: (N, T, K, B) bit-packed candidates (:mod:`samdpo.align.candidates`).
        size: side S of the masks.
        references: image index -> (T, S, S) bool reference masks (read once per image).
        mode: ``score`` or ``rank``.
        graded: (N, T) bool, the pairs the annotator grades (None: all).
        noise: share of grades flipped (:func:`add_noise`), seeded by ``seed``.

    Returns:
        N lists of T annotations.
    """
    from samdpo.align.candidates import unpack_masks

    rng = np.random.default_rng(seed)
    out = []
    count = packed.shape[2]
    for n in range(len(packed)):
        masks, reference = unpack_masks(np.asarray(packed[n]), size), references(n)
        row = []
        for t in range(packed.shape[1]):
            if graded is not None and not graded[n, t]:
                row.append(not_graded(count, mode))
                continue
            row.append(
                add_noise(annotate(masks[t], reference[t], mode), noise, rng)
                if noise > 0
                else annotate(masks[t], reference[t], mode)
            )
        out.append(row)
    return out


def position_weights(count: int, beta1: float = 1.0, beta2: float = 0.5) -> np.ndarray:
    """(K,) weights of the positions best to worst, summing to 0: the paper's (b1, b2, -b2, -b1) for K = 4;
    otherwise the better half runs evenly from b1 to b2 (b1 alone for K < 4), the worse half mirrors it
    negated, and the middle position of an odd K gets 0."""
    if count < 2:
        raise ConfigError(f"a preference needs at least 2 candidates, got {count}")
    half = count // 2
    top = np.linspace(beta1, beta2, half) if half > 1 else np.array([beta1])
    return np.concatenate([top, np.zeros(count % 2), -top[::-1]])


def preference_weights(annotation: Annotation, beta1: float = 1.0, beta2: float = 0.5) -> np.ndarray:
    """(K,) weight of each candidate: positions best to worst get :func:`position_weights`, averaged over ties."""
    count = len(annotation.order)
    by_position = position_weights(count, beta1, beta2)
    weights = np.zeros(count)
    weights[annotation.order] = by_position
    for group in np.unique(annotation.ties):
        members = annotation.ties == group
        weights[members] = weights[members].mean()
    return weights


#: The columns of an annotations table, as ``align`` reads them (a human's file adds its own after these).
ANNOTATION_FIELDS = (
    ("sample_id", pa.string()),
    ("class_index", pa.int16()),
    ("order", pa.list_(pa.int8())),
    ("grades", pa.list_(pa.int8())),
    ("ties", pa.list_(pa.int8())),
    ("has_preference", pa.bool_()),
    ("reason", pa.string()),
    ("grade_spread", pa.int8()),
)


def annotation_row(sample_id: str, class_index: int, annotation: Annotation) -> dict[str, Any]:
    """One annotations-table row (the :data:`ANNOTATION_FIELDS` columns) of an (image, class)."""
    return {
        "sample_id": sample_id,
        "class_index": class_index,
        "order": annotation.order.tolist(),
        "grades": None if annotation.grades is None else annotation.grades.tolist(),
        "ties": annotation.ties.tolist(),
        "has_preference": annotation.has_preference,
        "reason": annotation.reason,
        "grade_spread": annotation.grade_spread,
    }


def write_annotations(
    path: Path, rows: list[dict[str, Any]], meta: Mapping[str, Any], extra_fields: tuple = ()
) -> None:
    """Write one row per (image, class) atomically: :data:`ANNOTATION_FIELDS`, then ``extra_fields``
    ((name, pyarrow type) pairs), with ``meta`` as JSON in the schema metadata."""
    schema = pa.schema(list(ANNOTATION_FIELDS) + list(extra_fields))
    table = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(
        {"samdpo": json.dumps(dict(meta), sort_keys=True)}
    )
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_annotations(path: Path) -> dict[tuple[str, int], Annotation]:
    """(sample id, class index) -> :class:`Annotation`."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no annotations; run the annotate rule first")
    out = {}
    for row in pq.read_table(path).to_pylist():
        grades = None if row["grades"] is None else np.asarray(row["grades"])
        spread = None if grades is not None else row.get("grade_spread")
        out[(row["sample_id"], row["class_index"])] = Annotation(
            np.asarray(row["order"]), grades, np.asarray(row["ties"]), row.get("reason") or "", spread
        )
    return out
