"""The training images of a prepared store in nnU-Net v2's raw dataset format (numpy and Pillow only).

nnunetv2 reads a raw dataset from ``$nnUNet_raw/DatasetNNN_NAME/``::

    dataset.json                  channel_names, labels, numTraining, file_ending
    imagesTr/{case}_0000.png      one grey channel (nnunetv2's NaturalImage2DIO: spacing (999, 1, 1))
    labelsTr/{case}.png           a single-channel uint8 label map, 0 = background, k = labels' value k

Each stored 2D image is one nnU-Net case (its sample id is the case identifier). The images are the
store's uint8 pixels as they are; channel ``zscore`` makes nnU-Net normalise each image by its own mean
and standard deviation (the store's pixels are already windowed, so CT normalisation would not apply).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samdpo.atomic import atomic_dir
from samdpo.errors import DataError

#: nnU-Net's dataset id: each dataset of the pipeline has its own nnU-Net folders, so one id serves all.
DATASET_ID = 1
#: The raw images' file ending (nnunetv2 picks NaturalImage2DIO for it).
FILE_ENDING = ".png"
#: Characters a case identifier may hold (it becomes a file name).
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def dataset_name(kind: str) -> str:
    """nnU-Net's dataset folder name for a dataset kind: ``Dataset001_AMOS``."""
    return f"Dataset{DATASET_ID:03d}_{kind.upper()}"


def dataset_json(class_names: Sequence[str], training_cases: int) -> dict[str, Any]:
    """nnU-Net's ``dataset.json``: one ``zscore`` channel, background 0 and class k + 1 per class name."""
    labels = {"background": 0, **{name: k + 1 for k, name in enumerate(class_names)}}
    if len(labels) != len(class_names) + 1:
        raise DataError(f"class names must be distinct and none may be 'background', got {list(class_names)}")
    return {
        "channel_names": {"0": "zscore"},
        "labels": labels,
        "numTraining": training_cases,
        "file_ending": FILE_ENDING,
    }


def write_raw_dataset(
    images: np.ndarray, labels: np.ndarray, case_ids: Sequence[str], class_names: Sequence[str], folder: Path
) -> dict[str, Any]:
    """Write ``folder`` (a ``DatasetNNN_NAME`` folder) atomically; returns its ``dataset.json``.

    Args:
        images: (N, S, S) uint8 training images.
        labels: (N, S, S) uint8 label maps (0 = background, k = ``class_names[k - 1]``).
        case_ids: N distinct identifiers (the store's sample ids).
        class_names: the T class names.
        folder: the dataset folder to (re)write.

    Raises:
        DataError: shapes, ids or label values that nnU-Net would refuse.
    """
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape or labels.dtype != np.uint8:
        raise DataError(
            f"nnU-Net export: images {images.shape} {images.dtype} and labels {labels.shape} {labels.dtype}"
        )
    if len(case_ids) != len(images) or len(set(case_ids)) != len(case_ids) or not len(images):
        raise DataError(f"nnU-Net export: {len(case_ids)} distinct case ids needed for {len(images)} images")
    bad = [c for c in case_ids if not _CASE_ID.match(c)]
    if bad:
        raise DataError(f"nnU-Net export: case ids {bad[:3]} are not usable as file names (letters, digits, . _ -)")
    if int(labels.max()) > len(class_names):
        raise DataError(f"nnU-Net export: label value {int(labels.max())} but only {len(class_names)} classes")
    description = dataset_json(class_names, len(images))
    with atomic_dir(folder) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for case, image, label in zip(case_ids, images, labels):
            Image.fromarray(np.asarray(image), mode="L").save(tmp / "imagesTr" / f"{case}_0000{FILE_ENDING}")
            Image.fromarray(np.asarray(label), mode="L").save(tmp / "labelsTr" / f"{case}{FILE_ENDING}")
        (tmp / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return description
