"""What a person grades: the unlabelled (image, class) pairs whose candidates differ, in image order,
each drawn as PNG panels from the prompt store and the candidates (never from the labels): the whole image
with the prompt box for context, and each candidate's outline zoomed to the box and the candidates.

Pairs whose K candidates are all the same mask (all empty, or one mask at every threshold) carry no
preference whatever a person says, so they are not shown. A pair's id is ``{image}-{class}``, the
candidate set's row and class indices; any other id is unknown.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.align.candidates import CandidateSet, read_candidates
from samdpo.errors import DataError
from samdpo.human.decisions import DecisionLog

#: A pair id: the candidate set's image row and class index.
PAIR_ID = re.compile(r"(\d{1,7})-(\d{1,4})")
#: Outline colours of the candidates (RGB), and the prompt box's.
COLOURS = ((255, 196, 0), (0, 200, 255), (255, 64, 160), (120, 230, 80))
BOX_COLOUR = (255, 255, 255)
#: Screen pixels of a panel's side; the candidates' panels zoom to a window of at least MIN_WINDOW image pixels.
DISPLAY_PIXELS, MIN_WINDOW = 256, 24


@dataclass(frozen=True)
class Pair:
    """One (image, class) to grade: its id, position in the queue, sample id, class index and name."""

    id: str
    position: int
    image: int
    sample_id: str
    class_index: int
    class_name: str


def pair_queue(candidates: CandidateSet, sample_ids: list[str], class_names: list[str]) -> list[Pair]:
    """The pairs whose K candidates are not all the same mask."""
    pairs = []
    for n, sample in enumerate(sample_ids):
        image_masks = candidates.masks(n)
        for t, name in enumerate(class_names):
            masks = image_masks[t]
            if not (masks == masks[:1]).all():
                pairs.append(Pair(f"{n}-{t}", len(pairs), n, sample, t, name))
    return pairs


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> the mask's edge pixels (the mask minus its cross erosion)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def window(union: np.ndarray, box: tuple[float, ...] | None, size: int) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) pixels around the largest candidate ``union`` ((S, S) bool) and the
    box, with a margin of half their extent, at least :data:`MIN_WINDOW` pixels, inside the image."""
    ys, xs = np.nonzero(union)
    lows = [xs.min(), ys.min()] if len(xs) else []
    highs = [xs.max() + 1, ys.max() + 1] if len(xs) else []
    if box is not None:
        lows, highs = lows + [box[0], box[1]], highs + [box[2] + 1, box[3] + 1]
    if not lows:
        return 0, 0, size, size
    x0, y0 = min(lows[0::2]), min(lows[1::2])
    x1, y1 = max(highs[0::2]), max(highs[1::2])
    side = int(min(size, max(MIN_WINDOW, 1.5 * max(x1 - x0, y1 - y0))))
    left = int(np.clip((x0 + x1 - side) / 2, 0, size - side))
    top = int(np.clip((y0 + y1 - side) / 2, 0, size - side))
    return left, top, left + side, top + side


class Session:
    """One person grading one candidate set: the queue, the decisions, the drawings.

    Args:
        candidates: the candidates folder (``candidates.npy`` / ``.json``).
        prompts: the dataset's prompt store folder (one Parquet file per image: image, box, class names).
        log: the person's :class:`DecisionLog` on these candidates.
    """

    def __init__(self, candidates: Path | str, prompts: Path | str, log: DecisionLog) -> None:
        self.candidates = read_candidates(Path(candidates))
        self.meta = self.candidates.meta
        self.prompts, self.log = Path(prompts), log
        self.count = self.candidates.count
        self.pairs = pair_queue(self.candidates, self.meta["sample_ids"], self.meta["class_names"])
        self.by_id = {pair.id: pair for pair in self.pairs}

    def pair(self, pair_id: str) -> Pair:
        """The pair of an id; :class:`KeyError` for an unknown or malformed one."""
        if not PAIR_ID.fullmatch(pair_id) or pair_id not in self.by_id:
            raise KeyError(pair_id)
        return self.by_id[pair_id]

    def current(self) -> Pair | None:
        """The first pair without a decision (None: all decided)."""
        decided = self.log.decided()
        return next((p for p in self.pairs if (p.sample_id, p.class_index) not in decided), None)

    def following(self, pair: Pair) -> Pair | None:
        """The next undecided pair after ``pair`` (what comes once ``pair`` is decided)."""
        decided = self.log.decided()
        later = self.pairs[pair.position + 1 :]
        return next((p for p in later if (p.sample_id, p.class_index) not in decided), None)

    def progress(self) -> dict[str, int]:
        """Decided and total pairs (of the shown ones)."""
        decided = self.log.decided()
        return {"done": sum((p.sample_id, p.class_index) in decided for p in self.pairs), "total": len(self.pairs)}

    @functools.lru_cache(maxsize=32)  # noqa: B019 - one Session per server; the cache lives with it
    def _prompt(self, sample_id: str) -> tuple[np.ndarray, dict[int, tuple[float, ...] | None]]:
        """(S, S) uint8 image and each class's box (x0, y0, x1, y1 pixels, None without one), from one read of the
        image's prompt file."""
        from samdpo.prompts.store import array, read_prompts

        path = self.prompts / f"{sample_id}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: no prompt file for image {sample_id}; run the prompt_store rule")
        rows = read_prompts(path)[0]
        if not rows:
            raise DataError(f"{path}: no rows")
        boxes = {
            row["class_index"]: tuple(float(v) for v in row["box"]) if row["has_box"] and row["box"] else None
            for row in rows
        }
        return array(rows[0], "image"), boxes

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def png(self, pair_id: str, candidate: int | None) -> bytes:
        """The PNG of a pair, :data:`DISPLAY_PIXELS` square: the whole image with the prompt box (``candidate``
        None), or candidate ``candidate``'s outline and the box, zoomed to :func:`window` of the pair."""
        from PIL import Image, ImageDraw

        pair = self.pair(pair_id)
        image, boxes = self._prompt(pair.sample_id)
        if pair.class_index not in boxes:
            raise DataError(f"{self.prompts / pair.sample_id}.parquet: no row for class {pair.class_index}")
        box = boxes[pair.class_index]
        masks = self.candidates.masks(pair.image, pair.class_index)
        rgb = np.repeat(image[..., None], 3, axis=2)
        if candidate is not None:
            rgb[outline(masks[candidate])] = COLOURS[candidate % len(COLOURS)]
        drawing = Image.fromarray(rgb)
        if box is not None:
            ImageDraw.Draw(drawing).rectangle(box, outline=BOX_COLOUR, width=1)
        if candidate is not None:
            drawing = drawing.crop(window(masks.any(0), box, image.shape[0]))
        drawing = drawing.resize((DISPLAY_PIXELS, DISPLAY_PIXELS), Image.NEAREST)
        out = io.BytesIO()
        drawing.save(out, format="PNG", compress_level=1)
        return out.getvalue()

    def describe(self, pair: Pair | None) -> dict[str, Any] | None:
        """What the page needs of a pair (None: nothing left)."""
        if pair is None:
            return None
        return {
            "id": pair.id,
            "sample_id": pair.sample_id,
            "class_name": pair.class_name,
            "position": pair.position,
            "image": f"/png/{pair.id}/image.png",
            "candidates": [f"/png/{pair.id}/{k}.png" for k in range(self.count)],
        }
