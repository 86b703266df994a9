"""The common 2D sample form every dataset reader yields."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One 2D image with its label map.

    Attributes:
        sample_id: unique, filesystem-safe id of this 2D image (e.g. ``amos_0001_z042``).
        case_id: patient / volume id; splits are made on it, never on slices.
        slice_index: axial slice index in the canonical (RAS) volume; 0 for 2D datasets.
        image: (H, W) float32 in [0, 1] (CT already windowed), resized to the model input size.
        label: (H, W) uint8 label map, 0 = background, k = ``class_names[k - 1]``; None for an image
            without labels (a new image to segment: its store has no ``labels.npy``).
        spacing: (row, col) size of one output pixel, in ``spacing_unit`` (mm for AMOS,
            original pixels for PNG datasets whose files carry no physical spacing).
        spacing_unit: ``"mm"`` or ``"px"``.
        class_names: names of the labels 1..K.
        group: dataset-specific subgroup (AMOS subset ``Tr``/``Va``, BUSI ``benign``/``malignant``,
            CXR layout name), kept for stratified reporting.
        source: path of the image file the sample came from, relative to the dataset root.
        original_shape: (H, W) of the slice before resizing.
        slice_count: axial slices of the whole volume the slice was cut from (1 for 2D datasets);
            ``(slice_index + 0.5) / slice_count`` is the slice's height in its scan, 0 = inferior end.
    """

    sample_id: str
    case_id: str
    slice_index: int
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float]
    spacing_unit: str
    class_names: tuple[str, ...]
    group: str
    source: str
    original_shape: tuple[int, int]
    slice_count: int = 1
