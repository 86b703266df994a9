"""A finished run's grading inputs for tests: a prompt store (image, class rows, boxes) and candidates of
``images`` x 2 classes whose four masks differ, plus a few pairs whose candidates are all the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from samdpo.align.candidates import CandidateSettings, pack_masks, threshold_masks, write_candidates
from samdpo.prompts.store import SCHEMA
from tests.prompt_rows import SIZE, prompt_row

CLASSES = ["liver", "spleen"]
THRESHOLDS = [0.3, 0.4, 0.5, 0.6]


def grading_run(
    root: Path, images: int = 3, seed: int = 0, ids: list[str] | None = None, classes: list[str] = CLASSES
) -> tuple[Path, Path]:
    """Write ``root/prompts`` and ``root/candidates`` of AMOS-like ``classes``; returns both folders. Image ``i`` is
    ``ids[i]`` (default ``case{i:03d}``); its second class's candidates are all empty on every third image (not
    shown to a person)."""
    rng = np.random.default_rng(seed)
    ids = ids or [f"case{i:03d}" for i in range(images)]
    prompts = root / "prompts"
    prompts.mkdir(parents=True)
    probs = np.zeros((len(ids), len(classes), SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for n, sample in enumerate(ids):
        rows = []
        for t, name in enumerate(classes):
            cy, cx = rng.integers(8, SIZE - 8, size=2)
            if not (t == 1 and n % 3 == 0):
                probs[n, t] = np.clip(255 - 12 * np.hypot(yy - cy, xx - cx), 0, 255).astype(np.uint8)
            box = [float(cx - 6), float(cy - 6), float(cx + 6), float(cy + 6)]
            row = prompt_row(t, name, np.zeros((SIZE, SIZE), bool), np.zeros((SIZE, SIZE), np.uint8), box, [], [])
            rows.append(row | {"sample_id": sample})
        meta = {"format_version": 1, "dataset": "amos", "sample_id": sample}
        table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata({"samdpo": json.dumps(meta)})
        pq.write_table(table, prompts / f"{sample}.parquet")
    candidates = root / "candidates"
    meta = {
        "dataset": "amos",
        "sample_ids": ids,
        "class_names": classes,
        "count": len(THRESHOLDS),
        "size": SIZE,
        "candidates": CandidateSettings(thresholds=THRESHOLDS).describe(),  # the paper's candidates
        "chosen_from": {"thresholds": len(ids) * len(classes) * len(THRESHOLDS)},
        "model": "stage1/prompt_10",
        "model_settings_hash": "abc123",
    }
    write_candidates(candidates, pack_masks(threshold_masks(probs, THRESHOLDS)), meta)
    return prompts, candidates
