"""Probability maps of a trained stage-1 model for the unlabelled and test splits.

Writes ``probs.npy``: (N, T, S, S) uint8, the sigmoid probability x 255 (rounded) for every image
of the chosen splits and every class, and ``probs.json``: sample ids, their splits, class names and
the model's provenance. Reads images and prompts only, never labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from samdpo.evaluation.metrics import probability_cut
from samdpo.prompts.visual.boxes import mask_box
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptedSam
from samdpo.train.batches import make_batch
from samdpo.train.prompt_data import ImagePrompts


def present_classes(labels: np.ndarray, class_count: int) -> list[list[int]]:
    """Per (S, S) label map of ``labels`` (N, S, S), the class indices (label - 1) it holds: the only classes
    evaluation scores, so the only ones an evaluating caller needs predicted (``classes`` below)."""
    return [[t for t in range(class_count) if (np.asarray(label) == t + 1).any()] for label in labels]


def _predict_rows(
    model: PromptedSam,
    chosen: Sequence[int],
    prompts: Sequence[ImagePrompts],
    wanted: Sequence[Sequence[int]],
    texts: Mapping[str, np.ndarray],
    size: int,
    point_count: int,
    device: torch.device,
    images: np.ndarray,
    embeddings: EmbeddingRows | None,
    out: np.ndarray,
) -> None:
    """Predict classes ``wanted[k]`` of images ``chosen[k]`` (rows of ``images`` / ``embeddings`` / ``out``) with
    ``prompts[k]`` into ``out`` (probability x 255), in one batch."""
    batch = make_batch(prompts, wanted, texts, size, point_count).to(device)
    if embeddings is None:
        embedded = model.embed_images(torch.from_numpy(np.asarray(images[list(chosen)])).to(device))
    else:
        embedded = embeddings.take(list(chosen), device)
    logits, _ = model(embedded, batch)
    probs = torch.round(torch.sigmoid(logits.float()) * 255).to(torch.uint8).cpu().numpy()
    rows = [(i, t) for i, classes in zip(chosen, wanted) for t in classes]
    for (i, t), prob in zip(rows, probs):
        out[i, t] = prob


def _wanted(prompts: Sequence[ImagePrompts], classes: Sequence[Sequence[int]] | None, class_count: int) -> list:
    """Per image the classes to predict: ``classes`` (all when None) that the presence signal says are there."""
    wanted = [list(range(class_count))] * len(prompts) if classes is None else [sorted(c) for c in classes]
    return [[t for t in chosen if prompts[i].present[t]] for i, chosen in enumerate(wanted)]


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
    """Fill ``out``, (N, T, S, S) uint8 (e.g. a memory map), with the probabilities x 255 of every class of every
    image, each image on its own (independent slices).

    ``embeddings``: the frozen encoder's embeddings of ``images`` (read instead of running the encoder).
    ``classes``: per image, the only classes to predict (the others' rows of ``out`` are left as they are).
    A class the presence signal says is absent from an image (``ImagePrompts.present``) is never predicted either.
    """
    model.eval().to(device)
    count, size = len(prompts), images.shape[-1]
    wanted = _wanted(prompts, classes, out.shape[1])
    with torch.inference_mode():
        for start in tqdm(range(0, count, batch_images), desc="predict", unit="batch", disable=not progress):
            chosen = [i for i in range(start, min(start + batch_images, count)) if wanted[i]]
            if chosen:
                _predict_rows(
                    model,
                    chosen,
                    [prompts[i] for i in chosen],
                    [wanted[i] for i in chosen],
                    texts,
                    size,
                    point_count,
                    device,
                    images,
                    embeddings,
                    out,
                )
    return out


def propagated_box(mask: np.ndarray, margin: int) -> np.ndarray | None:
    """XYXY box (inclusive maxima) of a (S, S) bool mask grown by ``margin`` pixels and clipped; None if empty."""
    box = mask_box(mask)
    if box is None:
        return None
    last = mask.shape[-1] - 1
    x0, y0, x1, y1 = box
    return np.array(
        [max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, last), min(y1 + margin, last)], np.float32
    )


def predict_volumes(
    model: PromptedSam,
    images: np.ndarray,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    device: torch.device,
    out: np.ndarray,
    point_count: int,
    cases: Sequence[str],
    slice_index: Sequence[int],
    margin: int,
    progress: bool = True,
    embeddings: EmbeddingRows | None = None,
) -> np.ndarray:
    """Fill ``out`` (N, T, S, S) like :func:`predict_probabilities`, but volume by volume, slices in order
    (inferior -> superior): a class found on a slice gives the next slice (``slice_index`` + 1 of the same
    case) its box, the found mask's box grown by ``margin`` pixels, in place of the human-free one.
    Propagation stops where the mask vanishes (the next slice takes its own box again) or the presence
    signal says the class is absent (not predicted: empty).

    Args:
        cases: (N,) case id of each image; slice_index: (N,) its slice in the case's volume.
        margin: pixels added on every side of a propagated box.
    """
    model.eval().to(device)
    size = images.shape[-1]
    wanted = _wanted(prompts, None, out.shape[1])
    order = sorted(range(len(prompts)), key=lambda i: (str(cases[i]), int(slice_index[i])))
    previous: dict[int, np.ndarray] = {}
    last: tuple[str, int] | None = None
    with torch.inference_mode():
        for i in tqdm(order, desc="predict volumes", unit="slice", disable=not progress):
            here = (str(cases[i]), int(slice_index[i]))
            if last is None or here != (last[0], last[1] + 1):
                previous = {}  # a new volume, or a gap in this one: nothing to propagate
            last = here
            found: dict[int, np.ndarray] = {}
            if wanted[i]:
                boxes, has_box = prompts[i].boxes.copy(), prompts[i].has_box.copy()
                for t in wanted[i]:
                    box = None if t not in previous else propagated_box(previous[t], margin)
                    if box is not None:
                        boxes[t], has_box[t] = box, True
                moved = dataclasses.replace(prompts[i], boxes=boxes, has_box=has_box)
                _predict_rows(
                    model, [i], [moved], [wanted[i]], texts, size, point_count, device, images, embeddings, out
                )
                found = {t: np.asarray(out[i, t]) >= probability_cut(0.5) for t in wanted[i]}
            previous = {t: mask for t, mask in found.items() if mask.any()}
    return out
