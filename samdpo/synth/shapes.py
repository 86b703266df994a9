"""Random smooth fields and blob shapes shared by the phantom generators."""

from __future__ import annotations

import numpy as np


def _basis(size: int, cells: int) -> np.ndarray:
    """(size, cells + 2) Gaussian interpolation weights from control points to samples, rows summing to 1."""
    samples = (np.arange(size, dtype=np.float64) + 0.5) / size * cells
    knots = np.arange(-1, cells + 1, dtype=np.float64) + 0.5
    weights = np.exp(-0.5 * ((samples[:, None] - knots[None, :]) / 0.6) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int | tuple[int, ...] = 4) -> np.ndarray:
    """A smooth random field of ``shape`` with zero mean and unit std.

    Control points on a coarse grid are drawn from ``rng`` and spread with separable Gaussian
    weights (one small matrix product per axis, so 3D fields cost milliseconds).

    Args:
        rng: random generator (the only source of randomness, so output is seed-deterministic).
        shape: output shape (2D or 3D).
        cells: control points per axis (more = wigglier).

    Returns:
        float32 array of ``shape``.
    """
    cells_t = (cells,) * len(shape) if isinstance(cells, int) else tuple(cells)
    field = rng.standard_normal(tuple(c + 2 for c in cells_t))
    for axis, (size, count) in enumerate(zip(shape, cells_t)):
        field = np.moveaxis(np.tensordot(_basis(size, count), np.moveaxis(field, axis, 0), axes=1), 0, axis)
    field = field - field.mean()
    return (field / (field.std() + 1e-8)).astype(np.float32)


def ellipse_level(coords: tuple[np.ndarray, ...], center: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    """Normalised squared distance sum(((x - c) / r)^2); < 1 inside the ellipse / ellipsoid."""
    return sum(((x - c) / r) ** 2 for x, c, r in zip(coords, center, radii))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Clip a [0, 1] float image and quantise it to uint8."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
