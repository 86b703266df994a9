"""The prompts of each image, read from the Parquet prompt store into arrays the model takes.

Coordinates stay in the store's pixels (XY, boxes XYXY with inclusive maxima); the model scales
them to its input size. Checks, each a :class:`~samdpo.errors.DataError` naming the file and class:
a missing prompt file; a box with NaN, with x1 < x0 or y1 < y0 (empty), or entirely outside the
image. A box partly outside the image is clipped to it (documented handling, not an error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samdpo.errors import DataError
from samdpo.prompts.store import read_prompts
from samdpo.train.text_embeddings import vqa_text


@dataclass(frozen=True)
class ImagePrompts:
    """The prompts of one image for its T classes.

    Attributes:
        sample_id: the image.
        boxes: (T, 4) float32 XYXY pixels (zeros where ``has_box`` is False).
        has_box: (T,) bool; False = "no box" (an empty CRF mask).
        points: (T, P, 2) float32 XY pixels, P = the most points of any class (padding rows zero).
        point_labels: (T, P) int64: 1 foreground, 0 background, -1 padding.
        vqa: T VQA sentences; llm: T descriptions.
        present: (T,) bool, the presence signal's answer (all True without one): a class that is not
            present is not predicted (its mask is empty).
    """

    sample_id: str
    boxes: np.ndarray
    has_box: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    vqa: tuple[str, ...]
    llm: tuple[str, ...]
    present: np.ndarray


def _box(box: Sequence[float] | None, size: tuple[int, int], where: str) -> np.ndarray | None:
    """The box clipped to the image, or None for "no box"; errors for NaN, empty or outside boxes."""
    if box is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    height, width = size
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise DataError(f"{where}: box {box} has NaN or infinite coordinates")
    if x1 < x0 or y1 < y0:
        raise DataError(f"{where}: empty box {box} (x1 < x0 or y1 < y0); an empty prompt must be stored as no box")
    if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
        raise DataError(f"{where}: box {box} lies outside the {width}x{height} image")
    return np.array([max(x0, 0.0), max(y0, 0.0), min(x1, width - 1.0), min(y1, height - 1.0)], dtype=np.float32)


def load_image_prompts(folder: Path, sample_id: str, class_names: Sequence[str]) -> ImagePrompts:
    """Read ``folder/{sample_id}.parquet`` and check it holds every class in order."""
    path = Path(folder) / f"{sample_id}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: no prompt file for image {sample_id}; run the prompt_store rule")
    rows, _ = read_prompts(path)
    if [row["class_name"] for row in rows] != list(class_names):
        raise DataError(
            f"{path}: classes {[row['class_name'] for row in rows]} differ from the dataset's {list(class_names)}"
        )
    if any(row.get("present") is None for row in rows):
        raise DataError(f"{path}: no presence decision (a prompt file of an older format); rerun the prompt_store rule")
    count = len(rows)
    most = max([len(row["points"]) for row in rows] + [1])
    boxes = np.zeros((count, 4), np.float32)
    has_box = np.zeros(count, bool)
    points = np.zeros((count, most, 2), np.float32)
    labels = np.full((count, most), -1, np.int64)
    for t, row in enumerate(rows):
        where = f"{path}, class {row['class_name']}"
        box = _box(row["box"] if row["has_box"] else None, tuple(row["mask_shape"]), where)
        if box is not None:
            boxes[t], has_box[t] = box, True
        if row["points"]:
            xy = np.asarray(row["points"], np.float32)
            if not np.isfinite(xy).all():
                raise DataError(f"{where}: point prompts with NaN")
            points[t, : len(xy)] = xy
            labels[t, : len(xy)] = row["point_labels"]
    return ImagePrompts(
        sample_id=sample_id,
        boxes=boxes,
        has_box=has_box,
        points=points,
        point_labels=labels,
        vqa=tuple(vqa_text(row["vqa"]) for row in rows),
        llm=tuple(row["description"] for row in rows),
        present=np.array([bool(row["present"]) for row in rows], dtype=bool),
    )


def present_prompts(prompts: Sequence[ImagePrompts]) -> list[list[int]]:
    """Per image, the classes the presence signal says are on it: the only ones a prediction asks the model for."""
    return [np.flatnonzero(p.present).tolist() for p in prompts]
