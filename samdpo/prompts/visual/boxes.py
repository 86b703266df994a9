"""Box and point prompts from a binary mask, in SamPredictor's conventions.

Boxes are XYXY pixels (x = column, y = row) with inclusive maxima: ``x_max``/``y_max`` are the
largest column/row index of the mask, as MedSAM and SAM-Med2D compute boxes from masks. Points
are XY pixels, labels 1 = foreground, 0 = background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from samdpo.errors import ConfigError, DataError

Box = tuple[float, float, float, float]
_MODES = ("largest", "all")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class BoxSettings:
    """Settings of the mask -> prompt step.

    Attributes:
        mode: ``largest`` keeps the largest connected component; ``all`` keeps every component
            (paired organs such as lungs) and boxes them together.
        min_area: components with fewer pixels than this are dropped first.
        positive_points: foreground points; in ``all`` mode any value >= 1 gives one per component.
        negative_points: background points, taken outside the kept mask dilated by
            ``negative_margin``.
        negative_margin: dilation of the kept mask before negatives are chosen, in pixels
            (chessboard distance).
    """

    mode: str = "largest"
    min_area: int = 4
    positive_points: int = 1
    negative_points: int = 0
    negative_margin: int = 5

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigError(f"boxes.mode must be 'largest' or 'all', got {self.mode!r}")
        lows = {"min_area": 1, "positive_points": 0, "negative_points": 0, "negative_margin": 0}
        for name, low in lows.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"boxes.{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True, eq=False)
class VisualPrompt:
    """A box and point prompt for one image and target.

    Attributes:
        box: XYXY box in pixels with inclusive maxima, or None when the mask is empty ("no box").
        points: (N, 2) float32 XY pixel coordinates (x = column, y = row).
        point_labels: (N,) int64, 1 = foreground, 0 = background.
        mask: (H, W) bool, the kept components the prompt was made from.
    """

    box: Box | None
    points: np.ndarray
    point_labels: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        points, labels = self.points, self.point_labels
        if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
            raise ValueError(f"points must be (N, 2) with (N,) labels, got {points.shape} and {labels.shape}")

    @property
    def has_box(self) -> bool:
        """Whether the prompt carries a box (False for an empty mask)."""
        return self.box is not None


def mask_box(mask: np.ndarray) -> Box | None:
    """XYXY box (inclusive pixel maxima) of all foreground pixels of a (H, W) mask, None if empty."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask_box needs an (H, W) mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))


def box_iou(a: Box | None, b: Box | None) -> float:
    """IoU of two XYXY boxes with inclusive maxima: area = (x1 - x0 + 1) * (y1 - y0 + 1).

    "No box" is an answer too: two None boxes agree (1.0); None against a box scores 0.0.
    """
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    for box in (a, b):
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"box {box} has a maximum below its minimum")
    width = min(a[2], b[2]) - max(a[0], b[0]) + 1.0
    height = min(a[3], b[3]) - max(a[1], b[1]) + 1.0
    inter = max(width, 0.0) * max(height, 0.0)
    area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
    area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
    return inter / (area_a + area_b - inter)


def _spread_peaks(score: np.ndarray, allowed: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Up to ``count`` (row, col) maxima of ``score`` within ``allowed``, kept apart.

    Greedy: take the highest allowed pixel (the first in raster order on ties), then forbid the disk
    of radius sqrt(area / (pi * count)) around it, so the points share the region's area evenly.
    Fewer points come back when the region runs out.
    """
    available = allowed.copy()
    radius2 = float(allowed.sum()) / (math.pi * count) if count else 0.0
    rows, cols = np.ogrid[: score.shape[0], : score.shape[1]]
    peaks: list[tuple[int, int]] = []
    while len(peaks) < count and available.any():
        row, col = np.unravel_index(int(np.argmax(np.where(available, score, -np.inf))), score.shape)
        peaks.append((int(row), int(col)))
        available &= (rows - row) ** 2 + (cols - col) ** 2 > radius2
    return peaks


def mask_to_prompt(mask: np.ndarray, saliency: np.ndarray, settings: BoxSettings) -> VisualPrompt:
    """Box and points from a binary mask (e.g. the CRF's) and the saliency it came from.

    Connected components (8-connectivity) smaller than ``min_area`` are dropped; ``largest`` keeps
    the biggest (the first in raster order on ties), ``all`` keeps every one. The box encloses the
    kept components. Positive points: in ``largest`` mode the ``positive_points`` highest-saliency
    pixels of the component, kept apart (see :func:`_spread_peaks`); in ``all`` mode the saliency
    peak of each kept component, largest component first. Negative points: the lowest-saliency
    pixels outside the kept mask dilated by ``negative_margin``, kept apart the same way. An empty
    result gives ``box=None`` and no points. Ties always go to the first pixel in raster order.

    Args:
        mask: (H, W) bool (or 0/1) foreground mask.
        saliency: (H, W) float saliency, higher = more likely foreground.
        settings: component and point settings.

    Returns:
        The prompt; positive points come before negative ones.

    Raises:
        ValueError: inputs are not 2D or their shapes differ.
        DataError: the saliency holds NaN or infinite values.
    """
    mask = np.asarray(mask, dtype=bool)
    saliency = np.asarray(saliency, dtype=np.float64)
    if mask.ndim != 2 or mask.shape != saliency.shape:
        raise ValueError(f"mask_to_prompt needs (H, W) mask and saliency alike, got {mask.shape} and {saliency.shape}")
    if not np.isfinite(saliency).all():
        raise DataError("saliency map holds NaN or infinite values")
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= settings.min_area]
    if settings.mode == "largest":
        order = order[:1]
    kept = np.isin(labels, order)
    if not order:
        return VisualPrompt(None, np.zeros((0, 2), np.float32), np.zeros(0, np.int64), kept)
    if settings.mode == "largest":
        positives = _spread_peaks(saliency, kept, settings.positive_points)
    else:
        positives = [_spread_peaks(saliency, labels == i, 1)[0] for i in order] if settings.positive_points else []
    near = kept
    if settings.negative_margin:  # iterations=0 would mean "dilate until nothing changes"
        near = ndimage.binary_dilation(kept, _EIGHT_CONNECTED, settings.negative_margin)
    negatives = _spread_peaks(-saliency, ~near, settings.negative_points)
    rows_cols = np.array(positives + negatives, dtype=np.float32).reshape(-1, 2)
    point_labels = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.int64)
    return VisualPrompt(mask_box(kept), rows_cols[:, ::-1].copy(), point_labels, kept)
