"""Per-(image, class) arrays on disk: ``{stem}.npy`` of shape (N, T, ...) beside ``{stem}.json``.

The saliency maps, the stage-1 / aligned / U-Net probabilities and the candidate levels all take
this form: the metadata names the N sample ids and the T class names (plus provenance). The array
is written through a memory map (nothing of size N x T x S x S need fit in memory) and appears
under its final name only when complete; the metadata follows it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from samdpo import atomic
from samdpo.errors import DataError


def write_arrays(
    folder: Path, stem: str, shape: tuple[int, ...], fill: Callable[[np.ndarray], object], meta: Mapping[str, Any]
) -> None:
    """Write ``{stem}.npy`` (uint8, ``shape``) filled in place by ``fill(memmap)``, then ``{stem}.json``, each
    atomically."""
    with atomic.atomic_path(Path(folder) / f"{stem}.npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        fill(array)
        array.flush()
        del array
    atomic.write_text(Path(folder) / f"{stem}.json", json.dumps(dict(meta), indent=2, sort_keys=True) + "\n")


def read_arrays(folder: Path, stem: str, rule: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The (N, T, ...) array (memory-mapped) and its metadata; a DataError naming ``rule`` when they are
    missing, unreadable or disagree (N sample ids, T class names)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / f"{stem}.json").read_text())
        array = np.load(folder / f"{stem}.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder}: no readable {stem} ({exc}); run the {rule} rule first") from exc
    missing = [key for key in ("sample_ids", "class_names") if key not in meta]
    if missing:
        raise DataError(f"{folder / f'{stem}.json'}: lacks {missing}")
    if array.ndim < 2 or array.shape[:2] != (len(meta["sample_ids"]), len(meta["class_names"])):
        raise DataError(
            f"{folder / f'{stem}.npy'}: shape {array.shape} does not match the {len(meta['sample_ids'])} sample ids "
            f"x {len(meta['class_names'])} classes of {stem}.json"
        )
    return array, meta
