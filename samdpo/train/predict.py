"""Probability maps of a trained stage-1 model for the unlabelled and test splits.

Writes ``probs.npy``: (N, T, S, S) uint8, the sigmoid probability x 255 (rounded) for every image
of the chosen splits and every class, and ``probs.json``: sample ids, their splits, class names and
the model's provenance. Reads images and prompts only, never labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptedSam
from samdpo.train.batches import make_batch
from samdpo.train.prompt_data import ImagePrompts


def present_classes(labels: np.ndarray, class_count: int) -> list[list[int]]:
    """Per (S, S) label map of ``labels`` (N, S, S), the class indices (label - 1) it holds: the only classes
    evaluation scores, so the only ones an evaluating caller needs predicted (``classes`` below)."""
    return [[t for t in range(class_count) if (np.asarray(label) == t + 1).any()] for label in labels]


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
            batch = make_batch([prompts[i] for i in chosen], [wanted[i] for i in chosen], texts, size, point_count).to(
                device
            )
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
