"""How good are the CRF boxes? Median IoU with the ground-truth box on the test split.

This is evaluation: it reads ground truth (test labels, and the labelled split's boxes for the
mean-box baseline); nothing it computes flows back into prompts or training. Baselines: the
full-image box, and the mean ground-truth box of the labelled split per class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from samdpo.prompts.boxes import box_iou, mask_box


def box_quality(
    labels: np.ndarray,
    samples: pd.DataFrame,
    splits: dict[str, str],
    table: pd.DataFrame,
    class_names: list[str],
    min_pixels: int = 1,
) -> pd.DataFrame:
    """Median box IoU per class on the test split, beside the two baselines.

    Args:
        labels: (N, S, S) uint8 label maps (ground truth).
        samples: the store's sample table (``index``, ``sample_id``, ``case_id``).
        splits: case id -> split.
        table: the CRF prompt table as a DataFrame (``sample_id``, ``class_index``, ``box``).
        class_names: T class names (label k = class_names[k - 1]).
        min_pixels: a class counts as present in a test image from this many pixels.

    Returns:
        One row per class: ``class``, ``n`` (test images with the class), ``coverage`` (median share
        of the slice the class covers), ``crf_box``, ``full_image_box``, ``mean_labeled_box``
        (median IoUs) and ``no_box`` (share of those images where the CRF gave no box).
    """
    size = labels.shape[-1]
    full = (0.0, 0.0, float(size - 1), float(size - 1))
    split = samples["case_id"].map(splits)
    boxes = {(r.sample_id, int(r.class_index)): (tuple(r.box) if r.box is not None else None) for r in table.itertuples()}
    rows = []
    for t, name in enumerate(class_names):
        train_boxes = [mask_box(labels[i] == t + 1) for i in samples.loc[split == "labeled", "index"]]
        train_boxes = [b for b in train_boxes if b is not None]
        mean_box = tuple(np.mean(train_boxes, axis=0)) if train_boxes else None
        ious, full_ious, mean_ious, coverage, missing = [], [], [], [], 0
        for index, sample_id in samples.loc[split == "test", ["index", "sample_id"]].itertuples(index=False):
            gt_mask = labels[index] == t + 1
            if gt_mask.sum() < min_pixels:
                continue
            gt = mask_box(gt_mask)
            predicted = boxes.get((sample_id, t))
            missing += predicted is None
            ious.append(box_iou(predicted, gt) if predicted is not None else 0.0)
            full_ious.append(box_iou(full, gt))
            mean_ious.append(box_iou(mean_box, gt) if mean_box is not None else 0.0)
            coverage.append(float(gt_mask.mean()))
        n = len(ious)
        rows.append(
            {
                "class": name,
                "n": n,
                "coverage": float(np.median(coverage)) if n else float("nan"),
                "crf_box": float(np.median(ious)) if n else float("nan"),
                "full_image_box": float(np.median(full_ious)) if n else float("nan"),
                "mean_labeled_box": float(np.median(mean_ious)) if n else float("nan"),
                "no_box": missing / n if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)
