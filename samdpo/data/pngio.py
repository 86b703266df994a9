"""Reading 2D image and mask files by their real pixel type, with errors that name the file, and writing PNG.

Images (``read_gray``): 8-bit values are divided by 255; 16-bit values by the bit depth they use
(a 12-bit radiograph stored in a 16-bit file by 4095, a full 16-bit one by 65535); 32-bit integer
and float values (TIFF) are scaled from the image's own minimum to its maximum, so NaN, infinite
or constant pixels are refused. Colour is averaged to gray; palette images are read through their
palette. Transparency is refused unless every pixel is equally opaque, since the gray under a
transparent pixel is undefined.

Masks (``read_mask``): background is 0. A mask with two levels keeps every non-zero pixel; one with
more levels (an anti-aliased or JPEG-compressed 0/255 mask) is cut at half its maximum, provided
that maximum is at least half the file's range (8-bit: 128, 16-bit: 32768, float: 0.5); smaller
multi-level masks ({0, 1, 2}: a label map?) are refused. Colour masks use their brightest channel.
A mask with a varying alpha channel over constant colour (a lesion drawn in the alpha channel) is
read from its alpha channel; one whose colour and alpha draw different masks is refused.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from samdpo.errors import DataError

#: PIL's own default limit on the pixels of one image (decompression-bomb protection).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
_TO_RGB = ("CMYK", "YCbCr", "HSV", "LAB", "RGBX")
_TO_ALPHA = {"PA": "RGBA", "RGBa": "RGBA", "La": "LA"}


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make PIL refuse images over ``max_pixels`` (its warning becomes an error) inside the block."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _decode(path: Path, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a file: (H, W) or (H, W, 3) values in their stored dtype, and (H, W) alpha or None."""
    try:
        with _pixel_limit(max_pixels), Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise DataError(f"{path}: holds {frames} frames; a 2D image file must hold one")
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in _TO_ALPHA:
                img = img.convert(_TO_ALPHA[img.mode])
            elif img.mode in _TO_RGB:
                img = img.convert("RGB")
            arr = np.asarray(img)
            mode = img.mode
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: the image has more than {max_pixels:,} pixels (a corrupt or hostile file?); "
            "raise the reader setting max_image_pixels if it is genuine"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    if mode in ("LA", "RGBA"):
        colour = arr[..., 0] if mode == "LA" else arr[..., :3]
        return colour, arr[..., -1]
    return arr, None


def _varies(values: np.ndarray | None) -> bool:
    return values is not None and values.size > 0 and values.min() != values.max()


def read_gray(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as (H, W) float32 gray in [0, 1] (see the module notes for the scaling)."""
    colour, alpha = _decode(path, max_pixels)
    if _varies(alpha):
        raise DataError(
            f"{path}: the image has transparent pixels, whose gray is undefined; save it without transparency"
        )
    if colour.ndim == 3:
        gray = colour.astype(np.float32).mean(axis=-1)
        return gray / np.float32(np.iinfo(colour.dtype).max)
    if colour.dtype == bool or colour.dtype == np.uint8:
        return colour.astype(np.float32) / np.float32(1 if colour.dtype == bool else 255)
    if colour.dtype.kind == "u" and colour.dtype.itemsize == 2:
        bits = max(8, int(colour.max()).bit_length())
        return colour.astype(np.float32) / np.float32(2**bits - 1)
    values = colour.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: the image has NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise DataError(
            f"{path}: every pixel of the {colour.dtype} image is {low:g}; there is nothing to scale to [0, 1]"
        )
    return ((values - low) / (high - low)).astype(np.float32)


def _levels(values: np.ndarray) -> np.ndarray:
    """The distinct values of ``values``, ascending, as float64 (by counting for 8/16-bit: O(pixels))."""
    if values.dtype == bool or (values.dtype.kind == "u" and values.dtype.itemsize <= 2):
        return np.flatnonzero(np.bincount(values.ravel().astype(np.intp, copy=False))).astype(np.float64)
    return np.unique(values).astype(np.float64)


def _binary(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Foreground of a (H, W) channel ``what`` of a mask: non-zero for two levels, above half the peak for more."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DataError(f"{path}: the {what} has NaN or infinite values")
    levels = _levels(values)
    if levels.size and levels[0] != 0:
        raise DataError(
            f"{path}: the lowest value of the {what} is {levels[0]:g}, not 0 (background); "
            "a mask marks the target with positive values on a 0 background"
        )
    if levels.size <= 2:
        return values > 0
    peak = levels[-1]
    full = next((f for f in (1.0, 255.0, 65535.0) if peak <= f), peak)
    if peak < full / 2:
        found = ", ".join(f"{v:g}" for v in levels[:6]) + (", ..." if levels.size > 6 else "")
        raise DataError(
            f"{path}: the {what} holds the values {{{found}}}, neither 0 and one value nor a 0/{full:g} mask "
            "(a label map?); save it with 0 for background and one value for the target"
        )
    return values > peak / 2


def read_mask(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read a mask file as a (H, W) bool array (see the module notes for the rules)."""
    colour, alpha = _decode(path, max_pixels)
    values = colour.max(axis=-1) if colour.ndim == 3 else colour
    if not _varies(alpha):
        return _binary(values, path, "mask")
    alpha_mask = _binary(alpha, path, "mask's alpha channel")
    if not _varies(values):
        return alpha_mask
    if not np.array_equal(_binary(values, path, "mask's colour"), alpha_mask):
        raise DataError(
            f"{path}: the mask's colour and alpha channels draw different masks; "
            "save it as a gray image with 0 for background"
        )
    return alpha_mask


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG bytes; no timestamps, so bytes are reproducible."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
