"""Probability maps of a trained stage-1 model for the unlabelled and test splits.

Writes ``probs.npy``: (N, T, S, S) uint8, the sigmoid probability x 255 (rounded) for every image
of the chosen splits and every class, and ``probs.json``: sample ids, their splits, class names and
the model's provenance. Reads images and prompts only, never labels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo import atomic
from samdpo.train.model import PromptedSam
from samdpo.train.prompt_data import ImagePrompts
from samdpo.train.stage1 import make_batch

PROBS, PROBS_META = "probs.npy", "probs.json"


def predict_probabilities(
    model: PromptedSam,
    images: np.ndarray,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    device: torch.device,
    batch_images: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """(N, T, S, S) uint8 probabilities (x 255) of every class of every image."""
    model.eval().to(device)
    count, size = len(prompts), images.shape[-1]
    classes = len(prompts[0].vqa)
    out = np.zeros((count, classes, size, size), np.uint8)
    with torch.inference_mode():
        for start in tqdm(range(0, count, batch_images), desc="predict", unit="batch", disable=not progress):
            chosen = list(range(start, min(start + batch_images, count)))
            batch = make_batch([prompts[i] for i in chosen], [range(classes)] * len(chosen), texts, size).to(device)
            embeddings = model.embed_images(torch.from_numpy(np.asarray(images[chosen])).to(device))
            logits, _ = model(embeddings, batch)
            probs = torch.sigmoid(logits.float()).reshape(len(chosen), classes, size, size)
            out[chosen] = torch.round(probs * 255).to(torch.uint8).cpu().numpy()
    return out


def write_probabilities(folder: Path, probs: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write ``probs.npy`` and ``probs.json`` atomically."""
    with atomic.atomic_path(Path(folder) / PROBS) as tmp, open(tmp, "wb") as handle:
        np.save(handle, probs)
    atomic.write_text(Path(folder) / PROBS_META, json.dumps(dict(meta), indent=2, sort_keys=True) + "\n")
