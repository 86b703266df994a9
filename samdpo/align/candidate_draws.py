"""The model sources of the candidates: the stage-1 model run again on the unlabelled images with
its prompts perturbed (``perturb``) or dropout on the image embedding (``dropout``).

Only the images, their human-free prompts and the frozen model enter here: no label of any image.
With grad off on the CPU the decoder runs through the inference engine (``sam.engine``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from samdpo.align.candidates import CandidateSettings
from samdpo.align.frozen_passes import each_image
from samdpo.align.uncertainty import jitter_boxes
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptBatch, PromptedSam
from samdpo.train.prompt_data import ImagePrompts


def perturb_prompts(batch: PromptBatch, jitter: float, rng: np.random.Generator) -> PromptBatch:
    """``batch`` with every box side moved (:func:`~samdpo.align.uncertainty.jitter_boxes`) and every point
    moved by up to ``jitter`` x its box's width / height (uniform), clipped to the image."""
    moved = jitter_boxes(batch, jitter, rng)
    boxes = batch.boxes.numpy().astype(np.float64)
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) + 1.0
    points = batch.points.numpy().astype(np.float64)
    shifted = points + rng.uniform(-jitter, jitter, size=points.shape) * sides[:, None, :]
    shifted = np.clip(shifted, 0, batch.size - 1).astype(np.float32)
    return PromptBatch(**{**vars(moved), "points": torch.from_numpy(shifted)})


def draw_count(settings: CandidateSettings) -> int:
    """D masks per (image, class) that :func:`draw_masks` returns."""
    return settings.draws * sum(source in ("perturb", "dropout") for source in settings.source)


def draw_masks(
    model: PromptedSam,
    embeddings: EmbeddingRows | None,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    class_count: int,
    size: int,
    point_count: int,
    settings: CandidateSettings,
    device: torch.device,
    progress: bool = True,
    images: np.ndarray | None = None,
) -> np.ndarray:
    """(N, T, D, S, S) bool masks (probability >= 0.5) of N images: ``perturb``'s draws, then ``dropout``'s.

    Args:
        embeddings: the frozen encoder's embeddings in ``prompts``' order, or None to encode
            the (N, S, S) uint8 ``images`` here (a model whose encoder trained).
    """
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    out = np.zeros((len(prompts), class_count, draw_count(settings), size, size), bool)
    passes = each_image(
        model, embeddings, images, prompts, texts, class_count, size, point_count, device, "candidate draws", progress
    )
    for n, embedded, batch in passes:
        d = 0
        if "perturb" in settings.source:
            for _ in range(settings.draws):
                logits, _ = model(embedded, perturb_prompts(batch, settings.jitter, rng).to(device))
                out[n, :, d] = (logits.float() >= 0).cpu().numpy()
                d += 1
        if "dropout" in settings.source:
            for _ in range(settings.draws):
                keep = torch.rand(embedded.shape, generator=generator) >= settings.dropout
                dropped = embedded * keep.to(embedded) / (1.0 - settings.dropout)
                logits, _ = model(dropped, batch.to(device))
                out[n, :, d] = (logits.float() >= 0).cpu().numpy()
                d += 1
        out[n, ~prompts[n].present] = False  # a class absent by the presence signal is never drawn
    return out
