"""Probability maps of a trained stage-1 model for the unlabelled and test splits.

Writes ``probs.npy``: (N, T, S, S) uint8, the sigmoid probability x 255 (rounded) for every image
of the chosen splits and every class, and ``probs.json``: sample ids, their splits, class names and
the model's provenance. Reads images and prompts only, never labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo.arrays import write_arrays
from samdpo.train.image_embeddings import EmbeddingRows
from samdpo.train.model import PromptedSam
from samdpo.train.prompt_data import ImagePrompts
from samdpo.train.stage1 import make_batch

PROBS = "probs"


def predict_probabilities(
    model: PromptedSam,
    images: np.ndarray,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    device: torch.device,
    out: np.ndarray,
    point_count: int,
    batch_images: int = 8,
    progress: bool = True,
    embeddings: EmbeddingRows | None = None,
    classes: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Fill ``out``, (N, T, S, S) uint8 (e.g. a memory map), with the probabilities x 255 of every class of every image.

    ``embeddings``: the frozen encoder's embeddings of ``images`` (read instead of running the encoder).
    ``classes``: per image, the only classes to predict (the others' rows of ``out`` are left as they are).
    """
    model.eval().to(device)
    count, size = len(prompts), images.shape[-1]
    wanted = [list(range(out.shape[1]))] * count if classes is None else [sorted(c) for c in classes]
    with torch.inference_mode():
        for start in tqdm(range(0, count, batch_images), desc="predict", unit="batch", disable=not progress):
            chosen = [i for i in range(start, min(start + batch_images, count)) if wanted[i]]
            if not chosen:
                continue
            batch = make_batch([prompts[i] for i in chosen], [wanted[i] for i in chosen], texts, size, point_count).to(device)
            if embeddings is None:
                embedded = model.embed_images(torch.from_numpy(np.asarray(images[chosen])).to(device))
            else:
                embedded = embeddings.take(chosen, device)
            logits, _ = model(embedded, batch)
            probs = torch.round(torch.sigmoid(logits.float()) * 255).to(torch.uint8).cpu().numpy()
            rows = [(i, t) for i in chosen for t in wanted[i]]
            for (i, t), prob in zip(rows, probs):
                out[i, t] = prob
    return out


def write_predictions(
    out: Path, store: Any, indices: Sequence[int], splits_path: Path, predicted: Sequence[str], model: Path, settings_hash: str,
    fill: Callable[[np.ndarray], object],
) -> None:
    """Write the probabilities of the store's ``indices`` (filled by ``fill``) with their metadata:
    sample ids and splits, the splits predicted, classes, the model folder and its settings hash."""
    from samdpo.data.splits import read_splits

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
