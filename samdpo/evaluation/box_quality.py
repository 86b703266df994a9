"""How good are the human-free boxes? Median IoU with the ground-truth box on the test split.

This is evaluation: it reads ground truth (test labels, and the labelled split's boxes for the
mean-box baseline); nothing it computes flows back into prompts or training. Baselines: the
full-image box, and the mean ground-truth box of the labelled split per class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from samdpo.prompts.visual.boxes import box_iou, mask_box


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
    """
    size = labels.shape[-1]
    full = (0.0, 0.0, float(size - 1), float(size - 1))
    split = samples["case_id"].map(splits)
    boxes = {
        column: {(r.sample_id, int(r.class_index)): (tuple(r.box) if r.box is not None else None) for r in table.itertuples()}
        for column, table in tables.items()
    }
    last = list(tables)[-1]
    rows = []
    for t, name in enumerate(class_names):
        train_boxes = [mask_box(labels[i] == t + 1) for i in samples.loc[split == "labeled", "index"]]
        train_boxes = [b for b in train_boxes if b is not None]
        mean_box = tuple(np.mean(train_boxes, axis=0)) if train_boxes else None
        ious: dict[str, list[float]] = {name: [] for name in tables}
        full_ious, mean_ious, coverage, missing = [], [], [], 0
        for index, sample_id in samples.loc[split == "test", ["index", "sample_id"]].itertuples(index=False):
            gt_mask = labels[index] == t + 1
            if gt_mask.sum() < min_pixels:
                continue
            gt = mask_box(gt_mask)
            for column in tables:
                predicted = boxes[column].get((sample_id, t))
                ious[column].append(box_iou(predicted, gt) if predicted is not None else 0.0)
            missing += boxes[last].get((sample_id, t)) is None
            full_ious.append(box_iou(full, gt))
            mean_ious.append(box_iou(mean_box, gt) if mean_box is not None else 0.0)
            coverage.append(float(gt_mask.mean()))
        n = len(coverage)
        rows.append(
            {
                "class": name,
                "n": n,
                "coverage": float(np.median(coverage)) if n else float("nan"),
                **{column: float(np.median(values)) if n else float("nan") for column, values in ious.items()},
                "full_image_box": float(np.median(full_ious)) if n else float("nan"),
                "mean_labeled_box": float(np.median(mean_ious)) if n else float("nan"),
                "no_box": missing / n if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)
