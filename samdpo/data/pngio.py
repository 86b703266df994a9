"""Reading PNG images and masks with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from samdpo.data.transforms import to_unit_gray
from samdpo.errors import DataError


def _open(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "LA", "RGBA", "PA", "1", "CMYK", "YCbCr", "HSV"):
                img = img.convert("RGB" if img.mode != "1" else "L")
            return np.asarray(img)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def read_gray(path: Path) -> np.ndarray:
    """Read an image file as (H, W) float32 gray in [0, 1] (RGB is averaged)."""
    return to_unit_gray(_open(path))


def read_mask(path: Path) -> np.ndarray:
    """Read a mask file as a (H, W) bool array.

    Masks stored as 0/1 keep every non-zero pixel; masks stored as 0/255 (or 16-bit) are cut at
    half their maximum, so resampling halos in downloaded masks do not grow the foreground.
    RGB masks use their brightest channel.
    """
    arr = _open(path)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    peak = int(arr.max()) if arr.size else 0
    return arr > (0 if peak <= 1 else peak // 2)
