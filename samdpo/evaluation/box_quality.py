"""How good are the human-free boxes? Median IoU with the ground-truth box on the test split.

This is evaluation: it reads ground truth (test labels, and the labelled split's boxes for the
mean-box baseline); nothing it computes flows back into prompts or training. Baselines: the
full-image box, and the mean ground-truth box of the labelled split per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from samdpo.errors import DataError
from samdpo.prompts.visual.boxes import Box, box_iou, mask_box


def _mean_box(labels: np.ndarray, indices: Sequence[int], label: int) -> Box | None:
    """The mean ground-truth box (XYXY, pixels) of ``label`` over the images ``indices`` that hold it; None if none
    does."""
    boxes = [mask_box(labels[i] == label) for i in indices]
    boxes = [b for b in boxes if b is not None]
    return tuple(np.mean(boxes, axis=0)) if boxes else None


def _table_boxes(column: str, table: pd.DataFrame) -> dict[tuple[str, int], Box | None]:
    """(sample id, class index) -> XYXY box in pixels (None: no box) of one prompt table.

    Raises:
        DataError: a box is not 4 finite numbers with its maxima at or above its minima.
    """
    boxes: dict[tuple[str, int], Box | None] = {}
    for r in table.itertuples():
        box = tuple(r.box) if r.box is not None else None
        if box is not None and (len(box) != 4 or not np.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]):
            raise DataError(
                f"{column}: image {r.sample_id}, class {r.class_index}: box {box} is not XYXY pixels with maxima >= "
                "minima"
            )
        boxes[(r.sample_id, int(r.class_index))] = box
    return boxes


def _median(values: Sequence[float]) -> float:
    """The median, NaN for no value."""
    return float(np.median(values)) if len(values) else float("nan")


def _class_row(
    name: str,
    label: int,
    labels: np.ndarray,
    test: Sequence[tuple[int, str]],
    boxes: Mapping[str, Mapping[tuple[str, int], Box | None]],
    baselines: tuple[Box, Box | None],
    min_pixels: int,
) -> dict[str, Any]:
    """One class's row of :func:`box_quality`: ``test`` holds the (label-map index, sample id) of the
    test images, ``boxes`` column -> (sample id, class index) -> box, ``baselines`` the full-image
    and the mean labelled box."""
    full, mean_box = baselines
    last = list(boxes)[-1]
    ious: dict[str, list[float]] = {column: [] for column in boxes}
    full_ious, mean_ious, coverage, missing = [], [], [], 0
    for index, sample_id in test:
        gt_mask = labels[index] == label
        if gt_mask.sum() < min_pixels:
            continue
        gt = mask_box(gt_mask)
        for column, found in boxes.items():
            predicted = found.get((sample_id, label - 1))
            ious[column].append(box_iou(predicted, gt) if predicted is not None else 0.0)
        missing += boxes[last].get((sample_id, label - 1)) is None
        full_ious.append(box_iou(full, gt))
        mean_ious.append(box_iou(mean_box, gt) if mean_box is not None else 0.0)
        coverage.append(float(gt_mask.mean()))
    n = len(coverage)
    return {
        "class": name,
        "n": n,
        "coverage": _median(coverage),
        **{column: _median(values) for column, values in ious.items()},
        "full_image_box": _median(full_ious),
        "mean_labeled_box": _median(mean_ious),
        "no_box": missing / n if n else float("nan"),
    }


def box_quality(
    labels: np.ndarray,
    samples: pd.DataFrame,
    splits: dict[str, str],
    tables: dict[str, pd.DataFrame],
    class_names: list[str],
    min_pixels: int = 1,
) -> pd.DataFrame:
    """Median box IoU per class on the test split, for each prompt table beside the two baselines.

    Args:
        labels: (N, S, S) uint8 label maps (ground truth).
        samples: the store's sample table (``index``, ``sample_id``, ``case_id``).
        splits: case id -> split.
        tables: column name -> a prompt table as a DataFrame (``sample_id``, ``class_index``,
            ``box``), e.g. ``{"crf_box": crf, "refined_box": refined}``; the last one is the
            prompt later steps read, and ``no_box`` is counted on it.
        class_names: T class names (label k = class_names[k - 1]).
        min_pixels: a class counts as present in a test image from this many pixels.

    Returns:
        One row per class: ``class``, ``n`` (test images with the class), ``coverage`` (median share
        of the slice the class covers), one median IoU per table, ``full_image_box``,
        ``mean_labeled_box`` and ``no_box`` (share of those images where the last table has no box).

    Raises:
        DataError: a table holds a box that is not XYXY pixels (4 finite numbers, maxima >= minima).
    """
    size = labels.shape[-1]
    full = (0.0, 0.0, float(size - 1), float(size - 1))
    split = samples["case_id"].map(splits)
    boxes = {column: _table_boxes(column, table) for column, table in tables.items()}
    labelled = samples.loc[split == "labeled", "index"].tolist()
    test = list(samples.loc[split == "test", ["index", "sample_id"]].itertuples(index=False))
    rows = [
        _class_row(name, t + 1, labels, test, boxes, (full, _mean_box(labels, labelled, t + 1)), min_pixels)
        for t, name in enumerate(class_names)
    ]
    return pd.DataFrame(rows)
