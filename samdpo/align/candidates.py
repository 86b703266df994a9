"""Candidate masks: K masks per (image, class) of the unlabelled images, from one or more sources.

Sources (``align.candidates.source``, combinable):

- ``thresholds``: the stage-1 probabilities cut at each of ``thresholds`` (the paper's candidates);
- ``perturb``: the stage-1 model again with its box sides moved and its points shifted by up to
  ``jitter`` x the box's side, ``draws`` times (seeded);
- ``dropout``: the stage-1 model again with dropout ``dropout`` on the image embedding before the
  decoder, ``draws`` times (stochastic decoder passes, as MAPO's dropout hypotheses).

The draws of every source, and the stage-1 answer (probability >= 0.5) first, form a pool; identical
masks are dropped and K are chosen for diversity: the stage-1 answer, then repeatedly the draw
farthest (1 - IoU) from all chosen (:func:`select_diverse`). With ``empty`` the empty mask is always
one of the K, so an organ the reference says is absent has a right answer among them. The paper's
candidates are the special case ``source: [thresholds]``, ``empty: false``, K = len(thresholds):
then the K threshold masks are kept as they are, lowest threshold first.

``candidates.npy`` holds (N, T, K, B) uint8, each mask bit-packed (B = ceil(S*S / 8) bytes,
``np.packbits`` of the row-major (S, S) mask); ``candidates.json`` the sample ids, classes, S, K, the
settings that made them and the model they came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.class_maps import read_arrays, write_arrays
from samdpo.errors import ConfigError, DataError

PACKED = "candidates"
SOURCES = ("thresholds", "perturb", "dropout")
#: The sources that run the stage-1 model again (the others read its stored probabilities).
MODEL_SOURCES = ("perturb", "dropout")


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Strictly ascending thresholds in (0, 1)."""
    values = tuple(float(t) for t in thresholds)
    if len(values) < 1 or any(not 0 < t < 1 for t in values) or any(a >= b for a, b in zip(values, values[1:])):
        raise ConfigError(
            f"align.candidates.thresholds must be strictly ascending values in (0, 1), got {list(thresholds)}"
        )
    return values


@dataclass(frozen=True)
class CandidateSettings:
    """How the candidates are made (the ``align.candidates`` section).

    Attributes:
        source: one or more of :data:`SOURCES`.
        count: K candidates per (image, class), >= 2.
        empty: the empty mask is always one of the K.
        thresholds: the ``thresholds`` source's cuts, ascending in (0, 1).
        draws: passes of each model source (``perturb``, ``dropout``) per (image, class).
        jitter: ``perturb``'s bound of each box side's and point's shift, share of the box side.
        dropout: ``dropout``'s drop probability on the image embedding.
        seed: the draws of ``perturb`` and ``dropout``.
    """

    source: tuple[str, ...] = ("thresholds",)
    count: int = 4
    empty: bool = False
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6)
    draws: int = 4
    jitter: float = 0.15
    dropout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        source = (self.source,) if isinstance(self.source, str) else tuple(self.source)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "thresholds", check_thresholds(self.thresholds))
        unknown = [s for s in source if s not in SOURCES]
        if not source or unknown or len(set(source)) != len(source):
            raise ConfigError(f"align.candidates.source must be distinct names among {SOURCES}, got {list(source)}")
        if self.count < 2:
            raise ConfigError(f"align.candidates.count must be >= 2 (a preference needs two masks), got {self.count}")
        if self.draws < 1 or not 0 < self.jitter <= 0.5 or not 0 < self.dropout < 1:
            raise ConfigError(
                "align.candidates: draws must be >= 1, jitter in (0, 0.5] and dropout in (0, 1), got "
                f"{self.draws}, {self.jitter}, {self.dropout}"
            )

    @property
    def paper(self) -> bool:
        """The paper's candidates: the thresholds alone, kept as they are."""
        return self.source == ("thresholds",) and not self.empty and self.count == len(self.thresholds)

    @property
    def needs_model(self) -> bool:
        """Whether a source runs the stage-1 model again."""
        return any(s in MODEL_SOURCES for s in self.source)

    def describe(self) -> dict[str, Any]:
        """The settings that identify a candidate set (its metadata's ``candidates``), lists for JSON."""
        out = asdict(self)
        return {**out, "source": list(self.source), "thresholds": list(self.thresholds)}


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(..., S, S) bool -> (..., B) uint8, each mask's row-major pixels bit-packed."""
    masks = np.asarray(masks, bool)
    return np.packbits(masks.reshape(*masks.shape[:-2], -1), axis=-1)


def unpack_masks(packed: np.ndarray, size: int) -> np.ndarray:
    """(..., B) bit-packed uint8 -> (..., S, S) bool masks of side ``size``."""
    packed = np.asarray(packed)
    flat = np.unpackbits(packed, axis=-1, count=size * size).astype(bool)
    return flat.reshape(*packed.shape[:-1], size, size)


def threshold_masks(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(..., S, S) uint8 probabilities (x 255) -> (..., len(thresholds), S, S) bool, lowest threshold first."""
    scaled = np.asarray(probs).astype(np.float32) / 255.0
    return np.stack([scaled >= t for t in check_thresholds(thresholds)], axis=-3)


def pairwise_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(A, B) IoU between (A, S, S) and (B, S, S) bool masks; two empty masks have IoU 1."""
    a = first.reshape(len(first), -1).astype(np.float32)
    b = second.reshape(len(second), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def select_diverse(pool: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` masks of the (D, S, S) ``pool``: its first, then repeatedly the mask whose
    smallest distance (1 - IoU) to the chosen ones is largest (ties: the earlier). Identical masks count
    once; a pool with fewer distinct masks repeats its last choice (identical candidates tie)."""
    distance = 1.0 - pairwise_iou(pool, pool)
    chosen = [0]
    nearest = distance[0].copy()
    while len(chosen) < count:
        best = int(np.argmax(nearest))
        if nearest[best] <= 0:
            chosen += [chosen[-1]] * (count - len(chosen))
            break
        chosen.append(best)
        nearest = np.minimum(nearest, distance[best])
    return np.asarray(chosen)


def choose_candidates(pool: np.ndarray, count: int, empty: bool) -> np.ndarray:
    """(K, S, S) bool candidates of one (image, class) from its (D, S, S) pool (stage-1 answer first):
    the empty mask (if ``empty``) and K (or K - 1) diverse masks, ordered by area, largest first."""
    if empty:
        pool = pool[pool.reshape(len(pool), -1).any(1)]
        if len(pool) == 0:
            return np.zeros((count, *pool.shape[1:]), bool)
        chosen = np.concatenate([pool[select_diverse(pool, count - 1)], np.zeros((1, *pool.shape[1:]), bool)])
    else:
        chosen = pool[select_diverse(pool, count)]
    areas = chosen.reshape(count, -1).sum(1)
    return chosen[np.argsort(-areas, kind="stable")]


def build_candidates(
    settings: CandidateSettings, probs: np.ndarray, draws: np.ndarray | None
) -> tuple[np.ndarray, dict[str, int]]:
    """The (N, T, K, B) packed candidates of N images and, per source, how many chosen masks it gave.

    Args:
        probs: (N, T, S, S) uint8 stage-1 probabilities (x 255) of the unlabelled images.
        draws: (N, T, D, S, S) bool masks of the model sources (None when no source runs the model).
    """
    if settings.needs_model and draws is None:
        raise ValueError(f"align.candidates.source {list(settings.source)} needs the stage-1 model's draws")
    count, (n_images, n_classes, size) = settings.count, np.shape(probs)[:3]
    packed = np.zeros((n_images, n_classes, count, (size * size + 7) // 8), np.uint8)
    origin: dict[str, int] = {}
    for n in range(n_images):
        answer = (np.asarray(probs[n]) >= 128)[:, None]  # the stage-1 answer, probability >= 0.5
        parts = [("model", answer)]
        if "thresholds" in settings.source:
            parts.append(("thresholds", threshold_masks(probs[n], settings.thresholds)))
        if draws is not None:
            parts.append(("draws", np.asarray(draws[n])))
        if settings.paper:
            packed[n] = pack_masks(parts[1][1])
            origin["thresholds"] = origin.get("thresholds", 0) + n_classes * count
            continue
        labels = [name for name, masks in parts for _ in range(masks.shape[1])]
        pools = np.concatenate([masks for _, masks in parts], axis=1)
        for t in range(n_classes):
            chosen = choose_candidates(pools[t], count, settings.empty)
            packed[n, t] = pack_masks(chosen)
            for mask in chosen:
                same = np.flatnonzero((pools[t] == mask).all(axis=(1, 2)))
                name = "empty" if not mask.any() and settings.empty else labels[same[0]] if len(same) else "empty"
                origin[name] = origin.get(name, 0) + 1
    return packed, origin


def write_candidates(folder: Path, packed: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write the packed candidates and their metadata atomically."""

    def fill(out: np.ndarray) -> None:
        out[...] = packed

    write_arrays(Path(folder), PACKED, packed.shape, fill, meta)


@dataclass(frozen=True)
class CandidateSet:
    """A candidate folder, read: ``packed`` (N, T, K, B) memory-mapped, its metadata, K and S."""

    packed: np.ndarray
    meta: dict[str, Any]

    @property
    def count(self) -> int:
        """K candidates per (image, class)."""
        return int(self.meta["count"])

    @property
    def size(self) -> int:
        """Side S of the masks, pixels."""
        return int(self.meta["size"])

    def masks(self, image: int | np.ndarray, klass: int | np.ndarray | None = None) -> np.ndarray:
        """The candidates of image(s) ``image`` (and classes ``klass``): (..., K, S, S) bool."""
        chosen = self.packed[image] if klass is None else self.packed[image, klass]
        return unpack_masks(np.asarray(chosen), self.size)


def candidate_labels(meta: Mapping[str, Any]) -> list[str]:
    """Titles of the K candidates of a set: ``p >= t`` for the paper's threshold candidates, else ``candidate k``."""
    settings = CandidateSettings(**meta["candidates"])
    if settings.paper:
        return [f"p >= {t:g}" for t in settings.thresholds]
    return [f"candidate {k + 1}" for k in range(settings.count)]


def read_candidates(folder: Path) -> CandidateSet:
    """The candidates of a folder; a DataError naming it when they are not of this format."""
    packed, meta = read_arrays(Path(folder), PACKED, "candidates")
    missing = [key for key in ("count", "size", "candidates") if key not in meta]
    if missing:
        raise DataError(
            f"{Path(folder) / 'candidates.json'}: lacks {missing} (an older samdpo's); rerun the candidates rule"
        )
    expected = (int(meta["count"]), (int(meta["size"]) ** 2 + 7) // 8)
    if packed.ndim != 4 or packed.shape[2:] != expected:
        raise DataError(
            f"{Path(folder) / 'candidates.npy'}: shape {packed.shape}, expected (N, T, K, B) = (..., {expected})"
        )
    return CandidateSet(packed, meta)
