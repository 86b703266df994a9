"""Synthetic breast ultrasound in the BUSI layout.

Layered tissue (skin, subcutaneous fat, fibroglandular tissue, pectoral muscle) under multiplicative
speckle and depth attenuation; benign lesions are smooth, wider-than-tall hypoechoic ellipses with
posterior enhancement, malignant ones irregular and spiculated with posterior shadowing. About one
image in eight is ``normal`` (empty mask); some lesion images carry a second lesion in
``NAME_mask_1.png``, as in the real release.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from samdpo import atomic
from samdpo.data.pngio import png_bytes
from samdpo.synth.shapes import smooth_field, to_uint8


def _lesion(rng: np.random.Generator, shape: tuple[int, int], malignant: bool, scale: float) -> np.ndarray:
    """A (H, W) bool lesion mask: smooth ellipse (benign) or spiculated blob (malignant)."""
    height, width = shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    cy, cx = height * rng.uniform(0.35, 0.6), width * rng.uniform(0.3, 0.7)
    rx = width * rng.uniform(0.08, 0.16) * scale
    ry = rx * (rng.uniform(0.75, 1.2) if malignant else rng.uniform(0.45, 0.7))
    angle = np.arctan2((rows - cy) / ry, (cols - cx) / rx)
    radius = np.hypot((rows - cy) / ry, (cols - cx) / rx)
    if malignant:
        bumps = sum(rng.uniform(0.04, 0.12) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(3, 12))
        spikes = rng.uniform(0.1, 0.25) * np.maximum(np.cos(rng.integers(5, 11) * angle + rng.uniform(0, 6)), 0) ** 6
        edge = 1.0 + bumps + spikes
    else:
        edge = 1.0 + 0.05 * np.cos(2 * angle + rng.uniform(0, 2 * np.pi))
    return radius < edge


def _image(rng: np.random.Generator, shape: tuple[int, int], lesions: list[tuple[np.ndarray, bool]]) -> np.ndarray:
    """Render a (H, W) [0, 1] ultrasound-like image with the given lesions."""
    height, width = shape
    depth = np.linspace(0.0, 1.0, height)[:, None] * np.ones((1, width))
    wave = 0.03 * smooth_field(rng, shape, (3, 4))
    echo = np.full(shape, 0.18)
    echo[depth + wave < 0.04] = 0.85  # skin
    fat = (depth + wave >= 0.04) & (depth + wave < 0.2 + 0.05 * smooth_field(rng, shape, (2, 3)))
    echo[fat] = 0.3
    gland = (depth + wave >= 0.2) & (depth + wave < 0.72)
    echo[gland] = 0.55 + 0.15 * smooth_field(rng, shape, (8, 10))[gland]
    muscle = (depth + wave >= 0.72) & (depth < 0.9)
    echo[muscle] = 0.35 + 0.1 * np.sin(depth[muscle] * 90.0)
    for mask, malignant in lesions:
        echo[mask] = rng.uniform(0.06, 0.16) + (0.05 * smooth_field(rng, shape, 12))[mask]
        rows, cols = np.nonzero(mask)
        below = (
            (depth * height > rows.max())
            & (np.arange(width)[None, :] >= cols.min())
            & (np.arange(width)[None, :] <= cols.max())
        )
        factor = rng.uniform(0.35, 0.6) if malignant else rng.uniform(1.2, 1.45)
        echo = np.where(ndimage.gaussian_filter(below.astype(float), 3) > 0.5, echo * factor, echo)
    speckle = rng.rayleigh(1.0, size=shape)
    speckle = ndimage.gaussian_filter(speckle, sigma=(0.6, 1.4)) / 1.25
    image = echo * speckle * np.exp(-0.9 * depth)
    return np.clip(image / np.percentile(image, 99.5), 0.0, 1.0)


def write(out: Path, cases: int, seed: int) -> None:
    """Write ``cases`` images into ``out/{benign,malignant,normal}/`` with their mask files."""
    n_normal = max(1, cases // 8)
    n_malignant = (cases - n_normal) * 2 // 5
    groups = ["normal"] * n_normal + ["malignant"] * n_malignant + ["benign"] * (cases - n_normal - n_malignant)
    counters = {"benign": 0, "malignant": 0, "normal": 0}
    for index, group in enumerate(groups):
        rng = np.random.default_rng([seed, index])
        counters[group] += 1
        name = f"{group} ({counters[group]})"
        shape = (int(rng.integers(180, 260)), int(rng.integers(220, 320)))
        lesions: list[tuple[np.ndarray, bool]] = []
        if group != "normal":
            lesions.append((_lesion(rng, shape, group == "malignant", 1.0), group == "malignant"))
            if rng.uniform() < 0.2:
                second = _lesion(rng, shape, group == "malignant", 0.5) & ~ndimage.binary_dilation(
                    lesions[0][0], iterations=4
                )
                if second.sum() > 20:
                    lesions.append((second, group == "malignant"))
        gray = to_uint8(_image(rng, shape, lesions))
        folder = out / group
        atomic.write_bytes(folder / f"{name}.png", png_bytes(np.stack([gray] * 3, axis=-1)))
        masks = [m for m, _ in lesions] or [np.zeros(shape, dtype=bool)]
        for k, mask in enumerate(masks):
            suffix = "_mask" if k == 0 else f"_mask_{k}"
            atomic.write_bytes(folder / f"{name}{suffix}.png", png_bytes(mask.astype(np.uint8) * 255))
