"""Saliency map files: ``saliency.npy`` (N, T, S, S) uint8 (x 255) + ``saliency.json``, written by
the saliency rule and read by the CRF step; and the anatomical prior's weighting of a map."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from samdpo.class_maps import read_arrays, write_arrays

SALIENCY = "saliency"


def write_saliency(folder: Path, maps: np.ndarray, meta: Mapping) -> None:
    """Write (N, T, S, S) uint8 maps and their metadata (sample ids, classes, prompts, model, settings)."""

    def fill(out: np.ndarray) -> None:
        out[...] = maps

    write_arrays(Path(folder), SALIENCY, maps.shape, fill, meta)


def read_saliency(folder: Path) -> tuple[np.ndarray, dict]:
    """The (N, T, S, S) uint8 maps (memory-mapped) and their metadata."""
    return read_arrays(Path(folder), SALIENCY, "saliency")


def weighted_saliency(saliency: np.ndarray, prior: np.ndarray, power: float) -> np.ndarray:
    """``prior x saliency ** power``, rescaled so that its maximum is the saliency's: (H, W) float32 in [0, 1].

    ``power`` weighs the saliency against the prior (0: the prior alone, shaped by the CRF). An
    all-zero saliency (a constant image) stays all zero whatever the power, as does a product that
    the prior rules out everywhere.
    """
    peak_saliency = float(saliency.max())
    product = prior * saliency**power if power > 0 else prior.astype(np.float32)
    peak = float(product.max())
    if peak_saliency <= 0 or peak <= 0:
        return np.zeros_like(saliency, np.float32)
    return (product * (peak_saliency / peak)).astype(np.float32)
