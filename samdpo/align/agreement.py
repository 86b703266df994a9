"""Agreement between annotators, and their merge into one verdict per (image, class).

Rules:

- An annotator *decided* a pair when its annotation of the pair exists and its reason is none of
  :data:`SKIPPED` (the person skipped it), ``NOT_GRADED`` (class absent) or :data:`NOT_DECIDED` (a merge
  that had nobody). "All candidates equal" (``EQUAL``, ``IDENTICAL``) is a decision: a tie, no preference.
- Merge, ``score`` mode: each candidate gets the most frequent grade among the annotators who decided the
  pair; among equally frequent grades the lower one wins (conservative).
- Merge, ``rank`` mode: Borda count. Each annotator's tie groups become positions on one scale (best = K-1,
  tied candidates share a position), averaged over the annotators; equal means stay tied, and the means
  become dense ranks (higher = better).
- One annotator decided: its annotation is returned unchanged. Nobody: all candidates tied, reason
  :data:`NOT_DECIDED`, no preference.
- Agreement: unweighted Cohen's kappa on the grades (``score`` mode only) and Kendall's tau-b on the
  verdicts, averaged over the pairs where both carry a preference.
- Against the virtual annotator (:func:`virtual_agreement`): the human grades counted per IoU bin of the
  paper's grading; a rank-mode person gives no grades, so only the tau of the summary row is filled.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from samdpo.align.annotator import (
    GRADE_EDGES,
    IDENTICAL,
    MODES,
    NOT_GRADED,
    Annotation,
    _dense_positions,
    _from_values,
    grade,
    kendall_tau,
    not_graded,
)
from samdpo.errors import ConfigError, DataError

#: Why a human decision file's pair carries no decision: the person skipped it.
SKIPPED = "skipped by the annotator"
#: Why a merged pair carries no preference: no annotator decided it.
NOT_DECIDED = "no human decision"
_UNDECIDED = (SKIPPED, NOT_GRADED, NOT_DECIDED)
_GRADES = (1, 2, 3, 4)
Key = tuple[str, int]


def is_decided(annotation: Annotation | None) -> bool:
    """True when the annotation exists and carries a decision (possibly that all candidates are tied)."""
    return annotation is not None and annotation.reason not in _UNDECIDED


def cohen_kappa(first: np.ndarray, second: np.ndarray, levels: Sequence[int] = _GRADES) -> float:
    """Unweighted Cohen's kappa of two (N,) integer label arrays over ``levels``.

    NaN when N = 0; when the expected agreement is 1 (both constant and equal), 1.0 if the observed one is 1.
    """
    first, second = np.asarray(first).ravel(), np.asarray(second).ravel()
    if len(first) != len(second):
        raise DataError(f"kappa needs labels of equal length, got {len(first)} and {len(second)}")
    if len(first) == 0:
        return float("nan")
    grid = np.asarray(levels)
    if not (np.isin(first, grid).all() and np.isin(second, grid).all()):
        raise DataError(f"kappa labels must be among {tuple(levels)}")
    observed = float(np.mean(first == second))
    expected = float((first[:, None] == grid).mean(0) @ (second[:, None] == grid).mean(0))
    if np.isclose(expected, 1.0):
        return 1.0 if observed == 1.0 else float("nan")
    return (observed - expected) / (1.0 - expected)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"annotator.mode must be one of {MODES}, got {mode!r}")


def _merge_one(key: Key, votes: list[Annotation], mode: str) -> Annotation:
    """The merged verdict of one pair from the (non-empty) annotations that decided it."""
    count = len(votes[0].order)
    if any(len(vote.order) != count for vote in votes):
        raise DataError(f"{key}: the annotators saw different numbers of candidates")
    if mode == "score":
        if any(vote.grades is None or not np.isin(vote.grades, _GRADES).all() for vote in votes):
            raise DataError(f"{key}: a score-mode merge needs grades 1..4 from every annotator")
    if len(votes) == 1:
        return votes[0]
    identical = all(vote.reason == IDENTICAL for vote in votes)
    if mode == "score":
        counts = (np.stack([vote.grades for vote in votes])[:, :, None] == np.asarray(_GRADES)).sum(0)  # (K, 4)
        return _from_values(counts.argmax(1) + 1, True, identical)  # argmax: the first, lowest, of the most frequent
    # summed positions order the candidates as their means do, without rounding
    positions = np.stack([_dense_positions(np.asarray(vote.ties)) for vote in votes]).sum(0)
    return _from_values(np.unique(positions, return_inverse=True)[1], False, identical)


def merge_annotations(
    annotators: Mapping[str, Mapping[Key, Annotation]], mode: str, keys: Sequence[Key]
) -> dict[Key, Annotation]:
    """One merged :class:`Annotation` per key of ``keys`` (all pairs of the candidate set).

    Args:
        annotators: annotator name -> (sample id, class index) -> annotation (with K candidates).
        mode: ``score`` (majority grade, the lower on a tie) or ``rank`` (Borda, ties kept).
        keys: the pairs to merge; pairs no annotator decided get :data:`NOT_DECIDED`.
    """
    _check_mode(mode)
    default = next((len(a.order) for per in annotators.values() for a in per.values()), 4)
    out = {}
    for key in keys:
        present = [per[key] for per in annotators.values() if key in per]
        votes = [annotation for annotation in present if is_decided(annotation)]
        count = len(present[0].order) if present else default
        out[key] = _merge_one(key, votes, mode) if votes else not_graded(count, mode, NOT_DECIDED)
    return out


def _grades_of(annotations: Iterable[Annotation], who: str) -> np.ndarray:
    """The grades of the annotations concatenated, (sum of K,)."""
    grades = [annotation.grades for annotation in annotations]
    if any(g is None for g in grades):
        raise DataError(f"{who}: score-mode agreement needs grades, found a rank-mode annotation")
    return np.concatenate(grades).astype(np.int64) if grades else np.zeros(0, np.int64)


def _mean_tau(pairs: Iterable[tuple[Annotation, Annotation]]) -> float:
    """Mean Kendall tau-b over the pairs where both verdicts carry a preference; NaN if none."""
    taus = [kendall_tau(a, b) for a, b in pairs if a.has_preference and b.has_preference]
    return float(np.mean(taus)) if taus else float("nan")


def pairwise_agreement(annotators: Mapping[str, Mapping[Key, Annotation]], mode: str) -> list[dict[str, Any]]:
    """One row per unordered pair of annotators (names sorted), on the keys both decided.

    Rows: ``first``, ``second``, ``pairs`` (keys both decided), ``kappa`` (``score``: Cohen's kappa of all
    candidates' grades; ``rank``: NaN), ``tau`` (mean Kendall tau-b where both have a preference, else NaN).
    """
    _check_mode(mode)
    rows = []
    for first, second in itertools.combinations(sorted(annotators), 2):
        a, b = annotators[first], annotators[second]
        shared = sorted(key for key in a if key in b and is_decided(a[key]) and is_decided(b[key]))
        kappa = float("nan")
        if mode == "score":
            kappa = cohen_kappa(_grades_of((a[k] for k in shared), first), _grades_of((b[k] for k in shared), second))
        tau = _mean_tau((a[k], b[k]) for k in shared)
        rows.append({"first": first, "second": second, "pairs": len(shared), "kappa": kappa, "tau": tau})
    return rows


def bin_labels() -> list[str]:
    """The IoU bins of the virtual grades 1..4: ``[0.00, 0.40)`` ... ``[0.70, 1.00]``."""
    edges = (0.0, *GRADE_EDGES, 1.0)
    return [f"[{lo:.2f}, {hi:.2f}{']' if hi == 1.0 else ')'}" for lo, hi in itertools.pairwise(edges)]


def _grade_row(label: str, virtual: int | None, counts: np.ndarray, candidates: int) -> dict[str, Any]:
    """One table row from the (4,) counts of human grades 1..4."""
    row: dict[str, Any] = {"iou_bin": label, "virtual_grade": virtual, "candidates": candidates}
    row.update({f"human_grade_{g}": int(c) for g, c in zip(_GRADES, counts)})
    total = counts.sum()
    row["mean_human_grade"] = float(counts @ np.asarray(_GRADES) / total) if total else float("nan")
    return row


def virtual_agreement(human: Mapping[Key, Annotation], ious: Mapping[Key, np.ndarray]) -> list[dict[str, Any]]:
    """How a person's grades relate to the IoU bins of the virtual annotator, on the pairs the person decided.

    Args:
        human: (sample id, class index) -> the person's annotation of K candidates.
        ious: (sample id, class index) -> (K,) IoU of each candidate with the ground truth.

    Returns:
        Four rows, one per IoU bin (virtual grade 1..4): ``iou_bin``, ``virtual_grade``, ``candidates`` (decided
        candidates in the bin), ``human_grade_1..4`` (their human grades, 0 for a rank-mode person),
        ``mean_human_grade``, ``kappa`` and ``tau`` (NaN); then the row ``all`` with the totals, the kappa
        of human and virtual grades (NaN without grades) and the mean Kendall tau-b of the two verdicts.
    """
    counts, candidates = np.zeros((4, 4), np.int64), np.zeros(4, np.int64)  # (virtual, human) grades
    human_grades, virtual_grades, pairs = [], [], []
    for key in sorted(key for key, annotation in human.items() if is_decided(annotation)):
        if key not in ious:
            raise DataError(f"{key}: decided by the annotator but no IoU with the ground truth")
        annotation, iou = human[key], np.asarray(ious[key], dtype=np.float64)
        if iou.shape != (len(annotation.order),):
            raise DataError(f"{key}: {iou.shape} IoUs for {len(annotation.order)} candidates")
        virtual = np.asarray(grade(iou), dtype=np.int64)
        pairs.append((annotation, _from_values(virtual, True)))
        np.add.at(candidates, virtual - 1, 1)
        if annotation.grades is not None:
            grades = np.asarray(annotation.grades, dtype=np.int64)
            if not np.isin(grades, _GRADES).all():
                raise DataError(f"{key}: human grades must be 1..4, got {grades.tolist()}")
            np.add.at(counts, (virtual - 1, grades - 1), 1)
            human_grades.append(grades)
            virtual_grades.append(virtual)
    nan = float("nan")
    rows = [
        {**_grade_row(label, g, counts[g - 1], int(candidates[g - 1])), "kappa": nan, "tau": nan}
        for g, label in zip(_GRADES, bin_labels())
    ]
    concat = [np.concatenate(x) if x else np.zeros(0, np.int64) for x in (human_grades, virtual_grades)]
    summary = _grade_row("all", None, counts.sum(0), int(candidates.sum()))
    rows.append({**summary, "kappa": cohen_kappa(*concat), "tau": _mean_tau(pairs)})
    return rows
