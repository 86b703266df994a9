"""Candidate masks: the stage-1 probabilities of the unlabelled images at K thresholds.

Ascending thresholds give nested masks (a higher threshold keeps a subset), so the K masks of an
(image, class) are stored as one uint8 *level* per pixel, the number of thresholds the probability
reaches: candidate k (threshold k, ascending) is ``level >= k + 1``. ``candidates.npy`` holds the
(N, T, S, S) levels, ``candidates.json`` the sample ids, classes and thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.class_maps import read_arrays, write_arrays
from samdpo.errors import ConfigError

LEVELS = "candidates"


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Strictly ascending thresholds in (0, 1)."""
    values = tuple(float(t) for t in thresholds)
    if len(values) < 2 or any(not 0 < t < 1 for t in values) or any(a >= b for a, b in zip(values, values[1:])):
        raise ConfigError(
            f"candidates.thresholds must be at least two strictly ascending values in (0, 1), got {list(thresholds)}"
        )
    return values


def candidate_levels(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(..., S, S) uint8 probabilities (x 255) -> uint8 levels: how many thresholds each pixel reaches."""
    values = check_thresholds(thresholds)
    scaled = probs.astype(np.float32) / 255.0
    return sum((scaled >= t).astype(np.uint8) for t in values)


def level_masks(levels: np.ndarray, count: int) -> np.ndarray:
    """(..., S, S) levels -> (..., count, S, S) bool candidates, lowest threshold first."""
    return np.stack([levels >= k + 1 for k in range(count)], axis=-3)


def write_candidates(folder: Path, levels: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write the levels and their metadata atomically."""

    def fill(out: np.ndarray) -> None:
        out[...] = levels

    write_arrays(Path(folder), LEVELS, levels.shape, fill, meta)


def read_candidates(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The (N, T, S, S) levels (memory-mapped) and their metadata."""
    return read_arrays(Path(folder), LEVELS, "candidates")
