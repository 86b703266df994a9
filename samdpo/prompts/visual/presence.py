"""Whether each class is on a slice, without test labels: where along the scan's axis it occurs.

Fitted on the labelled split only. A slice's height in its scan is ``h = (slice_index + 0.5) /
slice_count`` (0 = the scan's inferior end, 1 = its superior end; the AMOS reader's slices run
inferior -> superior). For class t, ``P(t on the slice | h)`` is a Nadaraya-Watson kernel regression
over the labelled slices (Gaussian kernel of width ``bandwidth`` in heights), with ``pseudo_count``
slices' worth of "absent" added to the denominator, so that far from every labelled slice the answer
falls to "absent" instead of whatever the nearest labelled slice said:

    P_t(h) = sum_i K(h - h_i) y_it / (sum_i K(h - h_i) + pseudo_count),  K(d) = exp(-d^2 / (2 bandwidth^2))

A (slice, class) is present where ``P_t(h) >= threshold``. The threshold is a number, or
``"validation"``: chosen on the validation split's slices (labels read for selection only, as every
setting the pipeline chooses) as the grid value whose decisions have the highest F1 over the validation
(slice, class) pairs, "present" the positive class. F1 of the slices an organ is said to be on is the
3D Dice that a perfect per-slice mask would reach, which is what presence decides. The prompt store keeps the box (and
points) of a present class only; a class that presence says is absent gets "no box" and the
prediction rules give it the empty mask. A 2D dataset (every ``slice_count`` 1) has one height: P is
about the class's rate on the labelled images, so presence changes nothing there unless a class is rare.

Only the labelled split's labels are fitted on and only the validation split's choose the threshold
(the caller gives them); an unlabelled or test slice's presence depends on its position in its scan only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

PRESENCE_FILE = "presence_prior.json"
#: Heights at which the fitted curves are stored and shown (the score itself is computed exactly).
CURVE_POINTS = 101
#: Thresholds a ``"validation"`` threshold is chosen from.
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


@dataclass(frozen=True)
class PresenceSettings:
    """Settings of the presence signal.

    Attributes:
        enabled: gate the boxes by presence (false: every class present on every slice, as before).
        bandwidth: width of the Gaussian kernel over heights, a fraction of the scan's length.
        pseudo_count: labelled slices' worth of "absent" every estimate is pulled towards (> 0).
        threshold: a class is present where its probability is at least this, in (0, 1); or
            ``"validation"``: the :data:`THRESHOLD_GRID` value of best presence F1 on the validation split.
    """

    enabled: bool = True
    bandwidth: float = 0.08
    pseudo_count: float = 0.5
    threshold: float | str = "validation"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"presence.enabled must be true or false, got {self.enabled!r}")
        for name in ("bandwidth", "pseudo_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"presence.{name} must be a positive number, got {value!r}")
        if self.threshold == "validation":
            return
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ConfigError(f'presence.threshold must be a number in (0, 1) or "validation", got {self.threshold!r}')
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"presence.threshold must lie in (0, 1), got {self.threshold!r}")


def slice_heights(slice_index: np.ndarray, slice_count: np.ndarray) -> np.ndarray:
    """(N,) float64 heights in (0, 1) of slices ``slice_index`` of scans of ``slice_count`` slices.

    Raises:
        DataError: a slice index outside its scan, or a scan of no slices.
    """
    index, count = np.asarray(slice_index, np.float64), np.asarray(slice_count, np.float64)
    if index.shape != count.shape:
        raise DataError(f"slice indices {index.shape} and slice counts {count.shape} differ in shape")
    if (count < 1).any() or (index < 0).any() or (index >= count).any():
        raise DataError("a slice index lies outside its scan (slice_index must be in [0, slice_count))")
    return (index + 0.5) / count


@dataclass(frozen=True)
class PresencePrior:
    """The fitted signal.

    Attributes:
        heights: (M,) float64 heights of the labelled slices it was fitted on.
        present: (M, T) bool, which classes each labelled slice shows.
        class_names: T names.
        settings: what it was fitted with.
        threshold: the threshold in use (``settings.threshold``, or the one the validation split chose).
    """

    heights: np.ndarray
    present: np.ndarray
    class_names: tuple[str, ...]
    settings: PresenceSettings
    threshold: float

    def probability(self, heights: np.ndarray) -> np.ndarray:
        """(N, T) float64 ``P(class on the slice | height)`` of slices at ``heights`` (N,), in [0, 1).

        Computed once per distinct height (a scan of Z slices has Z of them), so that a whole dataset's
        slices against thousands of labelled ones stays small in memory."""
        distinct, where = np.unique(np.asarray(heights, np.float64), return_inverse=True)
        weights = np.exp(-0.5 * ((distinct[:, None] - self.heights[None, :]) / self.settings.bandwidth) ** 2)
        seen = weights @ self.present.astype(np.float64)
        return (seen / (weights.sum(1, keepdims=True) + self.settings.pseudo_count))[where.reshape(-1)]

    def decide(self, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) float32 probabilities and (N, T) bool "present" of slices at ``heights``."""
        probability = self.probability(heights)
        return probability.astype(np.float32), probability >= self.threshold


def label_presence(labels: np.ndarray, class_count: int) -> np.ndarray:
    """(M, T) bool: which of classes 1..T each of the (M, S, S) label maps shows."""
    values = np.arange(1, class_count + 1, dtype=np.uint8)
    return np.stack([(np.asarray(label)[None] == values[:, None, None]).any(axis=(1, 2)) for label in labels])


def presence_f1(decided: np.ndarray, truth: np.ndarray) -> float:
    """F1 of (N, T) bool presence decisions against the truth, "present" the positive class (1.0 when
    neither says present anywhere)."""
    hits = float((decided & truth).sum())
    total = float(decided.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * hits / total


def fit_presence(
    heights: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    settings: PresenceSettings,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[PresencePrior, dict]:
    """Fit the signal on labelled slices, and choose its threshold on the validation slices if asked.

    Args:
        heights: (M,) heights of the labelled slices (:func:`slice_heights`).
        labels: (M, S, S) uint8 label maps, label k = class_names[k - 1].
        class_names: T names.
        settings: kernel width, pseudo-count, threshold.
        validation: (V,) heights and (V, S, S) label maps of the validation slices; needed when
            ``settings.threshold`` is ``"validation"``, not read otherwise.

    Returns:
        The fitted signal and what the choice saw (``{}`` for a fixed threshold): the F1 of every
        grid threshold on the validation pairs and the chosen one.

    Raises:
        DataError: no labelled slice, heights and labels of different lengths, or a validation threshold
            without validation slices.
    """
    if len(labels) == 0:
        raise DataError("the presence signal needs labelled slices; the labelled split is empty")
    if len(heights) != len(labels):
        raise DataError(f"{len(heights)} heights for {len(labels)} labelled slices")
    present = label_presence(labels, len(class_names))
    fixed = settings.threshold != "validation"
    threshold = float(settings.threshold) if fixed else float("nan")  # nan: until the validation split chooses
    fitted = PresencePrior(np.asarray(heights, np.float64), present, tuple(class_names), settings, threshold)
    if fixed:
        return fitted, {}
    if validation is None or len(validation[1]) == 0:
        raise DataError('presence.threshold "validation" needs validation slices; the validation split is empty')
    probability = fitted.probability(validation[0])
    truth = label_presence(validation[1], len(class_names))
    scores = [presence_f1(probability >= threshold, truth) for threshold in THRESHOLD_GRID]
    best = [t for t, f1 in zip(THRESHOLD_GRID, scores, strict=True) if f1 == max(scores)]
    chosen = best[len(best) // 2]  # the middle of the tied best: equal on validation, least extreme
    choice = {
        "validation_slices": len(validation[1]),
        "validation_f1": {f"{t:.2f}": round(f1, 4) for t, f1 in zip(THRESHOLD_GRID, scores, strict=True)},
        "threshold_chosen": chosen,
    }
    return replace(fitted, threshold=chosen), choice


def write_presence(prior: PresencePrior, path: Path, meta: Mapping) -> None:
    """Write the fitted signal as JSON atomically: the labelled heights and classes, the settings, the
    curve of every class at :data:`CURVE_POINTS` heights (for reading, not for scoring) and ``meta``."""
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    curves = prior.probability(grid)
    info = {
        **meta,
        "class_names": list(prior.class_names),
        "settings": asdict(prior.settings),
        "threshold": prior.threshold,
        "heights": [round(float(h), 6) for h in prior.heights],
        "present": prior.present.astype(int).tolist(),
        "curves": {name: [round(float(v), 4) for v in curves[:, t]] for t, name in enumerate(prior.class_names)},
    }
    atomic.write_text(path, json.dumps(info, indent=1, sort_keys=True) + "\n")


def read_presence(path: Path) -> tuple[PresencePrior, dict]:
    """Read a signal written by :func:`write_presence`, and all it holds as a dict.

    Raises:
        DataError: missing or not such a file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no presence signal; run the presence_prior rule first")
    try:
        info = json.loads(path.read_text())
        names = tuple(info["class_names"])
        present = np.asarray(info["present"], dtype=bool).reshape(-1, len(names))
        heights = np.asarray(info["heights"], np.float64)
        settings = PresenceSettings(**info["settings"])
        threshold = float(info["threshold"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise DataError(f"{path}: not a presence signal file ({exc}); run the presence_prior rule again") from exc
    if len(heights) != len(present):
        raise DataError(f"{path}: {len(heights)} heights for {len(present)} rows of classes")
    return PresencePrior(heights, present, names, settings, threshold), info
