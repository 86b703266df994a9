"""An annotator reference that needs no ground truth: the model's own consensus under test-time augmentation.

The stage-1 model predicts every (image, class) of the unlabelled images again with its box prompt
jittered ``augmentations`` times (each side moved by up to ``jitter`` x the box's side, seeded);
the mean of those probabilities, cut at 0.5, is the consensus mask. A candidate that agrees with
what the model predicts under small prompt changes wins; one that depends on the exact box loses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from samdpo.align.frozen_passes import each_image
from samdpo.errors import ConfigError
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptBatch, PromptedSam
from samdpo.train.prompt_data import ImagePrompts


@dataclass(frozen=True)
class UncertaintySettings:
    """Test-time augmentation of the uncertainty annotator.

    Attributes:
        augmentations: jittered predictions averaged per (image, class), >= 2.
        jitter: bound of each box side's shift, as a share of the box's width or height.
        seed: draws of the shifts.
    """

    augmentations: int = 4
    jitter: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.augmentations < 2 or not 0.0 < self.jitter <= 0.5:
            raise ConfigError(
                f"align.uncertainty: augmentations must be >= 2 and jitter in (0, 0.5], got {self.augmentations}, "
                f"{self.jitter}"
            )


def jitter_boxes(batch: PromptBatch, jitter: float, rng: np.random.Generator) -> PromptBatch:
    """``batch`` with every box side moved by up to ``jitter`` x the box's side (uniform), clipped to the image."""
    boxes = batch.boxes.numpy().astype(np.float64)
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) + 1.0  # XYXY, inclusive maxima
    spans = np.concatenate([sides, sides], 1)
    moved = np.clip(boxes + rng.uniform(-jitter, jitter, size=boxes.shape) * spans, 0, batch.size - 1)
    fixed = np.stack(
        [moved[:, [0, 2]].min(1), moved[:, [1, 3]].min(1), moved[:, [0, 2]].max(1), moved[:, [1, 3]].max(1)], 1
    )
    return PromptBatch(**{**vars(batch), "boxes": torch.from_numpy(fixed.astype(np.float32))})


def consensus_masks(
    model: PromptedSam,
    embeddings: EmbeddingRows | None,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    class_count: int,
    size: int,
    point_count: int,
    settings: UncertaintySettings,
    device: torch.device,
    progress: bool = True,
    images: np.ndarray | None = None,
) -> np.ndarray:
    """(N, T, S, S) bool consensus masks of N images: their frozen encoder's ``embeddings`` (in
    ``prompts``' order) or, for a model whose encoder trained, the (N, S, S) uint8 ``images`` encoded here."""
    rng = np.random.default_rng(settings.seed)
    out = np.zeros((len(prompts), class_count, size, size), bool)
    passes = each_image(
        model, embeddings, images, prompts, texts, class_count, size, point_count, device, "consensus", progress
    )
    for n, embedded, batch in passes:
        total = torch.zeros(class_count, size, size)
        for _ in range(settings.augmentations):
            logits, _ = model(embedded, jitter_boxes(batch, settings.jitter, rng).to(device))
            total += torch.sigmoid(logits.float()).cpu()
        out[n] = (total / settings.augmentations >= 0.5).numpy()
    return out
