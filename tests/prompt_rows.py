"""Prompt-store rows for tests: one row of a 32x32 image per class, and a prompt file holding a liver
and a spleen row (the fixture ``prompt_file``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from samdpo.prompts.store import SCHEMA

SIZE = 32
PEAK_XY = (20, 9)  # x (column), y (row) of the liver saliency maximum


def prompt_row(
    class_index: int,
    name: str,
    mask: np.ndarray,
    saliency: np.ndarray,
    box: list[float] | None,
    points: list,
    labels: list,
) -> dict:
    """One prompt-store row (sample ``case01_s005`` of AMOS) for class ``name``, with fixed VQA and LLM texts."""
    image = (np.arange(SIZE * SIZE) % 256).astype(np.uint8).reshape(SIZE, SIZE)
    return {
        "sample_id": "case01_s005",
        "dataset": "amos",
        "class_index": class_index,
        "class_name": name,
        "image": image.tobytes(),
        "image_shape": [SIZE, SIZE],
        "saliency": saliency.tobytes(),
        "saliency_shape": list(saliency.shape),
        "presence": None,
        "present": True,
        "has_box": box is not None,
        "box": box,
        "points": points,
        "point_labels": labels,
        "mask": np.packbits(mask).tobytes(),
        "mask_shape": list(mask.shape),
        "vqa": [
            {"question_id": "shape", "question": f"What shape is the {name}?", "answer": f"{name}-shaped oval"},
            {"question_id": "location", "question": f"Where is the {name}?", "answer": "upper right"},
        ],
        "modality": "CT",
        "llm_prompt": f"Describe the {name}.",
        "description": f"The {name} is a large organ " + "with a long description " * 10,
        "clip": "tiny-clip",
        "vqa_backend": "fake",
        "vqa_model": "fake-vqa",
        "llm_backend": "fake",
        "llm_model": "fake-llm",
        "visual_hash": "v" * 16,
        "vqa_hash": "q" * 16,
        "llm_hash": "l" * 16,
    }


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    """One prompt file: liver (a 100-pixel mask, a box, a positive and a negative point) and spleen (empty)."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[5:15, 16:26] = True  # 100 pixels
    saliency = np.zeros((SIZE, SIZE), dtype=np.uint8)
    saliency[5:15, 16:26] = 120
    saliency[PEAK_XY[1], PEAK_XY[0]] = 230
    liver = prompt_row(0, "liver", mask, saliency, [16.0, 5.0, 25.0, 14.0], [[20.0, 9.0], [2.0, 30.0]], [1, 0])
    spleen = prompt_row(
        1, "spleen", np.zeros((SIZE, SIZE), dtype=bool), np.full((16, 16), 40, dtype=np.uint8), None, [], []
    )
    meta = {"format_version": 1, "dataset": "amos", "sample_id": "case01_s005"}
    table = pa.Table.from_pylist([liver, spleen], schema=SCHEMA).replace_schema_metadata({"samdpo": json.dumps(meta)})
    path = tmp_path / "prompts" / "case01_s005.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    return path
