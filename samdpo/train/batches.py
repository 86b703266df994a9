"""Training batches of prompted (image, class) pairs: the classes each labelled image contributes,
their prompts as one :class:`~samdpo.sam.prompted.PromptBatch`, and jittered ground-truth boxes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from samdpo.errors import DataError
from samdpo.prompts.visual.boxes import mask_box
from samdpo.sam.prompted import PromptBatch
from samdpo.train.prompt_data import ImagePrompts


def make_batch(
    prompts: Sequence[ImagePrompts],
    classes: Sequence[Sequence[int]],
    texts: Mapping[str, np.ndarray],
    size: int,
    point_count: int,
) -> PromptBatch:
    """A :class:`PromptBatch` for ``classes[i]`` of image ``prompts[i]`` (text embeddings looked up),
    point prompts padded to ``point_count`` (fixed for a run: the most points of any prompt of the dataset)."""
    index, boxes, has_box, points, labels, vqa, llm = [], [], [], [], [], [], []
    width = point_count
    if any(p.points.shape[1] > width and (p.point_labels >= 0).sum(1).max() > width for p in prompts):
        raise DataError(f"a prompt has more than {point_count} points; rerun the embed_texts rule, which counts them")
    for i, (image, chosen) in enumerate(zip(prompts, classes)):
        for t in chosen:
            index.append(i)
            boxes.append(image.boxes[t])
            has_box.append(image.has_box[t])
            padded = np.zeros((width, 2), np.float32)
            padded_labels = np.full(width, -1, np.int64)
            count = min(image.points.shape[1], width)
            padded[:count], padded_labels[:count] = image.points[t, :count], image.point_labels[t, :count]
            points.append(padded)
            labels.append(padded_labels)
            for text, out in ((image.vqa[t], vqa), (image.llm[t], llm)):
                if text not in texts:
                    raise DataError(
                        f"image {image.sample_id}: a text prompt has no embedding; rerun the embed_texts rule"
                    )
                out.append(texts[text])
    return PromptBatch(
        image_index=torch.tensor(index, dtype=torch.int64),
        boxes=torch.from_numpy(np.stack(boxes)),
        has_box=torch.tensor(has_box, dtype=torch.bool),
        points=torch.from_numpy(np.stack(points)),
        point_labels=torch.from_numpy(np.stack(labels)),
        vqa=torch.from_numpy(np.stack(vqa)),
        llm=torch.from_numpy(np.stack(llm)),
        size=size,
    )


def jittered_truth_boxes(
    batch: PromptBatch, masks: np.ndarray, fraction: float, jitter: float, rng: np.random.Generator
) -> PromptBatch:
    """``batch`` with a ``fraction`` of its boxes (drawn by ``rng``) replaced by the bounding boxes of
    the (K, S, S) ground-truth ``masks`` of a labelled image, each side moved by up to ``jitter`` pixels
    (uniform) and clipped to the image."""
    chosen = rng.random(len(masks)) < fraction
    shifts = rng.uniform(-jitter, jitter, size=(len(masks), 4))
    if not chosen.any():
        return batch
    boxes, has_box = batch.boxes.clone(), batch.has_box.clone()
    last = masks.shape[-1] - 1
    for k in np.flatnonzero(chosen):
        box = np.clip(np.array(mask_box(masks[k]), np.float64) + shifts[k], 0, last)
        boxes[k] = torch.tensor(
            [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])], dtype=boxes.dtype
        )
        has_box[k] = True
    return PromptBatch(**{**vars(batch), "boxes": boxes, "has_box": has_box})


def labelled_pairs(labels: np.ndarray, class_count: int) -> list[list[int]]:
    """Per labelled image, the class indices present in its (S, S) label map (label k = class k-1)."""
    return [[t for t in range(class_count) if (label == t + 1).any()] for label in labels]


def sample_classes(present: Sequence[int], count: int, rng: np.random.Generator) -> list[int]:
    """``count`` of the ``present`` classes drawn without replacement, in class order (all when
    ``count`` is 0 or at least their number)."""
    if count == 0 or count >= len(present):
        return list(present)
    return sorted(rng.choice(np.asarray(present), size=count, replace=False).tolist())
