"""The Parquet prompt store: every prompt of one 2D image in ``prompts_cache/{dataset}/{image_id}.parquet``.

One file per image, one row per class, merged from the outputs of the saliency, CRF, VQA and LLM
steps (see the README for the schema). Arrays are stored compactly as raw bytes plus a shape:
the image and the saliency as uint8 (saliency x 255), the CRF mask bit-packed. Each row carries
its provenance (CLIP, VQA and LLM backends and models, a hash of the settings of each part);
the full settings are written once per folder, in ``_settings.json``. No ground truth is read or stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from samdpo import atomic
from samdpo.errors import DataError
from samdpo.prompts.tables import check_blob, unpack_mask

FORMAT_VERSION = 2
#: The full settings of every part, once per dataset folder (each row carries their hashes).
SETTINGS_FILE = "_settings.json"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_QA = pa.struct([("question_id", pa.string()), ("question", pa.string()), ("answer", pa.string())])

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("dataset", pa.string()),
        ("class_index", pa.int16()),
        ("class_name", pa.string()),
        ("image", pa.binary()),
        ("image_shape", pa.list_(pa.int32(), 2)),
        ("saliency", pa.binary()),
        ("saliency_shape", pa.list_(pa.int32(), 2)),
        ("presence", pa.float32()),
        ("present", pa.bool_()),
        ("has_box", pa.bool_()),
        ("box", pa.list_(pa.float32(), 4)),
        ("points", pa.list_(pa.list_(pa.float32(), 2))),
        ("point_labels", pa.list_(pa.int8())),
        ("mask", pa.binary()),
        ("mask_shape", pa.list_(pa.int32(), 2)),
        ("vqa", pa.list_(_QA)),
        ("modality", pa.string()),
        ("llm_prompt", pa.string()),
        ("description", pa.string()),
        ("clip", pa.string()),
        ("vqa_backend", pa.string()),
        ("vqa_model", pa.string()),
        ("llm_backend", pa.string()),
        ("llm_model", pa.string()),
        ("visual_hash", pa.string()),
        ("vqa_hash", pa.string()),
        ("llm_hash", pa.string()),
    ]
)


@dataclass(frozen=True)
class PresenceGate:
    """Presence of every (image, class) of a merge (:mod:`samdpo.prompts.visual.presence`).

    Attributes:
        probability: (N, T) float32 probability that the class is on the image.
        present: (N, T) bool decision; an absent class's row keeps no box and no points.
        info: the fitted signal's file contents (settings, provenance), recorded in ``_settings.json``.
    """

    probability: np.ndarray
    present: np.ndarray
    info: Mapping[str, Any]


@dataclass(frozen=True)
class StoreReport:
    """What a merge wrote: images (files), rows and bytes on disk."""

    images: int
    rows: int
    bytes: int


def table_meta(path: Path) -> dict[str, Any]:
    """The ``samdpo`` schema metadata (settings, provenance) of a Parquet file written by samdpo."""
    try:
        return json.loads(pq.read_schema(path).metadata[b"samdpo"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a samdpo Parquet file with provenance ({exc})") from exc


def _read(path: Path, step: str) -> tuple[pa.Table, dict[str, Any]]:
    if not Path(path).is_file():
        raise DataError(f"{path}: missing; run the {step} rule first")
    return pq.read_table(path), table_meta(Path(path))


def _check_same(name: str, path: Path, found: list, expected: list) -> None:
    if found != expected:
        raise DataError(f"{path}: {name} do not match the sample store's; rerun the rule that wrote it")


def resample(saliency: np.ndarray, size: int | None) -> np.ndarray:
    """A (H, W) uint8 map resampled (bilinear) to (size, size); unchanged when size is None or equal."""
    if size is None or saliency.shape == (size, size):
        return np.ascontiguousarray(saliency, dtype=np.uint8)
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(saliency, dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    )


@dataclass(frozen=True)
class _StepTables:
    """What the merge reads besides the images and maps: the CRF rows (image-major, one per
    (image, class)), VQA answers per (sample id, class index), the T LLM rows, and metadata."""

    crf_rows: list[dict[str, Any]]
    answers: dict[tuple[str, int], list[dict[str, Any]]]
    llm_rows: list[dict[str, Any]]
    saliency_meta: Mapping[str, Any]
    crf_meta: dict[str, Any]
    vqa_meta: dict[str, Any]
    llm_meta: dict[str, Any]


def _answers(vqa: pa.Table, pairs: list[dict[str, Any]], vqa_path: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The VQA answers of every (sample id, class index) pair, in table order; each pair must have some."""
    answers: dict[tuple[str, int], list[dict]] = {}
    for row in vqa.to_pylist():
        answers.setdefault((row["sample_id"], row["class_index"]), []).append(
            {"question_id": row["question_id"], "question": row["question"], "answer": row["answer"]}
        )
    missing = [(p["sample_id"], p["class_index"]) for p in pairs if (p["sample_id"], p["class_index"]) not in answers]
    if missing:
        raise DataError(
            f"{vqa_path}: no answers for {len(missing)} (image, class) pairs, e.g. {missing[0]}; rerun the vqa rule"
        )
    return answers


def _read_steps(
    sample_ids: list[str],
    class_names: list[str],
    saliency_meta: Mapping[str, Any],
    crf_path: Path,
    vqa_path: Path,
    llm_path: Path,
) -> _StepTables:
    """Read the CRF, VQA and LLM tables and check that they (and the saliency) describe these samples and classes.

    Raises:
        DataError: a table is missing or describes other samples or classes, or a sample id is not a safe file name.
    """
    crf, crf_meta = _read(crf_path, "crf")
    vqa, vqa_meta = _read(vqa_path, "vqa")
    llm, llm_meta = _read(llm_path, "llm")
    _check_same("sample ids", Path("saliency.json"), list(saliency_meta["sample_ids"]), sample_ids)
    _check_same("classes", Path("saliency.json"), list(saliency_meta["class_names"]), class_names)
    pairs = [{"sample_id": s, "class_index": t} for s in sample_ids for t in range(len(class_names))]
    _check_same("rows", crf_path, crf.select(["sample_id", "class_index"]).to_pylist(), pairs)
    _check_same("classes", llm_path, llm.column("class_name").to_pylist(), class_names)
    bad = [s for s in sample_ids if not _SAFE_ID.match(s)]
    if bad:
        raise DataError(f"sample ids {bad[:3]} cannot be file names (letters, digits, _ . - only)")
    answers = _answers(vqa, pairs, vqa_path)
    return _StepTables(crf.to_pylist(), answers, llm.to_pylist(), saliency_meta, crf_meta, vqa_meta, llm_meta)


def _provenance(steps: _StepTables) -> dict[str, str]:
    """The provenance columns every row carries: backends, models and settings hashes of the steps."""
    return {
        "clip": str(steps.saliency_meta["clip"]),
        "vqa_backend": steps.vqa_meta["backend"],
        "vqa_model": steps.vqa_meta["model"],
        "llm_backend": steps.llm_meta["backend"],
        "llm_model": steps.llm_meta["model"],
        "visual_hash": steps.crf_meta["settings_hash"],
        "vqa_hash": steps.vqa_meta["settings_hash"],
        "llm_hash": steps.llm_meta["settings_hash"],
    }


def _folder_settings(dataset: str, steps: _StepTables, presence: PresenceGate | None) -> dict[str, Any]:
    """The full settings of every step, written once per folder (:data:`SETTINGS_FILE`)."""
    saliency_keys = ("clip", "class_prompts", "negative_prompts", "settings", "settings_hash")
    gate_keys = ("settings", "threshold", "settings_hash", "dataset")
    gate = None if presence is None else {k: presence.info.get(k) for k in gate_keys}
    return {
        "presence": gate,
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "saliency": {k: steps.saliency_meta[k] for k in saliency_keys},
        "crf": steps.crf_meta,
        "vqa": steps.vqa_meta,
        "llm": steps.llm_meta,
    }


def _image_rows(
    i: int,
    sample_id: str,
    image: np.ndarray,
    maps: np.ndarray,
    class_names: list[str],
    dataset: str,
    steps: _StepTables,
    provenance: Mapping[str, str],
    saliency_size: int | None,
    presence: PresenceGate | None,
) -> list[dict[str, Any]]:
    """The T rows (one per class) of image ``i``: (S, S) uint8 ``image``, its (T, S, S) uint8 saliency ``maps``;
    a class that ``presence`` says is absent keeps its CRF mask but no box and no points."""
    rows = []
    for t, name in enumerate(class_names):
        visual = dict(steps.crf_rows[i * len(class_names) + t])
        present = True if presence is None else bool(presence.present[i, t])
        if not present:
            visual.update(has_box=False, box=None, points=[], point_labels=[])
        saliency_map = resample(np.asarray(maps[t]), saliency_size)
        rows.append(
            {
                "sample_id": sample_id,
                "dataset": dataset,
                "class_index": t,
                "class_name": name,
                "image": image.tobytes(),
                "image_shape": list(image.shape),
                "saliency": saliency_map.tobytes(),
                "saliency_shape": list(saliency_map.shape),
                "presence": None if presence is None else float(presence.probability[i, t]),
                "present": present,
                **{k: visual[k] for k in ("has_box", "box", "points", "point_labels", "mask", "mask_shape")},
                "vqa": steps.answers[(sample_id, t)],
                "modality": steps.llm_rows[t]["modality"],
                "llm_prompt": steps.llm_rows[t]["prompt"],
                "description": steps.llm_rows[t]["description"],
                **provenance,
            }
        )
    return rows


def _write_image_file(path: Path, rows: list[dict[str, Any]], header: Mapping[str, Any], sample_id: str) -> int:
    """Write one image's rows as the Parquet file ``path``; its size in bytes."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {"samdpo": json.dumps({**header, "sample_id": sample_id}, sort_keys=True)}
    )
    # No column statistics: min/max of the image and saliency bytes would double the footer.
    pq.write_table(table, path, compression="zstd", compression_level=9, write_statistics=False)
    return path.stat().st_size


def merge_prompt_store(
    images: np.ndarray,
    sample_ids: list[str],
    class_names: list[str],
    dataset: str,
    saliency: tuple[np.ndarray, Mapping[str, Any]],
    crf_path: Path,
    vqa_path: Path,
    llm_path: Path,
    out: Path,
    saliency_size: int | None = None,
    progress: bool = True,
    presence: PresenceGate | None = None,
) -> StoreReport:
    """Write one Parquet file per image into ``out`` (atomically: the folder appears complete).

    Args:
        images: (N, S, S) uint8 images of the sample store.
        sample_ids: N ids (file names); class_names: T names.
        dataset: dataset kind.
        saliency: (N, T, S, S) uint8 maps and their metadata, from the saliency step.
        crf_path, vqa_path, llm_path: tables of the CRF, VQA and LLM steps.
        out: folder to write (replaced when complete).
        saliency_size: side of the stored saliency grid, pixels (bilinear resampling; the CAM's own
            resolution is far coarser than the image); None = as computed.
        progress: show a progress bar.
        presence: (N, T) presence of every pair; None: every class present (``presence`` null).

    Raises:
        DataError: a step's table is missing or describes other samples or classes.
    """
    maps, saliency_meta = saliency
    steps = _read_steps(sample_ids, class_names, saliency_meta, crf_path, vqa_path, llm_path)
    provenance = _provenance(steps)
    header = {"format_version": FORMAT_VERSION, "dataset": dataset, "settings_file": SETTINGS_FILE}
    size = 0
    with atomic.atomic_dir(out) as tmp:
        atomic.write_text(
            tmp / SETTINGS_FILE, json.dumps(_folder_settings(dataset, steps, presence), indent=2, sort_keys=True) + "\n"
        )
        for i, sample_id in enumerate(
            tqdm(sample_ids, desc=f"prompt store {dataset}", unit="image", disable=not progress)
        ):
            image = np.ascontiguousarray(images[i])
            rows = _image_rows(
                i, sample_id, image, maps[i], class_names, dataset, steps, provenance, saliency_size, presence
            )
            size += _write_image_file(tmp / f"{sample_id}.parquet", rows, header, sample_id)
    return StoreReport(images=len(sample_ids), rows=len(sample_ids) * len(class_names), bytes=size)


def read_prompts(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of one image's prompt file (one per class) and its metadata, with the folder's
    full settings under ``"settings"`` when ``_settings.json`` is beside it."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    if not set(SCHEMA.names) <= set(table.column_names):
        raise DataError(
            f"{path}: not a samdpo prompt file (columns {sorted(set(SCHEMA.names) - set(table.column_names))[:4]} "
            "missing)"
        )
    meta = table_meta(path)
    settings = path.parent / meta.get("settings_file", SETTINGS_FILE)
    if settings.is_file():
        try:
            meta["settings"] = json.loads(settings.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{settings}: unreadable prompt settings ({exc}); rerun the prompt_store rule") from exc
    return table.to_pylist(), meta


def array(row: Mapping[str, Any], column: str) -> np.ndarray:
    """Decode a stored array: ``image`` / ``saliency`` -> (H, W) uint8, ``mask`` -> (H, W) bool."""
    if column == "mask":
        return unpack_mask(row)
    height, width = row[f"{column}_shape"]
    check_blob(row, column)
    return np.frombuffer(row[column], dtype=np.uint8).reshape(height, width)
