"""Anatomical priors learned from the labelled split: where each class lies relative to the body.

Each image gets a body frame: the bounding box of its body outline (the largest connected region
brighter than ``body_threshold``; dark holes inside it do not change its box). Coordinates
``u = (x - cx) / half_width`` and ``v = (y - cy) / half_height`` then put every image on one grid,
whatever the patient's size and position. The prior of class t is, on a ``grid x grid`` lattice over
``[-extent, extent]^2``, the share of labelled images showing t in which (u, v) lies inside t,
smoothed by a Gaussian (a few labelled volumes leave holes). Warped back into a new image's frame it
multiplies that image's saliency before the CRF, so that a saliency peak in the wrong place (the
mediastinum for the lungs, the liver for the spleen) is suppressed.

Only the labelled split's labels are read (:func:`fit_prior` is given them by the caller); the prior
of an unlabelled or test image depends on its own pixels only through its body outline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

PRIOR_FILE = "anatomy_prior.npz"


@dataclass(frozen=True)
class AnatomySettings:
    """Settings of the anatomical prior.

    Attributes:
        enabled: multiply the saliency by the prior before the CRF (false: saliency alone).
        grid: lattice points per side of the prior.
        extent: half-side of the lattice in body half-axes (> 1 reaches outside the body box).
        smoothing: Gaussian sigma applied to the prior, in lattice cells.
        body_threshold: grey level (fraction of 255) above which a pixel belongs to the body.
        floor: the prior never drops below this value (a class seen where no labelled image had it
            keeps some saliency), in [0, 1).
        saliency_power: the CRF sees ``prior x saliency ** saliency_power`` (0: the prior alone).
    """

    enabled: bool = True
    grid: int = 48
    extent: float = 1.2
    smoothing: float = 1.5
    body_threshold: float = 0.05
    floor: float = 0.0
    saliency_power: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 4:
            raise ConfigError(f"anatomy.grid must be an integer >= 4, got {self.grid!r}")
        if not self.extent > 0:
            raise ConfigError(f"anatomy.extent must be positive, got {self.extent!r}")
        if not self.smoothing >= 0:
            raise ConfigError(f"anatomy.smoothing must be >= 0, got {self.smoothing!r}")
        if not 0.0 <= self.body_threshold < 1.0:
            raise ConfigError(f"anatomy.body_threshold must lie in [0, 1), got {self.body_threshold!r}")
        if not self.saliency_power >= 0:
            raise ConfigError(f"anatomy.saliency_power must be >= 0, got {self.saliency_power!r}")
        if not 0.0 <= self.floor < 1.0:
            raise ConfigError(f"anatomy.floor must lie in [0, 1), got {self.floor!r}")


@dataclass(frozen=True)
class BodyFrame:
    """Centre and half-axes of the body outline's bounding box, in pixels (row = y, col = x)."""

    cy: float
    cx: float
    half_height: float
    half_width: float


def body_frame(image: np.ndarray, threshold: float) -> BodyFrame:
    """The body frame of one (H, W) uint8 image; the whole image when nothing exceeds ``threshold``.

    The body is the largest 8-connected region above ``threshold * 255``; dark holes inside it (air
    in the bowel or lungs) do not change its bounding box.
    """
    if image.ndim != 2:
        raise ValueError(f"body_frame needs an (H, W) image, got shape {image.shape}")
    height, width = image.shape
    labels, count = ndimage.label(np.asarray(image) > threshold * 255.0, structure=np.ones((3, 3), bool))
    if count == 0:
        return BodyFrame((height - 1) / 2, (width - 1) / 2, height / 2, width / 2)
    body = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    return BodyFrame(
        (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2, (rows[-1] - rows[0] + 1) / 2, (cols[-1] - cols[0] + 1) / 2
    )


def _lattice(frame: BodyFrame, settings: AnatomySettings) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, col) coordinates of the lattice points in one image's frame, each (grid, grid)."""
    axis = np.linspace(-settings.extent, settings.extent, settings.grid)
    v, u = np.meshgrid(axis, axis, indexing="ij")
    return frame.cy + v * frame.half_height, frame.cx + u * frame.half_width


@dataclass(frozen=True)
class AnatomyPrior:
    """The fitted prior.

    Attributes:
        maps: (T, grid, grid) float32, P(class t at (v, u) | t in the image), in [floor, 1].
        counts: (T,) labelled images that show each class (0: no prior, the map is all ones).
        class_names: T names.
        settings: what it was fitted with.
    """

    maps: np.ndarray
    counts: np.ndarray
    class_names: tuple[str, ...]
    settings: AnatomySettings

    def image_maps(self, image: np.ndarray) -> np.ndarray:
        """The prior in one (H, W) uint8 image's pixels: (T, H, W) float32 in [0, 1] (bilinear)."""
        frame = body_frame(image, self.settings.body_threshold)
        height, width = image.shape
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        scale = (self.settings.grid - 1) / (2 * self.settings.extent)
        v = ((rows - frame.cy) / frame.half_height + self.settings.extent) * scale
        u = ((cols - frame.cx) / frame.half_width + self.settings.extent) * scale
        return np.stack(
            [ndimage.map_coordinates(m, [v, u], order=1, mode="constant", cval=float(m.min())) for m in self.maps]
        ).astype(np.float32)


def fit_prior(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str], settings: AnatomySettings
) -> AnatomyPrior:
    """Fit the prior on labelled images.

    Args:
        images: (N, H, W) uint8 labelled images (their body outlines give the frames).
        labels: (N, H, W) uint8 label maps, label k = class_names[k - 1].
        class_names: T names.
        settings: lattice, smoothing, body threshold.

    Returns:
        The prior; a class absent from every labelled image has ``counts == 0`` and an all-ones map.

    Raises:
        DataError: no labelled image, or images and labels differ in shape.
    """
    if len(images) == 0:
        raise DataError("the anatomical prior needs labelled images; the labelled split is empty")
    if images.shape != labels.shape:
        raise DataError(f"labelled images {images.shape} and labels {labels.shape} differ in shape")
    count_t = len(class_names)
    sums = np.zeros((count_t, settings.grid, settings.grid), np.float64)
    counts = np.zeros(count_t, np.int64)
    for image, label in zip(images, labels):
        rows, cols = _lattice(body_frame(image, settings.body_threshold), settings)
        sampled = ndimage.map_coordinates(label, [rows, cols], order=0, mode="constant", cval=0)
        for t in np.unique(label[label > 0]).astype(int) - 1:
            if t < count_t:
                sums[t] += sampled == t + 1
                counts[t] += 1
    maps = np.ones_like(sums)
    for t in np.flatnonzero(counts):
        smoothed = (
            ndimage.gaussian_filter(sums[t] / counts[t], settings.smoothing)
            if settings.smoothing
            else sums[t] / counts[t]
        )
        maps[t] = smoothed / max(float(smoothed.max()), 1e-12)
    maps = settings.floor + (1.0 - settings.floor) * maps
    return AnatomyPrior(maps.astype(np.float32), counts, tuple(class_names), settings)


def write_prior(prior: AnatomyPrior, path: Path, meta: Mapping) -> None:
    """Write the prior (``maps``, ``counts``) and its metadata (names, settings, provenance) atomically."""
    info = {"class_names": list(prior.class_names), "settings": asdict(prior.settings), **meta}
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, maps=prior.maps, counts=prior.counts, meta=np.array(json.dumps(info, sort_keys=True)))


def read_prior(path: Path) -> tuple[AnatomyPrior, dict]:
    """Read a prior written by :func:`write_prior`; its metadata as a dict."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no anatomical prior; run the anatomy_prior rule first")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        settings = AnatomySettings(**meta["settings"])
        return AnatomyPrior(data["maps"], data["counts"], tuple(meta["class_names"]), settings), meta
