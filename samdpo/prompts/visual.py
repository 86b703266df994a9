"""Visual prompts of a dataset: saliency maps -> dense-CRF masks -> boxes and points, as one table.

The table (``crf.parquet``) has one row per (image, class): ``sample_id``, ``class_index``,
``class_name``, ``has_box``, ``box`` (XYXY pixels, inclusive maxima; null = "no box"),
``points`` (list of [x, y]), ``point_labels`` (1 = foreground, 0 = background), ``mask``
(``np.packbits`` of the kept CRF components, row-major) and ``mask_shape`` ([H, W]).
Saliency files (``saliency.npy`` + ``saliency.json``) are written by the saliency rule; this step
reads them and the images only, and, when given, the anatomical prior fitted on the labelled split
(:mod:`samdpo.prompts.anatomy`), which multiplies each saliency map before the CRF.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from samdpo import atomic
from samdpo.arrays import read_arrays, write_arrays
from samdpo.prompts.anatomy import AnatomyPrior
from samdpo.prompts.boxes import BoxSettings, mask_to_prompt
from samdpo.prompts.crf import CrfSettings, crf_mask
from samdpo.errors import DataError

SALIENCY, CRF_TABLE = "saliency", "crf.parquet"


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


def _image_rows(
    sample_id: str, image: np.ndarray, maps: np.ndarray, class_names: list[str], crf: CrfSettings, boxes: Mapping[str, BoxSettings],
    prior: AnatomyPrior | None,
) -> list[dict]:
    """Table rows of one image: (prior x) saliency -> CRF -> box extraction for each of its T maps."""
    pixels = image.astype(np.float32) / 255.0
    priors = prior.image_maps(image) if prior is not None else None
    rows = []
    for t, name in enumerate(class_names):
        saliency = maps[t].astype(np.float32) / 255.0
        if priors is not None:
            saliency = weighted_saliency(saliency, priors[t], prior.settings.saliency_power)
        prompt = mask_to_prompt(crf_mask(pixels, saliency, crf), saliency, boxes[name])
        rows.append(
            {
                "sample_id": sample_id,
                "class_index": t,
                "class_name": name,
                "has_box": prompt.has_box,
                "box": list(prompt.box) if prompt.box is not None else None,
                "points": prompt.points.tolist(),
                "point_labels": prompt.point_labels.tolist(),
                "mask": np.packbits(prompt.mask).tobytes(),
                "mask_shape": list(prompt.mask.shape),
            }
        )
    return rows


SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("class_index", pa.int16()),
        ("class_name", pa.string()),
        ("has_box", pa.bool_()),
        ("box", pa.list_(pa.float32(), 4)),
        ("points", pa.list_(pa.list_(pa.float32(), 2))),
        ("point_labels", pa.list_(pa.int8())),
        ("mask", pa.binary()),
        ("mask_shape", pa.list_(pa.int32(), 2)),
    ]
)


def crf_table(
    images: np.ndarray,
    maps: np.ndarray,
    sample_ids: list[str],
    class_names: list[str],
    crf: CrfSettings,
    boxes: Mapping[str, BoxSettings],
    prior: AnatomyPrior | None = None,
    workers: int = 1,
    progress: bool = True,
) -> pa.Table:
    """Run the CRF and box extraction for every (image, class).

    Args:
        images: (N, S, S) uint8 images.
        maps: (N, T, S, S) uint8 saliency (x 255).
        sample_ids: N ids; class_names: T names.
        crf: CRF settings.
        boxes: class name -> box settings (``all`` mode for paired organs such as lungs).
        prior: the anatomical prior (its classes in ``class_names`` order), or None for saliency alone.
        workers: processes (the CRF is single-threaded C++; images are independent).
        progress: show a progress bar.

    Returns:
        The prompt table (:data:`SCHEMA`), rows in image order then class order.
    """
    jobs = [(sample_ids[i], images[i], np.asarray(maps[i]), class_names, crf, boxes, prior) for i in range(len(sample_ids))]
    bar = tqdm(total=len(jobs), desc="crf", unit="image", disable=not progress)
    rows: list[dict] = []
    if workers <= 1:
        for job in jobs:
            rows += _image_rows(*job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_image_rows, *zip(*jobs), chunksize=8):
                rows += result
                bar.update()
    bar.close()
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_table(table: pa.Table, path: Path, meta: Mapping) -> None:
    """Write a prompt table atomically with ``meta`` (settings, provenance) in its schema metadata."""
    table = table.replace_schema_metadata({"samdpo": json.dumps(dict(meta), sort_keys=True)})
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def unpack_mask(row: Mapping) -> np.ndarray:
    """The (H, W) bool mask of one table row (a blob of another length than ceil(H * W / 8) bytes is an error)."""
    height, width = row["mask_shape"]
    check_blob(row, "mask")
    return np.unpackbits(np.frombuffer(row["mask"], dtype=np.uint8), count=height * width).reshape(height, width).astype(bool)


def blob_bytes(column: str, shape: tuple[int, int]) -> int:
    """Bytes of a stored (H, W) array: H * W for ``image`` / ``saliency``, ceil(H * W / 8) bit-packed for ``mask``."""
    height, width = shape
    return -(-height * width // 8) if column == "mask" else height * width


def check_blob(row: Mapping, column: str) -> None:
    """Fail unless the row's ``column`` blob holds the bytes its shape needs (a truncated or padded file)."""
    found, expected = len(row[column] or b""), blob_bytes(column, row[f"{column}_shape"])
    if found != expected:
        where = f"sample {row.get('sample_id')}, class {row.get('class_name')}"
        raise DataError(f"{where}: the {column} column holds {found} bytes where its shape {list(row[f'{column}_shape'])} needs {expected}; the file is damaged, rerun the rule that wrote it")
