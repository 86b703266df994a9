"""Label volumes on each test scan's own grid, and 3D Dice, NSD and HD95 read off those files.

A model predicts the stored axial slices of a volume at the store's S x S size. For every test case
this module makes one label map per slice (the class of highest probability among those at or above
the threshold, 0 where none is), resizes it back to the slice's original size (nearest neighbour),
puts it at its slice index, undoes the reader's reorientation and writes ``{case_id}.nii.gz``: uint8
labels 1..K as in the dataset's ``dataset.json``, with the image's affine and shape, openable in 3D
Slicer or ITK-SNAP. Slices the store does not hold (AMOS keeps the slices with an organ) are 0.

The 3D metrics then read the written file and the case's label file, on the scan's grid and voxel
size in mm: per (case, organ present in the label file) Dice (%), NSD (%, tolerance in mm) and HD95 (mm)
as :mod:`samdpo.evaluation.metrics` defines them (MONAI's conventions; an empty prediction gets Dice
0, NSD 0, HD95 NaN). An organ predicted in a case whose label file lacks it is counted as a
false-positive volume.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samdpo import atomic
from samdpo.data.transforms import resize_label
from samdpo.errors import DataError

#: Columns of the per-(case, organ) table ``volumes.csv``.
VOLUME_FILE_COLUMNS = ("case_id", "class_name", "dice", "nsd", "hd95", "pred_voxels", "true_voxels")
VOLUMES_TABLE = "volumes.csv"
VOLUMES_SUMMARY = "summary.json"


def slice_label_maps(probs: np.ndarray, cut: int) -> np.ndarray:
    """(N, T, S, S) uint8 probabilities x 255 -> (N, S, S) uint8 label maps: per pixel the class (1..T) of
    highest probability among those ``>= cut``, 0 where no class reaches it."""
    probs = np.asarray(probs)
    best = probs.argmax(axis=1)
    reached = np.take_along_axis(probs, best[:, None], axis=1)[:, 0] >= cut
    return np.where(reached, best + 1, 0).astype(np.uint8)


def case_slices(display_shape: tuple[int, int, int], slice_index: Sequence[int], maps: np.ndarray) -> np.ndarray:
    """(Z, H, W) uint8 display slices of one case: each (S, S) map of ``maps`` resized to (H, W) at its
    ``slice_index``, every other slice 0.

    Raises:
        DataError: a slice index outside the volume.
    """
    depth, height, width = display_shape
    slices = np.zeros(display_shape, np.uint8)
    for z, label in zip(slice_index, maps, strict=True):
        if not 0 <= int(z) < depth:
            raise DataError(f"slice {z} lies outside a volume of {depth} slices")
        slices[int(z)] = resize_label(label, (height, width))
    return slices


def score_volume(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, float, float],
    class_names: Sequence[str],
    tolerance: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """3D metrics of one case from two label volumes of one grid.

    Args:
        pred: (X, Y, Z) uint8 predicted labels.
        truth: (X, Y, Z) uint8 ground-truth labels.
        spacing: voxel size along the three axes, mm.
        class_names: names of labels 1..K.
        tolerance: NSD tolerance, mm.

    Returns:
        One row per organ present in ``truth`` (:data:`VOLUME_FILE_COLUMNS` less ``case_id``), and the names
        of the organs predicted though absent from ``truth``.
    """
    from samdpo.evaluation.metrics import surface_scores

    if pred.shape != truth.shape:
        raise DataError(f"predicted volume {pred.shape} and label volume {truth.shape} differ in shape")
    rows, false_positives = [], []
    for k, name in enumerate(class_names, start=1):
        p, g = pred == k, truth == k
        size_p, size_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
        if size_g == 0:
            if size_p:
                false_positives.append(name)
            continue
        dice = 200.0 * np.count_nonzero(p & g) / (size_p + size_g)
        nsd, hd95 = (
            (0.0, math.nan)
            if size_p == 0
            else (float(v[0]) for v in surface_scores(p[None], g[None], spacing, tolerance))
        )
        rows.append(
            {"class_name": name, "dice": dice, "nsd": nsd, "hd95": hd95, "pred_voxels": size_p, "true_voxels": size_g}
        )
    return rows, false_positives


def summarize_volumes(
    table: pd.DataFrame, false_positives: Mapping[str, list[str]], class_names: Sequence[str]
) -> dict:
    """Class means and their means over classes of a ``volumes.csv`` table (JSON-ready; NaN -> None):
    ``mdice_3d``, ``nsd_3d``, ``hd95_3d`` (HD95 skips empty predictions), per class, and the
    false-positive volumes (cases predicted an organ their label file lacks) per class."""
    from samdpo.evaluation.metrics import class_means, mean_over_classes

    per_class = {column: class_means(table, column, class_names) for column in ("dice", "nsd", "hd95")}
    counted = {n: sum(n in names for names in false_positives.values()) for n in class_names}
    return {
        "volumes": len(false_positives),
        "mdice_3d": mean_over_classes(per_class["dice"]),
        "nsd_3d": mean_over_classes(per_class["nsd"]),
        "hd95_3d": mean_over_classes(per_class["hd95"]),
        "dice_3d_per_class": per_class["dice"],
        "nsd_3d_per_class": per_class["nsd"],
        "hd95_3d_per_class": per_class["hd95"],
        "false_positive_volumes_per_class": counted,
    }


def write_volume_files(
    store_dir: Path | str,
    splits: Path | str,
    probs_folder: Path | str,
    root: Path | str,
    reader: Mapping[str, Any],
    out: Path | str,
    threshold: float,
    tolerance: float,
    progress: bool = True,
) -> str:
    """``samdpo volumes``: one label NIfTI per test case of an AMOS store in ``out``, with
    ``volumes.csv`` (3D metrics from the files) and ``summary.json``; the folder appears complete or not at all.

    Raises:
        DataError: a store of another dataset, predictions of another store, or a case's image not in ``root``.
    """
    from tqdm import tqdm

    from samdpo.data.amos import (
        AmosSettings,
        display_shape,
        label_image_like,
        label_volume,
        list_cases,
        write_nifti,
    )
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.evaluation.metrics import probability_cut
    from samdpo.predictions import align_predictions, read_predictions
    from samdpo.settings import parse_settings

    store = SampleStore(Path(store_dir))
    if store.kind != "amos":
        raise DataError(f"{store_dir}: a {store.kind} store; label volumes are written for AMOS (3D) stores only")
    probs, meta = read_predictions(Path(probs_folder))
    rows = align_predictions(meta, list(store.samples["sample_id"]), store.class_names, store.kind)
    assignment = read_splits(Path(splits))
    samples = store.samples.iloc[rows].assign(row=np.arange(len(rows)))
    samples = samples[samples["case_id"].map(assignment) == "test"]
    if samples.empty:
        raise DataError(f"{probs_folder}: no predicted slice is in the test split of {splits}")
    test_cases = set(store.samples.loc[store.samples["case_id"].map(assignment) == "test", "case_id"])
    missing = sorted(test_cases - set(samples["case_id"]))
    if missing:
        raise DataError(f"{probs_folder}: no prediction of test cases {missing[:3]}; a volume needs every test case")
    cases = {case.case_id: case for case in list_cases(Path(root), parse_settings(AmosSettings, reader, "amos"))}
    cut, names = probability_cut(threshold), store.class_names
    records, false_positives = [], {}
    with atomic.atomic_dir(out) as tmp:
        groups = samples.sort_values(["case_id", "slice_index"]).groupby("case_id", sort=True)
        for case_id, group in tqdm(groups, desc="label volumes", unit="volume", disable=not progress):
            if case_id not in cases:
                raise DataError(
                    f"{root}: no image of test case {case_id} (is it the folder the store was prepared from?)"
                )
            case = cases[case_id]
            shape = display_shape(case.image)
            stored = (
                int(group["slice_count"].iloc[0]),
                int(group["orig_height"].iloc[0]),
                int(group["orig_width"].iloc[0]),
            )
            if shape != stored:
                raise DataError(
                    f"{case.image}: {shape[0]} slices of {shape[1]} x {shape[2]}, but the store holds {case_id} as "
                    f"{stored[0]} slices of {stored[1]} x {stored[2]} (is it the folder the store was prepared from?)"
                )
            maps = slice_label_maps(probs[group["row"].to_numpy()], cut)
            slices = case_slices(shape, group["slice_index"].tolist(), maps)
            written = tmp / f"{case_id}.nii.gz"
            write_nifti(written, label_image_like(case.image, slices))
            pred, spacing, _ = label_volume(written, len(names))  # both files read alike: RAS+, voxel size in mm
            truth = label_volume(case.label, len(names))[0]
            scored, false_positives[case_id] = score_volume(pred, truth, spacing, names, tolerance)
            records += [{"case_id": case_id, **row} for row in scored]
        table = pd.DataFrame(records, columns=list(VOLUME_FILE_COLUMNS))
        summary = {
            **summarize_volumes(table, false_positives, names),
            "dataset": store.kind,
            "class_names": list(names),
            "model": meta.get("model"),
            "threshold": threshold,
            "tolerance_mm": tolerance,
            "probs": str(probs_folder),
        }
        (tmp / VOLUMES_TABLE).write_text(table.to_csv(index=False, float_format="%.4f"))
        (tmp / VOLUMES_SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    shown = "n/a" if summary["mdice_3d"] is None else f"{summary['mdice_3d']:.2f}"
    line = f"{summary['volumes']} label volumes in {out}: 3D mDice {shown} % from the files"
    print(line, file=sys.stderr)
    return line
