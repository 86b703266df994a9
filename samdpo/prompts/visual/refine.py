"""Box refinement with the pretrained SAM itself, no labels: box -> SAM mask -> tighter box, iterated.

MedCLIP-SAM feeds its saliency box to SAM once; here the box of SAM's mask becomes the next box
(plus ``margin`` pixels a side, as SAM was trained on boxes a little larger than the object), until
the box stops moving (IoU with the previous one >= ``converged_iou``) or ``iterations`` rounds have
run. A round whose mask is smaller than ``min_area`` pixels ends the refinement and keeps the box
before it. The prompt's mask becomes SAM's last mask; its points are re-drawn from it with the
class's box settings (:func:`mask_to_prompt`), the positive point at the mask's most interior pixel
(largest distance to its border; saliency breaks ties), negatives where the saliency is lowest.

Reads images (as embeddings), the CRF table and the saliency; never labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from scipy import ndimage
from tqdm import tqdm

from samdpo.errors import ConfigError
from samdpo.prompts.visual.boxes import BoxSettings, box_iou, mask_box, mask_to_prompt

if TYPE_CHECKING:  # torch is imported where SAM runs: the settings are checked before any job without it
    import torch

    from samdpo.sam.image_embeddings import EmbeddingRows
    from samdpo.sam.prompted import PromptedSam


@dataclass(frozen=True)
class RefineSettings:
    """Settings of the SAM refinement.

    Attributes:
        iterations: SAM rounds per box (0 = keep the CRF prompts as they are).
        threshold: SAM probability above which a pixel is in the mask.
        margin: pixels added to each side of the mask's box before the next round.
        min_area: a SAM mask with fewer pixels ends the refinement (the box before it is kept).
        converged_iou: stop once the new box overlaps the previous one this much.
    """

    iterations: int = 2
    threshold: float = 0.5
    margin: int = 2
    min_area: int = 4
    converged_iou: float = 0.95

    def __post_init__(self) -> None:
        for name, low in (("iterations", 0), ("margin", 0), ("min_area", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"refine.{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"refine.threshold must lie in (0, 1), got {self.threshold!r}")
        if not 0.0 < self.converged_iou <= 1.0:
            raise ConfigError(f"refine.converged_iou must lie in (0, 1], got {self.converged_iou!r}")


def grow(box: tuple[float, float, float, float], margin: int, size: int) -> tuple[float, float, float, float]:
    """An XYXY box (inclusive maxima) grown by ``margin`` pixels a side, clipped to a ``size`` image."""
    x0, y0, x1, y1 = box
    return (max(x0 - margin, 0.0), max(y0 - margin, 0.0), min(x1 + margin, size - 1.0), min(y1 + margin, size - 1.0))


def refine_boxes(
    model: PromptedSam,
    embedding: torch.Tensor,
    boxes: np.ndarray,
    modes: list[str],
    size: int,
    settings: RefineSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine K boxes of one image.

    Args:
        model: a :class:`PromptedSam` whose switches take the box alone, in eval mode.
        embedding: (1, C, h, w) the image's embedding.
        boxes: (K, 4) XYXY store pixels, inclusive maxima.
        modes: K box modes (``largest``: SAM's largest component makes the next box; ``all``: every
            component, for paired organs).
        size: side of the store's images, pixels.

    Returns:
        (K, 4) float32 refined boxes, (K, S, S) bool masks of the last accepted round (all False
        where no round was accepted), and (K,) int rounds accepted per box.
    """
    import torch

    from samdpo.sam.prompted import box_batch

    boxes = np.asarray(boxes, np.float32).copy()
    masks = np.zeros((len(boxes), size, size), bool)
    rounds = np.zeros(len(boxes), np.int64)
    active = np.arange(len(boxes))
    for _ in range(settings.iterations):
        if active.size == 0:
            break
        with torch.inference_mode():
            logits, _ = model(embedding, box_batch(boxes[active], size))
            predicted = (torch.sigmoid(logits.float()) > settings.threshold).cpu().numpy()
        still = []
        for k, mask in zip(active, predicted):
            if modes[k] == "largest":
                mask = largest_component(mask)
            if mask.sum() < settings.min_area:
                continue
            masks[k], rounds[k] = mask, rounds[k] + 1
            new = np.asarray(grow(mask_box(mask), settings.margin, size), np.float32)
            moved = box_iou(tuple(boxes[k]), tuple(new)) < settings.converged_iou
            boxes[k] = new
            if moved:
                still.append(k)
        active = np.asarray(still, np.int64)
    return boxes, masks, rounds


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a (H, W) bool mask (the first in raster order on ties)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _point_score(mask: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Distance to the mask's border inside it (>= 1) plus saliency (in [0, 1]): the most interior
    pixel wins inside, the least salient outside."""
    return ndimage.distance_transform_edt(mask) + saliency


def _replace_prompt(
    row: dict, box: np.ndarray, mask: np.ndarray, saliency: np.ndarray, boxes: Mapping[str, BoxSettings]
) -> bool:
    """Put SAM's refined box, and points re-drawn from its mask, into a table row; False if the mask yields no box.

    ``saliency``: the class's (S, S) uint8 map (x 255), which places the points.
    """
    prompt = mask_to_prompt(mask, _point_score(mask, saliency.astype(np.float32) / 255.0), boxes[row["class_name"]])
    if prompt.box is None:
        return False
    row["box"] = [float(v) for v in box]
    row["points"], row["point_labels"] = prompt.points.tolist(), prompt.point_labels.tolist()
    row["mask"], row["mask_shape"] = np.packbits(prompt.mask).tobytes(), list(prompt.mask.shape)
    return True


def refine_table(
    table: pa.Table,
    maps: np.ndarray,
    sample_ids: list[str],
    model: PromptedSam,
    embeddings: EmbeddingRows,
    boxes: Mapping[str, BoxSettings],
    settings: RefineSettings,
    size: int,
    progress: bool = True,
) -> tuple[pa.Table, dict[str, float]]:
    """Refine every boxed row of a CRF prompt table (:data:`samdpo.prompts.visual.crf_table.SCHEMA`).

    Args:
        table: the CRF table; rows are matched to images by ``sample_id``.
        maps: (N, T, S, S) uint8 saliency of the N images (for point placement).
        sample_ids: the N images in ``maps`` / ``embeddings`` order.
        model: box-only :class:`PromptedSam` (its encoder made ``embeddings``).
        embeddings: the N images' embeddings.
        boxes: class name -> box settings (mode, points) used to re-draw points from SAM's mask.
        settings: refinement settings.
        size: side of the store's images.

    Returns:
        The table with ``box``, ``points``, ``point_labels`` and ``mask`` replaced where refined,
        and a summary (``boxed`` rows, ``refined`` rows, ``mean_rounds``).
    """
    rows = table.to_pylist()
    by_image: dict[str, list[int]] = {}
    for r, row in enumerate(rows):
        if row["has_box"]:
            by_image.setdefault(row["sample_id"], []).append(r)
    position = {s: i for i, s in enumerate(sample_ids)}
    model.eval()
    refined, total_rounds = 0, 0
    for sample_id in tqdm(
        sorted(by_image, key=position.__getitem__), desc="refine", unit="image", disable=not progress
    ):
        members = by_image[sample_id]
        i = position[sample_id]
        new_boxes, masks, rounds = refine_boxes(
            model,
            embeddings.take([i]),
            np.array([rows[r]["box"] for r in members]),
            [boxes[rows[r]["class_name"]].mode for r in members],
            size,
            settings,
        )
        for r, box, mask, count in zip(members, new_boxes, masks, rounds):
            if count and _replace_prompt(rows[r], box, mask, maps[i, rows[r]["class_index"]], boxes):
                refined += 1
                total_rounds += int(count)
    boxed = sum(len(m) for m in by_image.values())
    summary = {"boxed": boxed, "refined": refined, "mean_rounds": total_rounds / refined if refined else 0.0}
    return pa.Table.from_pylist(rows, schema=table.schema), summary
