"""Segmentation metrics of predicted probability maps: 2D Dice, NSD and HD95 per image, 3D Dice per volume.

Inputs are what the pipeline writes: ``probs`` (N, T, S, S) uint8, the sigmoid probability x 255 of
every class of every image (``samdpo.train.predict``), and the store's ``labels`` (N, S, S) uint8
label maps (0 = background, k = ``class_names[k - 1]``), row-aligned with the store's sample table.
A class is predicted where ``probs / 255 >= threshold``.

Conventions (the numbers in the tables depend on them):

- **Present classes only.** An image's 2D Dice, NSD and HD95 are computed for the classes present in
  its ground truth; a class absent from an image is skipped (its Dice would be 0 or undefined,
  dominated by whether anything at all was predicted). Predictions of absent classes are counted
  separately as false positives by :func:`absent_class_false_positives`.
- **Empty predictions.** A present class with an empty prediction gets Dice 0, NSD 0 and HD95 NaN
  (no predicted surface to measure from); ``pred_empty`` marks these rows. Class means of HD95 skip
  the NaN rows, so the summary also reports how many were skipped.
- **Units.** Dice and NSD are in percent (0-100). HD95 is in the store's spacing unit (mm for AMOS;
  original-image pixels for the PNG datasets, whose files carry no physical spacing) and uses each
  image's (row, col) pixel spacing; the NSD tolerance is in the same unit.
- **Volumes.** 3D Dice of a case pools the stored slices of that case. AMOS stores only slices that
  contain some organ, so predictions on the case's other slices are not seen (3D Dice is over the
  stored slices, not the whole scan).

Dice, NSD and HD95 of single images follow MONAI's ``compute_dice``, ``compute_surface_dice`` and
``compute_hausdorff_distance`` (cross-erosion edges, KD-tree edge distances in the pixel spacing, as MONAI
computes them on the CPU), written on numpy and scipy so that an evaluation job does not import torch and
MONAI (~8 s a process); ``tests/test_evaluation.py`` checks them equal to MONAI's on random masks. 3D Dice
pools per-slice overlap counts, which equals MONAI's Dice on the stacked volume without building (D, S, S)
arrays per class.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import KDTree

from samdpo.errors import ConfigError, DataError

#: Columns of the per-image table returned by :func:`evaluate`.
IMAGE_COLUMNS = ("sample_id", "case_id", "class_name", "dice", "nsd", "hd95", "pred_empty")
#: Columns of the per-volume table returned by :func:`volume_dice`.
VOLUME_COLUMNS = ("case_id", "class_name", "dice", "slices")
#: Sample-table columns the metrics read.
SAMPLE_COLUMNS = ("sample_id", "case_id", "slice_index", "spacing_row", "spacing_col")


def probability_cut(threshold: float) -> int:
    """The smallest uint8 value ``v`` with ``v / 255 >= threshold``: ``probs >= cut`` is the mask.

    Raises:
        ConfigError: ``threshold`` not in (0, 1).
    """
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    return int(np.argmax(np.arange(256) / 255.0 >= threshold))


def _check_arrays(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> None:
    if probs.ndim != 4 or probs.dtype != np.uint8:
        raise DataError(f"probabilities must be (N, T, S, S) uint8, got {probs.shape} {probs.dtype}")
    if labels.ndim != 3 or labels.dtype != np.uint8:
        raise DataError(f"labels must be (N, S, S) uint8, got {labels.shape} {labels.dtype}")
    if probs.shape[0] != labels.shape[0] or probs.shape[2:] != labels.shape[1:]:
        raise DataError(f"probabilities {probs.shape} and labels {labels.shape} do not describe the same images")
    if probs.shape[1] != len(class_names):
        raise DataError(
            f"probabilities have {probs.shape[1]} classes but {len(class_names)} class names were given: "
            f"{list(class_names)}"
        )


def _check_samples(samples: pd.DataFrame, count: int) -> pd.DataFrame:
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise DataError(f"sample table lacks columns {missing}")
    if len(samples) != count:
        raise DataError(f"sample table has {len(samples)} rows for {count} images")
    if samples["sample_id"].duplicated().any():
        raise DataError(f"sample ids repeat: {sorted(samples.loc[samples['sample_id'].duplicated(), 'sample_id'])[:3]}")
    return samples.reset_index(drop=True)


def _images(
    probs: np.ndarray, labels: np.ndarray, threshold: float
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: index, (T, S, S) bool prediction, (T, S, S) bool target, (T,) bool "class present"."""
    cut = probability_cut(threshold)
    classes = probs.shape[1]
    for i in range(probs.shape[0]):
        label = np.asarray(labels[i])
        if int(label.max(initial=0)) > classes:
            raise DataError(f"image {i}: label value {int(label.max())} but only {classes} classes")
        pred = np.asarray(probs[i]) >= cut
        target = label[None] == np.arange(1, classes + 1, dtype=np.uint8)[:, None, None]
        yield i, pred, target, target.any(axis=(1, 2))


def _edges(mask: np.ndarray) -> np.ndarray:
    """2D or 3D bool mask -> its boundary pixels: the mask minus its erosion by the cross (4- or 6-connected,
    outside = 0)."""
    return mask ^ ndimage.binary_erosion(mask)


def _edge_distances(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """float32 distance (spacing unit) from each edge pixel of ``source`` to the nearest edge pixel of ``target``,
    in raster order; both bool edge maps of one shape (2D or 3D, one spacing per axis), ``target`` non-empty."""
    scale = np.asarray(spacing, np.float64)
    tree = KDTree(np.argwhere(target).astype(np.float64) * scale, leafsize=32)
    return tree.query(np.argwhere(source).astype(np.float64) * scale, k=1)[0].astype(np.float32)


def surface_scores(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...], tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """NSD (0-100 %) and HD95 (spacing unit) of K non-empty bool predictions against their non-empty targets,
    (K, S, S) images with (row, col) spacing or (K, X, Y, Z) volumes with three voxel sizes.

    MONAI's definitions (``compute_surface_dice``, ``compute_hausdorff_distance(percentile=95)``, no subvoxels):
    edges are a mask minus its cross erosion; NSD is the share of both edges within ``tolerance`` of the other;
    HD95 the larger of the two directed 95th percentiles (linear interpolation) of the edge distances.
    """
    nsd, hd95 = np.zeros(len(pred)), np.zeros(len(pred))
    for k in range(len(pred)):
        pred_edges, target_edges = _edges(pred[k]), _edges(target[k])
        forward = _edge_distances(pred_edges, target_edges, spacing)
        backward = _edge_distances(target_edges, pred_edges, spacing)
        within = np.count_nonzero(forward <= tolerance) + np.count_nonzero(backward <= tolerance)
        nsd[k] = 100.0 * within / (forward.size + backward.size)
        hd95[k] = max(np.quantile(forward, 0.95), np.quantile(backward, 0.95))
    return nsd, hd95


def _image_scores(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float], tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dice (0-100 %), NSD (0-100 %), HD95 (spacing unit) and "prediction non-empty" of K (K, S, S)
    bool predictions of present classes (non-empty targets): each (K,); NSD 0 and HD95 NaN where the
    prediction is empty (its Dice is 0 by the formula)."""
    nonempty = pred.any(axis=(1, 2))
    overlap = np.count_nonzero(pred & target, axis=(1, 2))
    dice = 200.0 * overlap / (np.count_nonzero(pred, axis=(1, 2)) + np.count_nonzero(target, axis=(1, 2)))
    nsd = np.zeros(len(pred))
    hd95 = np.full(len(pred), np.nan)
    if nonempty.any():
        nsd[nonempty], hd95[nonempty] = surface_scores(pred[nonempty], target[nonempty], spacing, tolerance)
    return dice, nsd, hd95, nonempty


def evaluate(
    probs: np.ndarray,
    labels: np.ndarray,
    samples: pd.DataFrame,
    class_names: Sequence[str],
    threshold: float = 0.5,
    tolerance_mm: float = 2.0,
) -> pd.DataFrame:
    """2D Dice, NSD and HD95 of every (image, class present in that image's ground truth) pair.

    Args:
        probs: (N, T, S, S) uint8 probabilities x 255, T = ``len(class_names)``.
        labels: (N, S, S) uint8 label maps, row-aligned with ``probs``.
        samples: N rows aligned with ``probs`` with ``sample_id``, ``case_id``, ``slice_index``,
            ``spacing_row``, ``spacing_col`` (pixel size, in the store's spacing unit).
        class_names: names of labels 1..T.
        threshold: probability at or above which a pixel is predicted, in (0, 1).
        tolerance_mm: NSD boundary tolerance, in the spacing unit (mm for AMOS), > 0.

    Returns:
        One row per (image, present class): ``sample_id``, ``case_id``, ``class_name``, ``dice``
        (0-100 %), ``nsd`` (0-100 %), ``hd95`` (spacing unit; NaN when the prediction is empty),
        ``pred_empty`` (bool). An empty prediction gives dice 0, nsd 0, hd95 NaN.

    Raises:
        DataError: shapes, class count or sample table inconsistent.
        ConfigError: threshold or tolerance out of range.
    """
    _check_arrays(probs, labels, class_names)
    samples = _check_samples(samples, probs.shape[0])
    if not (math.isfinite(tolerance_mm) and tolerance_mm > 0):
        raise ConfigError(f"tolerance must be a positive number of spacing units, got {tolerance_mm}")
    rows: list[dict[str, Any]] = []
    for i, pred, target, present in _images(probs, labels, threshold):
        classes = np.flatnonzero(present)
        if classes.size == 0:
            continue
        spacing = (float(samples.at[i, "spacing_row"]), float(samples.at[i, "spacing_col"]))
        dice, nsd, hd95, nonempty = _image_scores(pred[classes], target[classes], spacing, tolerance_mm)
        sample_id, case_id = samples.at[i, "sample_id"], samples.at[i, "case_id"]
        for k, c in enumerate(classes):
            rows.append(
                {
                    "sample_id": sample_id,
                    "case_id": case_id,
                    "class_name": class_names[c],
                    "dice": float(dice[k]) if nonempty[k] else 0.0,
                    "nsd": float(nsd[k]),
                    "hd95": float(hd95[k]),
                    "pred_empty": not bool(nonempty[k]),
                }
            )
    return pd.DataFrame(rows, columns=list(IMAGE_COLUMNS)).astype(
        {"dice": float, "nsd": float, "hd95": float, "pred_empty": bool}
    )


def mean_dice(probs: np.ndarray, labels: np.ndarray, class_count: int, threshold: float = 0.5) -> float:
    """The tables' mDice on its own, without NSD and HD95: the mean over classes of the mean 2D Dice (%) over the
    images where the class is present (classes present nowhere left out; 0.0 when none is present anywhere).

    Args:
        probs: (N, T, S, S) uint8 probabilities x 255, T = ``class_count``; labels: (N, S, S) uint8 label maps.
        threshold: probability at or above which a pixel is predicted.
    """
    _check_arrays(probs, labels, [str(t) for t in range(class_count)])
    sums, counts = np.zeros(class_count), np.zeros(class_count)
    for _, pred, target, present in _images(probs, labels, threshold):
        overlap = np.count_nonzero(pred & target, axis=(1, 2))
        total = np.count_nonzero(pred, axis=(1, 2)) + np.count_nonzero(target, axis=(1, 2))
        sums[present] += 200.0 * overlap[present] / total[present]
        counts[present] += 1
    seen = counts > 0
    return float(np.mean(sums[seen] / counts[seen])) if seen.any() else 0.0


def absent_class_false_positives(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], threshold: float = 0.5
) -> pd.DataFrame:
    """How often a class absent from an image's ground truth is predicted anyway.

    Args:
        probs: (N, T, S, S) uint8 probabilities x 255.
        labels: (N, S, S) uint8 label maps, row-aligned with ``probs``.
        class_names: names of labels 1..T.
        threshold: probability at or above which a pixel is predicted.

    Returns:
        One row per class: ``class_name``, ``absent_images`` (images whose ground truth lacks the
        class), ``false_positives`` (of those, images with a non-empty prediction of it) and
        ``false_positive_rate`` = false_positives / absent_images, a share in [0, 1] (NaN when the
        class is present in every image).
    """
    _check_arrays(probs, labels, class_names)
    absent = np.zeros(len(class_names), np.int64)
    positive = np.zeros(len(class_names), np.int64)
    for _, pred, _, present in _images(probs, labels, threshold):
        absent += ~present
        positive += ~present & pred.any(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(absent > 0, positive / np.maximum(absent, 1), np.nan)
    return pd.DataFrame(
        {
            "class_name": list(class_names),
            "absent_images": absent,
            "false_positives": positive,
            "false_positive_rate": rate,
        }
    )


def volume_dice(
    probs: np.ndarray,
    labels: np.ndarray,
    samples: pd.DataFrame,
    class_names: Sequence[str],
    threshold: float = 0.5,
) -> pd.DataFrame:
    """3D Dice per (case, class present in the case's stored slices), from the stored slices of each case.

    The slices of a case (rows of ``samples`` with its ``case_id``, ordered by ``slice_index``) form
    its volume; Dice = 2 |P n G| / (|P| + |G|) over all of them, which needs only per-slice counts.
    Slices of a case that are not among the rows (AMOS stores only slices with an organ; other
    splits) are not part of the volume.

    Args:
        probs: (N, T, S, S) uint8 probabilities x 255.
        labels: (N, S, S) uint8 label maps, row-aligned with ``probs``.
        samples: N rows aligned with ``probs`` with at least ``case_id`` and ``slice_index``.
        class_names: names of labels 1..T.
        threshold: probability at or above which a pixel is predicted.

    Returns:
        One row per (case, present class): ``case_id``, ``class_name``, ``dice`` (0-100 %) and
        ``slices`` (stored slices of the case).

    Raises:
        DataError: inconsistent shapes, or one slice of a case appearing twice.
    """
    _check_arrays(probs, labels, class_names)
    samples = _check_samples(samples, probs.shape[0])
    repeated = samples.duplicated(["case_id", "slice_index"])
    if repeated.any():
        first = samples[repeated].iloc[0]
        raise DataError(f"case {first['case_id']}: slice {first['slice_index']} appears more than once")
    classes = len(class_names)
    overlap = np.zeros((len(samples), classes), np.int64)
    predicted = np.zeros_like(overlap)
    truth = np.zeros_like(overlap)
    for i, pred, target, _ in _images(probs, labels, threshold):
        overlap[i] = (pred & target).sum(axis=(1, 2))
        predicted[i] = pred.sum(axis=(1, 2))
        truth[i] = target.sum(axis=(1, 2))
    rows: list[dict[str, Any]] = []
    for case_id, group in samples.sort_values(["case_id", "slice_index"]).groupby("case_id", sort=True):
        index = group.index.to_numpy()
        inter, size_p, size_g = overlap[index].sum(0), predicted[index].sum(0), truth[index].sum(0)
        for c in np.flatnonzero(size_g > 0):
            rows.append(
                {
                    "case_id": case_id,
                    "class_name": class_names[c],
                    "dice": 200.0 * inter[c] / (size_p[c] + size_g[c]),
                    "slices": len(index),
                }
            )
    return pd.DataFrame(rows, columns=list(VOLUME_COLUMNS)).astype({"dice": float, "slices": int})


def _number(value: float) -> float | None:
    """A float for JSON: NaN -> None."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def class_means(frame: pd.DataFrame, column: str, class_names: Sequence[str]) -> dict[str, float | None]:
    """Mean of ``column`` per class of a per-image or per-volume table, in ``class_names`` order (None: no row)."""
    means = frame.groupby("class_name")[column].mean() if len(frame) else pd.Series(dtype=float)
    return {name: _number(means.get(name, math.nan)) for name in class_names}


def mean_over_classes(values: Mapping[str, float | None]) -> float | None:
    """Mean of the per-class values that exist (None when none does)."""
    kept = [v for v in values.values() if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(
    per_image: pd.DataFrame,
    per_volume: pd.DataFrame | None,
    class_names: Sequence[str],
    false_positives: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Per-class and overall means, as a JSON-ready dict (NaN written as None).

    Args:
        per_image: :func:`evaluate`'s table.
        per_volume: :func:`volume_dice`'s table, or None for no 3D results.
        class_names: all class names of the dataset (the order of the per-class dicts).
        false_positives: :func:`absent_class_false_positives`'s table, or None.

    Returns:
        ``dice_per_class`` / ``nsd_per_class`` / ``hd95_per_class``: mean over the images where the
        class is present (HD95 skips empty predictions; None where nothing is left);
        ``images_per_class``; ``mdice`` / ``nsd`` / ``hd95``: the mean over classes of those
        per-class means, classes without any image excluded and listed in
        ``classes_without_images``; ``hd95_empty_predictions``: rows skipped by HD95;
        ``images``: images with at least one present class. With ``per_volume``:
        ``dice_3d_per_class``, ``volumes_per_class``, ``mdice_3d`` (mean over classes with a
        volume), ``classes_without_volumes``, ``volumes``. With ``false_positives``:
        ``false_positive_rate`` (pooled over classes, share in [0, 1]) and
        ``false_positive_rate_per_class``.
    """
    unknown = sorted(set(per_image["class_name"]) - set(class_names))
    if unknown:
        raise DataError(f"per-image results name classes {unknown} that are not among {list(class_names)}")
    dice = class_means(per_image, "dice", class_names)
    counts = per_image.groupby("class_name").size() if len(per_image) else pd.Series(dtype=int)
    summary: dict[str, Any] = {
        "class_names": list(class_names),
        "images": int(per_image["sample_id"].nunique()),
        "images_per_class": {name: int(counts.get(name, 0)) for name in class_names},
        "dice_per_class": dice,
        "nsd_per_class": class_means(per_image, "nsd", class_names),
        "hd95_per_class": class_means(per_image, "hd95", class_names),
        "classes_without_images": [name for name, value in dice.items() if value is None],
        "hd95_empty_predictions": int(per_image["hd95"].isna().sum()),
    }
    summary["mdice"] = mean_over_classes(dice)
    summary["nsd"] = mean_over_classes(summary["nsd_per_class"])
    summary["hd95"] = mean_over_classes(summary["hd95_per_class"])
    if per_volume is not None:
        dice_3d = class_means(per_volume, "dice", class_names)
        volumes = per_volume.groupby("class_name").size() if len(per_volume) else pd.Series(dtype=int)
        summary["dice_3d_per_class"] = dice_3d
        summary["volumes_per_class"] = {name: int(volumes.get(name, 0)) for name in class_names}
        summary["volumes"] = int(per_volume["case_id"].nunique())
        summary["classes_without_volumes"] = [name for name, value in dice_3d.items() if value is None]
        summary["mdice_3d"] = mean_over_classes(dice_3d)
    if false_positives is not None:
        absent = int(false_positives["absent_images"].sum())
        summary["false_positive_rate"] = _number(false_positives["false_positives"].sum() / absent) if absent else None
        summary["false_positive_rate_per_class"] = {
            str(row.class_name): _number(row.false_positive_rate) for row in false_positives.itertuples(index=False)
        }
    return summary
