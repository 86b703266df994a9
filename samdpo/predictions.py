"""Probability maps on disk: ``probs.npy`` (N, T, S, S) uint8 (probability x 255) + ``probs.json``.

Written by every prediction (stage 1, stage 2, the U-Net, the zero-shot rows), read by candidates,
evaluation and the report; numpy only. The metadata names the sample ids, their splits, the splits
predicted, the classes, the model folder and its settings hash; :func:`align_predictions` maps the
rows onto a sample store after checking both describe the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.class_maps import read_arrays, write_arrays
from samdpo.data.splits import read_splits
from samdpo.errors import DataError

PROBS = "probs"


def write_predictions(
    out: Path,
    store: Any,
    indices: Sequence[int],
    splits_path: Path,
    predicted: Sequence[str],
    model: Path,
    settings_hash: str,
    fill: Callable[[np.ndarray], object],
) -> None:
    """Write the probabilities of the store's ``indices`` (filled by ``fill``) with their metadata:
    sample ids and splits, the splits predicted, classes, the model folder and its settings hash."""
    images = store.images()
    shape = (len(indices), len(store.class_names), *images.shape[1:])
    ids, cases = list(store.samples["sample_id"]), store.samples["case_id"]
    splits = read_splits(Path(splits_path))
    meta = {
        "dataset": store.kind,
        "sample_ids": [ids[i] for i in indices],
        "sample_splits": [splits[cases[i]] for i in indices],
        "splits": list(predicted),
        "class_names": list(store.class_names),
        "model": str(model),
        "model_settings_hash": settings_hash,
    }
    write_arrays(Path(out), PROBS, shape, fill, meta)


def read_predictions(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The (N, T, S, S) uint8 probabilities (memory-mapped) and metadata a prediction rule wrote.

    Raises:
        DataError: files missing or unreadable, or metadata lacking keys.
    """
    probs, meta = read_arrays(Path(folder), PROBS, "prediction")
    if probs.ndim != 4:
        raise DataError(f"{folder}: {PROBS}.npy has shape {probs.shape}, not (N, T, S, S)")
    return probs, meta


def align_predictions(
    meta: Mapping[str, Any],
    store_sample_ids: Sequence[str],
    store_class_names: Sequence[str],
    store_kind: str | None = None,
) -> np.ndarray:
    """Store row of every prediction (in ``probs.json`` order), after checking both describe the same data.

    Args:
        meta: ``probs.json`` contents (``sample_ids``, ``class_names``, optionally ``dataset``).
        store_sample_ids: the store's ``sample_id`` column.
        store_class_names: the store's class names.
        store_kind: the store's dataset kind, checked against ``meta["dataset"]`` when both are given.

    Returns:
        (N,) int64 indices into the store, one per predicted image.

    Raises:
        DataError: class names differ, dataset differs, sample ids unknown to the store or repeated.
    """
    predicted_names, names = list(meta["class_names"]), list(store_class_names)
    if predicted_names != names:
        raise DataError(
            f"the predictions' class names {predicted_names} differ from the store's {names} (another dataset?)"
        )
    if store_kind is not None and meta.get("dataset") not in (None, store_kind):
        raise DataError(f"the predictions are of dataset {meta['dataset']!r} but the store holds {store_kind!r}")
    position = {sample_id: i for i, sample_id in enumerate(store_sample_ids)}
    ids = list(meta["sample_ids"])
    unknown = [s for s in ids if s not in position]
    if unknown:
        raise DataError(
            f"{len(unknown)} predicted sample ids are not in the store (e.g. {unknown[:3]}); was it prepared again "
            "since?"
        )
    if len(set(ids)) != len(ids):
        raise DataError("the predictions list some sample ids more than once")
    return np.array([position[s] for s in ids], dtype=np.int64)
