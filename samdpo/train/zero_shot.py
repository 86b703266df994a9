"""Zero-shot rows: the pretrained SAM with box prompts alone, nothing trained.

- ``cam``: the human-free boxes of the prompt store (CRF, refined by SAM). A class whose mask was empty ("no
  box") gets an empty prediction: SAM is given no prompt for it.
- ``gt``: boxes of the **test labels**: an oracle ceiling that reads ground truth, never a
  competitor. Only the test split may be predicted this way, and its predictions feed evaluation
  alone (no candidate, annotator or training rule reads them). Classes absent from an image's
  labels get an empty prediction.

Boxes are XYXY pixels with inclusive maxima in the store's frame (SamPredictor's convention); the
model scales them to its input frame (LiteMedSAM: 256 px).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from samdpo.prompts.visual.boxes import mask_box
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptedSam, box_batch
from samdpo.train.prompt_data import ImagePrompts

BOX_SOURCES = ("cam", "gt")


def prompt_boxes(prompts: Sequence[ImagePrompts]) -> tuple[np.ndarray, np.ndarray]:
    """The prompt-store boxes of N images: (N, T, 4) float32 XYXY and (N, T) bool ``has_box``."""
    return np.stack([p.boxes for p in prompts]), np.stack([p.has_box for p in prompts])


def ground_truth_boxes(labels: np.ndarray, class_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the classes in (N, S, S) label maps (label k = class k-1): (N, T, 4) XYXY, (N, T) present."""
    boxes = np.zeros((len(labels), class_count, 4), np.float32)
    present = np.zeros((len(labels), class_count), bool)
    for i, label in enumerate(labels):
        for t in range(class_count):
            box = mask_box(label == t + 1)
            if box is not None:
                boxes[i, t], present[i, t] = box, True
    return boxes, present


def predict_boxes(
    model: PromptedSam,
    images: np.ndarray,
    boxes: np.ndarray,
    has_box: np.ndarray,
    device: torch.device,
    out: np.ndarray,
    embeddings: EmbeddingRows | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Fill ``out`` (N, T, S, S) uint8 with SAM's probability x 255 for every boxed (image, class), 0 elsewhere.

    Args:
        model: a :class:`PromptedSam` whose switches take the box alone.
        images: (N, S, S) uint8 images; boxes: (N, T, 4) XYXY store pixels; has_box: (N, T) bool.
        embeddings: the frozen encoder's embeddings of ``images`` (else the encoder runs).
    """
    model.eval().to(device)
    size = images.shape[-1]
    with torch.inference_mode():
        for i in tqdm(range(len(images)), desc="zero-shot", unit="image", disable=not progress):
            out[i] = 0
            chosen = np.flatnonzero(has_box[i])
            if chosen.size == 0:
                continue
            if embeddings is None:
                embedded = model.embed_images(torch.from_numpy(np.asarray(images[i : i + 1])).to(device))
            else:
                embedded = embeddings.take([i], device)
            logits, _ = model(embedded, box_batch(boxes[i, chosen], size).to(device))
            out[i, chosen] = torch.round(torch.sigmoid(logits.float()) * 255).to(torch.uint8).cpu().numpy()
    return out
