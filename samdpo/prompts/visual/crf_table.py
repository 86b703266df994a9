"""Visual prompts of a dataset: saliency maps -> dense-CRF masks -> boxes and points, as one table.

The table (``crf.parquet``) has one row per (image, class): ``sample_id``, ``class_index``,
``class_name``, ``has_box``, ``box`` (XYXY pixels, inclusive maxima; null = "no box"),
``points`` (list of [x, y]), ``point_labels`` (1 = foreground, 0 = background), ``mask``
(``np.packbits`` of the kept CRF components, row-major) and ``mask_shape`` ([H, W]).
Saliency files (``saliency.npy`` + ``saliency.json``) are written by the saliency rule; this step
reads them and the images only, and, when given, the anatomical prior fitted on the labelled split
(:mod:`samdpo.prompts.visual.anatomy`), which multiplies each saliency map before the CRF.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from samdpo.prompts.visual.anatomy import AnatomyPrior
from samdpo.prompts.visual.boxes import BoxSettings, mask_to_prompt
from samdpo.prompts.visual.crf import CrfSettings, crf_mask
from samdpo.prompts.visual.saliency_files import weighted_saliency

CRF_TABLE = "crf.parquet"


def _image_rows(
    sample_id: str,
    image: np.ndarray,
    maps: np.ndarray,
    class_names: list[str],
    crf: CrfSettings,
    boxes: Mapping[str, BoxSettings],
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
    jobs = [
        (sample_ids[i], images[i], np.asarray(maps[i]), class_names, crf, boxes, prior) for i in range(len(sample_ids))
    ]
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
