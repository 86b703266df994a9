"""Case-level splits into ``labeled``, ``unlabeled``, ``validation`` and ``test``.

Cases are ordered by a seeded hash of their id (so adding a case moves few others between splits),
then the first ``round(labeled * n)`` are labelled, the next ``round(unlabeled * n)`` unlabelled,
the last ``round(validation * n)`` validation and those between them test; labelled, unlabelled and
test get at least one case each, validation at least two. The paper's "20% labelled" settings use
``labeled`` + ``unlabeled`` together, both with their labels.

Validation is the *selection* set: every choice (best epoch, early stop, the alignment study's
setting) reads its labels, never the test split's, which only the reported numbers read. It sits at
the end of the order, so the alignment study's larger unlabelled fractions (the next cases after
``unlabeled``) take test cases and never validation ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

SPLITS = ("labeled", "unlabeled", "validation", "test")
#: The splits a trainer may take labels from: validation labels are for selection, test labels for evaluation.
TRAINING_SPLITS = ("labeled", "unlabeled")
#: Fewest validation cases: a selection on one case is a selection on noise.
MIN_VALIDATION = 2


def _order_key(seed: int, case_id: str) -> str:
    return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()


def split_counts(n: int, labeled: float, unlabeled: float, validation: float) -> dict[str, int]:
    """How many of ``n`` cases each split gets (see the module docstring).

    Raises:
        ConfigError: a fraction out of (0, 1), or too few cases to give every split its least.
    """
    for name, value in (("labeled", labeled), ("unlabeled", unlabeled), ("validation", validation)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"splits.{name} must be in (0, 1), got {value}")
    if labeled + unlabeled + validation >= 1.0:
        raise ConfigError(
            f"splits: labeled {labeled} + unlabeled {unlabeled} + validation {validation} = "
            f"{labeled + unlabeled + validation:g} leaves no test cases; make their sum below 1 (the rest is test)"
        )
    counts = {
        "labeled": max(1, round(labeled * n)),
        "unlabeled": max(1, round(unlabeled * n)),
        "validation": max(MIN_VALIDATION, round(validation * n)),
    }
    counts["test"] = n - sum(counts.values())
    if counts["test"] < 1:
        raise ConfigError(
            f"splits: {n} cases cannot give labeled {counts['labeled']}, unlabeled {counts['unlabeled']}, validation "
            f"{counts['validation']} (at least {MIN_VALIDATION}) and test at least 1; need "
            f"{n - counts['test'] + 1} cases, or smaller fractions"
        )
    return counts


def make_splits(
    case_ids: Iterable[str], labeled: float, unlabeled: float, seed: int, validation: float
) -> dict[str, str]:
    """Assign every case to a split.

    Args:
        case_ids: case (patient / volume) ids; duplicates are ignored.
        labeled: fraction of cases with labels used for stage 1, in (0, 1).
        unlabeled: fraction of cases used without labels for alignment, in (0, 1).
        seed: split seed.
        validation: fraction of cases whose labels select (epochs, settings), in (0, 1); at least 2 cases.

    Returns:
        case id -> ``labeled`` | ``unlabeled`` | ``validation`` | ``test``.

    Raises:
        ConfigError: fractions out of range, or too few cases for every split (see :func:`split_counts`).
    """
    cases = sorted(set(case_ids), key=lambda c: _order_key(seed, c))
    counts = split_counts(len(cases), labeled, unlabeled, validation)
    first_validation = len(cases) - counts["validation"]
    n_lab, n_unl = counts["labeled"], counts["unlabeled"]

    def split_of(i: int) -> str:
        if i < n_lab:
            return "labeled"
        if i < n_lab + n_unl:
            return "unlabeled"
        return "validation" if i >= first_validation else "test"

    return {c: split_of(i) for i, c in enumerate(cases)}


def check_training_splits(setting: str, names: Iterable[str]) -> tuple[str, ...]:
    """A trainer's split list (``setting`` names it in errors): distinct names among :data:`TRAINING_SPLITS`.

    Raises:
        ConfigError: empty, repeated, unknown, or naming ``validation`` / ``test`` (held-out labels).
    """
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise ConfigError(f"{setting} must be a list, got {names!r}")
    names = tuple(names)
    held_out = [s for s in names if s in SPLITS and s not in TRAINING_SPLITS]
    if held_out:
        raise ConfigError(
            f"{setting}: {list(names)} names {', '.join(held_out)}, whose labels are held out (validation selects, "
            f"test is reported); a trainer takes labels from {' and '.join(TRAINING_SPLITS)} only"
        )
    if not names or len(set(names)) != len(names) or not set(names) <= set(TRAINING_SPLITS):
        raise ConfigError(f"{setting} must be distinct splits among {', '.join(TRAINING_SPLITS)}, got {list(names)}")
    return names


def write_splits(assignment: dict[str, str], path: Path) -> None:
    """Write ``case_id,split`` rows sorted by case id, atomically."""
    frame = pd.DataFrame(sorted(assignment.items()), columns=["case_id", "split"])
    atomic.write_text(path, frame.to_csv(index=False))


def read_splits(path: Path) -> dict[str, str]:
    """Read a split table written by :func:`write_splits`."""
    try:
        frame = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:  # missing, not text, not CSV, empty
        raise DataError(f"{path}: unreadable split table ({exc})") from exc
    if list(frame.columns) != ["case_id", "split"] or not frame["split"].isin(SPLITS).all():
        raise DataError(f"{path}: expected columns case_id,split with splits in {SPLITS}")
    return dict(zip(frame["case_id"], frame["split"]))


def split_indices(store: Any, splits_path: str, names: list[str]) -> list[int]:
    """Store indices of the samples whose case is in one of the named splits (none: an error)."""
    unknown = sorted(set(names) - set(SPLITS))
    if unknown:
        raise ConfigError(f"unknown split names {unknown}; choose among {list(SPLITS)}")
    splits = read_splits(Path(splits_path))
    missing = sorted(set(store.samples["case_id"]) - set(splits))
    if missing:
        raise DataError(f"{splits_path}: cases {missing[:3]} of the store have no split; rerun the split rule")
    chosen = [i for i, case in enumerate(store.samples["case_id"]) if splits[case] in names]
    if not chosen:
        raise DataError(f"{splits_path}: no sample of {store.kind} is in the splits {names}")
    return chosen
