"""The (image, class) pairs that carry a preference, from the annotator's rankings (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from samdpo.align.annotator import EQUAL, Annotation, preference_weights
from samdpo.errors import ConfigError, DataError

#: Why a pair with a preference is left out: its best and worst grades differ by less than ``min_grade_gap``.
WITHIN_GAP = "grades within the gap"


@dataclass(frozen=True)
class Pairs:
    """The (image, class) pairs stage 2 trains on, in image order.

    Attributes:
        image: (P,) image index; klass: (P,) class index.
        weights: (P, K) preference weight of each candidate; best: (P,) best candidate's index.
        without_preference: pairs skipped because all candidates are tied.
        reasons: why they carry no preference -> how many (see :mod:`samdpo.align.annotator`).
    """

    image: np.ndarray
    klass: np.ndarray
    weights: np.ndarray
    best: np.ndarray
    without_preference: int
    reasons: Mapping[str, int] = field(default_factory=dict)


def preference_pairs(
    sample_ids: Sequence[str],
    class_count: int,
    annotations: Mapping[tuple[str, int], Annotation],
    beta1: float,
    beta2: float,
    min_grade_gap: int = 0,
) -> Pairs:
    """The pairs that carry a preference (possibly none); every (image, class) must have been annotated.

    ``min_grade_gap``: a pair is kept only where its best and worst candidates' grades differ by at
    least this (0 or 1: every pair with a preference); the others count as :data:`WITHIN_GAP`."""
    missing = [(s, t) for s in sample_ids for t in range(class_count) if (s, t) not in annotations]
    if missing:
        raise DataError(
            f"no annotation for {len(missing)} (image, class) pairs, e.g. image {missing[0][0]} class "
            f"{missing[0][1]}; rerun the annotate rule"
        )
    image, klass, weights, best, skipped = [], [], [], [], 0
    reasons: dict[str, int] = {}
    for i, sample in enumerate(sample_ids):
        for t in range(class_count):
            annotation = annotations[(sample, t)]
            spread = annotation.grade_spread
            if annotation.has_preference and min_grade_gap > 1 and spread is None:
                raise ConfigError(
                    f"stage2.min_grade_gap {min_grade_gap} needs grades; the order of image {sample} class {t} "
                    "carries none (a person's rank decisions): use min_grade_gap 0 or the score mode"
                )
            if not annotation.has_preference or (spread is not None and spread < min_grade_gap):
                skipped += 1
                reason = (annotation.reason or EQUAL) if not annotation.has_preference else WITHIN_GAP
                reasons[reason] = reasons.get(reason, 0) + 1
                continue
            image.append(i)
            klass.append(t)
            weights.append(preference_weights(annotation, beta1, beta2))
            best.append(int(annotation.order[0]))
    count = len(next(iter(annotations.values())).order) if annotations else 4
    weights_array = np.array(weights, np.float32) if weights else np.zeros((0, count), np.float32)
    return Pairs(
        np.array(image, np.int64), np.array(klass, np.int64), weights_array, np.array(best, np.int64), skipped, reasons
    )
