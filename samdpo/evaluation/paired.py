"""Paired comparison of two models on the same test images: the mean-Dice difference and its interval.

Both models' per-image tables (:func:`samdpo.evaluation.metrics.evaluate`: one row per (image,
present class)) are joined; the statistic is the table's main metric, the mean over classes of each
class's mean Dice (``mdice``). Its spread comes from a bootstrap over test **cases** (patients /
volumes: slices of one volume are not independent), resampled with replacement with the pairing
kept, so that what two models share (hard images, absent classes) cancels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from samdpo.errors import DataError

KEYS = ["sample_id", "case_id", "class_name"]


@dataclass(frozen=True)
class PairedDifference:
    """``model - reference`` in mean Dice (percentage points).

    Attributes:
        reference, model: each model's mean Dice over classes on the joined rows.
        difference: model - reference.
        low, high: bounds of the bootstrap interval of the difference.
        confidence: its level (0.95).
        cases, images: test cases and images compared.
        draws: bootstrap resamples.
    """

    reference: float
    model: float
    difference: float
    low: float
    high: float
    confidence: float
    cases: int
    images: int
    draws: int


def _case_sums(frame: pd.DataFrame, cases: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cases, classes) Dice sums and row counts."""
    case_index = pd.Index(cases).get_indexer(frame["case_id"])
    class_index = pd.Index(classes).get_indexer(frame["class_name"])
    sums = np.zeros((len(cases), len(classes)))
    counts = np.zeros((len(cases), len(classes)))
    np.add.at(sums, (case_index, class_index), frame["dice"].to_numpy(dtype=np.float64))
    np.add.at(counts, (case_index, class_index), 1.0)
    return sums, counts


def _mdice(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over classes of the weighted per-class mean, for each row of (D, cases) ``weights`` -> (D,)."""
    totals = weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = (weights @ sums) / totals
    return np.nanmean(np.where(totals > 0, per_class, np.nan), axis=1)


def paired_difference(
    reference: pd.DataFrame, model: pd.DataFrame, draws: int = 2000, seed: int = 0, confidence: float = 0.95
) -> PairedDifference:
    """Mean-Dice difference ``model - reference`` over the same (image, class) rows, with a case bootstrap.

    Args:
        reference, model: per-image tables with ``sample_id``, ``case_id``, ``class_name``, ``dice`` (%).
        draws: bootstrap resamples of the test cases.
        seed: seed of the resampling.
        confidence: level of the percentile interval.

    Raises:
        DataError: the two tables do not hold the same (image, class) rows (other images or classes
            were evaluated), or they are empty.
    """
    if not 0.0 < confidence < 1.0 or draws < 1:
        raise ValueError(f"confidence must lie in (0, 1) and draws be >= 1, got {confidence} and {draws}")
    for name, frame in (("reference", reference), ("model", model)):
        missing = set(KEYS + ["dice"]) - set(frame.columns)
        if missing:
            raise DataError(f"the {name} table lacks the columns {sorted(missing)}")
    left, right = reference.set_index(KEYS).sort_index(), model.set_index(KEYS).sort_index()
    if not left.index.equals(right.index):
        only = left.index.symmetric_difference(right.index)
        raise DataError(
            f"the two tables evaluate different (image, class) rows, e.g. {only[0]}: compare models predicted on the "
            "same test split"
        )
    if left.empty:
        raise DataError("nothing to compare: the tables are empty")
    rows = left.index.to_frame(index=False)
    cases = np.unique(rows["case_id"])
    classes = np.unique(rows["class_name"])
    sums_ref, counts = _case_sums(rows.assign(dice=left["dice"].to_numpy()), cases, classes)
    sums_model, _ = _case_sums(rows.assign(dice=right["dice"].to_numpy()), cases, classes)
    ones = np.ones((1, len(cases)))
    point_ref, point_model = float(_mdice(ones, sums_ref, counts)[0]), float(_mdice(ones, sums_model, counts)[0])
    rng = np.random.default_rng(seed)
    weights = np.stack(
        [np.bincount(rng.integers(0, len(cases), len(cases)), minlength=len(cases)) for _ in range(draws)]
    ).astype(np.float64)
    differences = _mdice(weights, sums_model, counts) - _mdice(weights, sums_ref, counts)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.nanpercentile(differences, [tail, 100.0 - tail])
    return PairedDifference(
        point_ref,
        point_model,
        point_model - point_ref,
        float(low),
        float(high),
        confidence,
        len(cases),
        int(rows["sample_id"].nunique()),
        draws,
    )
