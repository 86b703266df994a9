"""The prompt-sanity check: does a class's saliency change when the class text changes?

MedCLIP-SAM's users found gScoreCAM maps that look alike whatever the prompt. For every image,
the Pearson correlation between the saliency maps of every two classes is computed; a class's score
is the mean of its correlations with the other classes, and the dataset's is the mean over all
pairs. Near 1: the CLIP lights the same pixels whatever it is asked (the text does not steer the
map); near 0 or below: the maps differ. Reads saliency maps only, no labels.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def pair_correlations(maps: np.ndarray) -> np.ndarray:
    """(T, H, W) maps of one image -> (T, T) Pearson correlations; NaN for a constant map."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (flat @ flat.T) / np.outer(norms, norms)


def class_sensitivity(maps: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Mean correlation of each class's map with the other classes' maps of the same image.

    Args:
        maps: (N, T, H, W) saliency (any numeric type).
        class_names: T names.

    Returns:
        One row per class (``class``, ``mean_correlation``, ``images``: images where the class's map
        is not constant) and a last row ``all``: the mean over every class pair of every image. With
        one class there is no pair: the correlations are NaN.
    """
    count = len(class_names)
    if maps.ndim != 4 or maps.shape[1] != count:
        raise ValueError(f"class_sensitivity needs (N, T, H, W) maps with T = {count} classes, got {maps.shape}")
    sums, seen, pair_values = np.zeros(count), np.zeros(count, np.int64), []
    upper = np.triu_indices(count, 1)
    for image_maps in maps:
        corr = pair_correlations(np.asarray(image_maps))
        off = np.where(np.eye(count, dtype=bool), np.nan, corr)
        with warnings.catch_warnings():  # a constant map has no correlation: its row is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            per_class = np.nanmean(off, axis=1)
        valid = np.isfinite(per_class)
        sums[valid] += per_class[valid]
        seen[valid] += 1
        pair_values += [v for v in corr[upper] if np.isfinite(v)]
    rows = [
        {"class": n, "mean_correlation": sums[t] / seen[t] if seen[t] else float("nan"), "images": int(seen[t])}
        for t, n in enumerate(class_names)
    ]
    rows.append(
        {
            "class": "all",
            "mean_correlation": float(np.mean(pair_values)) if pair_values else float("nan"),
            "images": len(maps),
        }
    )
    return pd.DataFrame(rows)
