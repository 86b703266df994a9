"""Intensity windowing and resizing shared by the readers."""

from __future__ import annotations

import numpy as np
from PIL import Image


def window_ct(hu: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    """Clip Hounsfield units to ``[level - width/2, level + width/2]`` and scale to [0, 1].

    Args:
        hu: array of CT intensities in HU, any shape.
        level: window centre in HU (MedSAM's abdomen window: 40).
        width: window width in HU (400); must be positive.

    Returns:
        float32 array of the same shape in [0, 1].
    """
    if width <= 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    low = level - width / 2.0
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(width)
    return np.clip(out, 0.0, 1.0)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a (H, W) float image to (size, size) with bilinear interpolation.

    PIL's bilinear filter widens its support when shrinking, so downsampling is antialiased.
    """
    if image.shape == (size, size):
        return image.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def resize_label(label: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a (H, W) uint8 label map to (size, size), or to ``size`` = (rows, cols), nearest neighbour."""
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if label.shape == shape:
        return label.astype(np.uint8, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))
    return np.asarray(pil.resize((shape[1], shape[0]), Image.Resampling.NEAREST), dtype=np.uint8)
