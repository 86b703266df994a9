"""Case-level splits into ``labeled``, ``unlabeled`` and ``test``.

Cases are ordered by a seeded hash of their id (so adding a case moves no other case between
splits), then the first ``round(labeled * n)`` are labelled, the next ``round(unlabeled * n)``
unlabelled, the rest test; each split gets at least one case. The paper's "20% labelled" settings
use ``labeled`` + ``unlabeled`` together, both with their labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

SPLITS = ("labeled", "unlabeled", "test")


def _order_key(seed: int, case_id: str) -> str:
    return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()


def make_splits(case_ids: Iterable[str], labeled: float, unlabeled: float, seed: int) -> dict[str, str]:
    """Assign every case to a split.

    Args:
        case_ids: case (patient / volume) ids; duplicates are ignored.
        labeled: fraction of cases with labels used for stage 1, in (0, 1).
        unlabeled: fraction of cases used without labels for alignment, in (0, 1).
        seed: split seed.

    Returns:
        case id -> ``labeled`` | ``unlabeled`` | ``test``.

    Raises:
        ConfigError: fractions out of range, or fewer than three cases.
    """
    for name, value in (("splits.labeled", labeled), ("splits.unlabeled", unlabeled)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name} must be in (0, 1), got {value}")
    if labeled + unlabeled >= 1.0:
        raise ConfigError(f"splits.labeled + splits.unlabeled must leave cases for test, got {labeled} + {unlabeled}")
    cases = sorted(set(case_ids), key=lambda c: _order_key(seed, c))
    n = len(cases)
    if n < 3:
        raise ConfigError(f"need at least 3 cases to make labeled/unlabeled/test splits, found {n}")
    n_lab = min(max(1, round(labeled * n)), n - 2)
    n_unl = min(max(1, round(unlabeled * n)), n - n_lab - 1)
    return {c: ("labeled" if i < n_lab else "unlabeled" if i < n_lab + n_unl else "test") for i, c in enumerate(cases)}


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
    from samdpo.data.splits import SPLITS, read_splits
    from samdpo.errors import DataError

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
