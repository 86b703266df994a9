"""Captions for pretraining the embedded default's CLIP, and the zero-shot prompts that query it.

A caption names one target and, half the time each, its position (thirds of the image) and size:
``"an abdominal CT slice with the large liver in the upper left"``. The zero-shot prompt is the same
sentence without position and size (``"an abdominal CT slice with the liver"``); a background
caption describes images or crops with no target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODALITY = {"amos": "an abdominal CT slice", "busi": "a breast ultrasound image", "cxr": "a chest x-ray"}
_ROWS, _COLS = ("upper", "", "lower"), ("left", "", "right")
SIZES = ("small", "medium", "large")


@dataclass(frozen=True)
class Caption:
    """What a caption says: dataset kind, target class (None = background), optional position / size."""

    kind: str
    target: str | None
    position: str | None = None
    size: str | None = None

    def text(self) -> str:
        """The sentence."""
        if self.target is None:
            return f"{MODALITY[self.kind]} with background tissue only"
        words = " ".join(w for w in (self.size, self.target) if w)
        where = f" in the {self.position}" if self.position else ""
        return f"{MODALITY[self.kind]} with the {words}{where}"


def position_word(mask: np.ndarray) -> str:
    """Where a (H, W) bool mask's centroid lies, in thirds: "upper left", "left", "center", ..."""
    rows, cols = np.nonzero(mask)
    r = min(int(3 * rows.mean() / mask.shape[0]), 2)
    c = min(int(3 * cols.mean() / mask.shape[1]), 2)
    return " ".join(w for w in (_ROWS[r], _COLS[c]) if w) or "center"


def size_word(mask: np.ndarray) -> str:
    """ "small" (< 2% of the image), "medium" (< 10%) or "large"."""
    fraction = float(mask.mean())
    return SIZES[0] if fraction < 0.02 else SIZES[1] if fraction < 0.10 else SIZES[2]


def all_positions() -> list[str]:
    """Every value :func:`position_word` can return."""
    return sorted({" ".join(w for w in (r, c) if w) or "center" for r in _ROWS for c in _COLS})


def vocabulary(kind: str, class_names: tuple[str, ...]) -> list[Caption]:
    """Every caption the corpus can produce for one dataset kind (for text-embedding caches)."""
    captions = [Caption(kind, None)]
    for name in class_names:
        for position in (None, *all_positions()):
            for size in (None, *SIZES):
                captions.append(Caption(kind, name, position, size))
    return captions


def zero_shot_prompt(kind: str, class_name: str, template: str | None = None) -> str:
    """The query for one class: ``template`` with ``{modality}`` / ``{name}``, or the caption form."""
    if template:
        return template.format(modality=MODALITY.get(kind, kind), name=class_name)
    return Caption(kind, class_name).text()


def background_prompt(kind: str) -> str:
    """The background caption of a dataset kind (a sibling prompt for contrastive CAM targets)."""
    return Caption(kind, None).text()
