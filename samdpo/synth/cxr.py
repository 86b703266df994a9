"""Synthetic chest radiographs in the Montgomery layout (or the plain paired layout).

Two dark lung fields with a domed apex and costophrenic angle, a heart shadow cutting into the
patient's left lung, spine and mediastinum, posterior ribs and clavicles, soft tissue and noise.
The patient's left lung is on the image's right; ``ManualMask/leftMask`` holds the patient's left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from samdpo import atomic
from samdpo.data.pngio import png_bytes
from samdpo.errors import ConfigError
from samdpo.synth.shapes import ellipse_level, smooth_field, to_uint8

LAYOUTS = ("montgomery", "paired")


def _lung(
    rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], side: int
) -> np.ndarray:
    """Bool mask of one lung; ``side`` = -1 image left (patient right), +1 image right (patient left)."""
    height, width = shape
    cx = width * (0.5 + side * rng.uniform(0.18, 0.23))
    top, bottom = height * rng.uniform(0.12, 0.2), height * rng.uniform(0.72, 0.85)
    half = width * rng.uniform(0.13, 0.17)
    t = np.clip((rows - top) / (bottom - top), 0.0, 1.0)
    width_at = half * np.sqrt(np.clip(t, 0.0, 1.0)) ** 0.7 * (1.0 + 0.15 * t)
    inside = (rows > top) & (rows < bottom - side * 0.0) & (np.abs(cols - cx) < width_at)
    dome = bottom - height * 0.06 * (1 - ((cols - cx) / (half * 1.3)) ** 2)
    inside &= rows < dome
    wobble = smooth_field(rng, shape, 5) * 0.04 * width
    return inside & (np.abs(cols - cx) < width_at + wobble)


def _draw(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one radiograph: ([0, 1] image, patient-left lung mask, patient-right lung mask)."""
    height, width = shape
    rows, cols = np.meshgrid(np.arange(height, dtype=float), np.arange(width, dtype=float), indexing="ij")
    body = ellipse_level((rows, cols), (height * 0.55, width * 0.5), (height * 0.62, width * 0.46)) < 1.0
    image = np.where(body, 0.55, 0.04) + 0.05 * smooth_field(rng, shape, 4)
    right = _lung(rng, rows, cols, shape, -1)
    left = _lung(rng, rows, cols, shape, +1)
    heart = (
        ellipse_level(
            (rows, cols),
            (height * rng.uniform(0.62, 0.68), width * rng.uniform(0.54, 0.58)),
            (height * 0.14, width * rng.uniform(0.14, 0.18)),
        )
        < 1.0
    )
    left &= ~heart
    right &= ~heart
    image[left | right] = 0.16 + 0.04 * smooth_field(rng, shape, 14)[left | right]
    spine = np.abs(cols - width * 0.5) < width * 0.05
    image[spine & body] += 0.12
    image[heart] = 0.6
    thorax = (rows > height * 0.08) & (rows < height * 0.85)
    gap = height * rng.uniform(0.065, 0.08)
    for k in range(10):
        for side in (-1, 1):
            x = (cols - width * 0.5) * side / (width * 0.5)
            arc = height * 0.14 + k * gap + height * 0.22 * x**2 - height * 0.08 * x
            band = (np.abs(rows - arc) < height * 0.012) & (x > 0.06) & (x < 0.75) & thorax
            image[band] += 0.1
    for side in (-1, 1):
        x = (cols - width * 0.5) * side / (width * 0.5)
        clavicle = (np.abs(rows - (height * 0.13 - height * 0.05 * x)) < height * 0.013) & (x > 0.08) & (x < 0.6)
        image[clavicle] += 0.18
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0.0, 0.02, size=shape)
    return np.clip(image, 0.0, 1.0), left, right


def write(out: Path, cases: int, seed: int, layout: str = "montgomery") -> None:
    """Write ``cases`` radiographs ``MCUCXR_XXXX_D.png`` in the Montgomery or paired layout.

    Raises:
        ConfigError: an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    for index in range(cases):
        rng = np.random.default_rng([seed, index])
        shape = (int(rng.integers(224, 288)), int(rng.integers(224, 288)))
        image, left, right = _draw(rng, shape)
        name = f"MCUCXR_{index + 1:04d}_{int(rng.uniform() < 0.4)}.png"
        if layout == "montgomery":
            atomic.write_bytes(out / "CXR_png" / name, png_bytes(to_uint8(image)))
            atomic.write_bytes(out / "ManualMask" / "leftMask" / name, png_bytes(left.astype(np.uint8) * 255))
            atomic.write_bytes(out / "ManualMask" / "rightMask" / name, png_bytes(right.astype(np.uint8) * 255))
        else:
            atomic.write_bytes(out / "images" / name, png_bytes(to_uint8(image)))
            mask_name = name.replace(".png", "_mask.png")
            atomic.write_bytes(out / "masks" / mask_name, png_bytes((left | right).astype(np.uint8) * 255))
