"""Stage-1 training data for tests: prompt files of two classes (liver, spleen) on 32x32 images, random
text embeddings, a small prompted SAM and the trainer's settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from samdpo.prompts.store import SCHEMA
from samdpo.sam.builders import build_sam
from samdpo.sam.prompted import PromptedSam, PromptSwitches
from samdpo.sam.settings import SamSettings
from samdpo.train.prompt_data import ImagePrompts, load_image_prompts
from samdpo.train.stage1 import Stage1Settings
from tests.prompt_rows import SIZE, prompt_row

CLASSES = ["liver", "spleen"]

SETTINGS = Stage1Settings(
    epochs=3, lr=1e-3, batch_images=2, train=("image_encoder", "prompt_encoder", "mask_decoder", "text_proj")
)


def write_prompts(folder: Path, sample_id: str, boxes: list, points: list | None = None) -> Path:
    """Write ``folder/<sample_id>.parquet``: one row per class of ``CLASSES`` with its box (or None) and a mask
    filling the box; ``points`` (all positive) default to one at (8, 8). Returns ``folder``."""
    rows = []
    for t, (name, box) in enumerate(zip(CLASSES, boxes)):
        mask = np.zeros((SIZE, SIZE), bool)
        if box is not None and all(np.isfinite(box)) and box[2] >= box[0] and box[3] >= box[1]:
            mask[max(int(box[1]), 0) : max(int(box[3]) + 1, 0), max(int(box[0]), 0) : max(int(box[2]) + 1, 0)] = True
        entry = prompt_row(
            t,
            name,
            mask,
            np.zeros((SIZE, SIZE), np.uint8),
            box,
            points or [[8.0, 8.0]],
            [1] * len(points or [[8.0, 8.0]]),
        )
        rows.append({**entry, "sample_id": sample_id})
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {"samdpo": json.dumps({"format_version": 1})}
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / f"{sample_id}.parquet")
    return folder


def small_model(switches: PromptSwitches = PromptSwitches(), seed: int = 0) -> PromptedSam:
    """A small prompted SAM (32x32 images, one encoder block, 8-dimensional text), initialised from ``seed``."""
    torch.manual_seed(seed)
    sam = build_sam(
        SamSettings(
            name="small", image_size=32, encoder_width=32, encoder_depth=1, encoder_heads=2, patch_size=8, prompt_dim=16
        )
    )
    return PromptedSam(sam, text_dim=8, switches=switches)


def text_vectors(prompts: list[ImagePrompts]) -> dict[str, np.ndarray]:
    """A random (seeded) 8-dimensional embedding for every VQA and LLM text of ``prompts``."""
    rng = np.random.default_rng(0)
    return {text: rng.normal(size=8).astype(np.float32) for image in prompts for text in (*image.vqa, *image.llm)}


def training_data(
    tmp_path: Path, count: int = 4
) -> tuple[np.ndarray, np.ndarray, list[ImagePrompts], dict[str, np.ndarray]]:
    """``count`` images with their label maps (liver everywhere, spleen on every other image), prompts (written
    under ``tmp_path/p``) and text embeddings."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(count, SIZE, SIZE), dtype=np.uint8)
    labels = np.zeros((count, SIZE, SIZE), np.uint8)
    labels[:, 5:13, 4:11] = 1
    labels[::2, 20:28, 18:30] = 2
    images[labels == 1] = 220
    ids = [f"s{i}" for i in range(count)]
    prompts = [
        load_image_prompts(
            write_prompts(tmp_path / "p", s, [[4.0, 5.0, 10.0, 12.0], [18.0, 20.0, 29.0, 27.0]]), s, CLASSES
        )
        for s in ids
    ]
    return images, labels, prompts, text_vectors(prompts)
