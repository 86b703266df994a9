"""Model selection on the validation split: the best epoch's weights, early stopping, a time budget.

A trainer that is given a :class:`Selection` scores its model on the validation split after every
``every`` epochs (and after the last one), keeps a copy of the best-scoring weights, stops once
``patience`` epochs passed without a better score or its training process has used ``budget_s``
CPU seconds (a CPU budget, so that a busy machine does not shorten the training), and writes the best
weights, not the last. The choice reads validation labels only; test labels never
reach a trainer (:func:`samdpo.data.splits.check_training_splits`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from samdpo.errors import ConfigError

#: The validation score's column in a trainer's log (mean Dice over classes, %).
VALIDATION_COLUMN = "val_dice"


@dataclass(frozen=True)
class Selection:
    """How a trainer chooses its epoch on the validation split.

    Attributes:
        score: () -> the model's validation score as it is now (mean Dice over classes, %; higher is better).
        every: score after every ``every`` epochs (and the last).
        patience: stop after this many epochs without a better score (None: run every epoch).
        budget_s: stop once the training process has used this many CPU seconds, all threads counted
            (None: no budget).
    """

    score: Callable[[], float]
    every: int = 1
    patience: int | None = None
    budget_s: float | None = None


def check_selection_settings(section: str, every: Any, patience: Any, budget_s: Any) -> None:
    """``validate_every`` >= 1, ``patience`` >= 1 or None, ``budget_s`` > 0 or None; else a ConfigError naming
    ``section``."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"{section}.validate_every must be an integer >= 1, got {every!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"{section}.patience must be an integer >= 1 or null, got {patience!r}")
    if budget_s is not None and (
        isinstance(budget_s, bool)
        or not isinstance(budget_s, (int, float))
        or not (math.isfinite(budget_s) and budget_s > 0)
    ):
        raise ConfigError(f"{section}.budget_s must be a number of seconds > 0 or null, got {budget_s!r}")


class SelectionState:
    """The best-scoring epoch so far, a copy of its weights and the CPU seconds spent (a checkpoint entry, so a
    resumed run keeps them)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.score = -math.inf
        self.weights: dict[str, Any] | None = None
        self.cpu_s = 0.0

    def offer(self, epoch: int, score: float, model: Any) -> bool:
        """Keep ``model``'s weights if ``score`` beats the best so far (ties keep the earlier epoch)."""
        if not score > self.score:
            return False
        self.epoch, self.score = epoch, float(score)
        self.weights = copy.deepcopy(model.state_dict())
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "score": self.score, "weights": self.weights, "cpu_s": self.cpu_s}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.score, self.weights = state["epoch"], float(state["score"]), state["weights"]
        self.cpu_s = float(state["cpu_s"])


def due(selection: Selection, epoch: int, last: int) -> bool:
    """Whether epoch ``epoch`` (of ``last``) is scored."""
    return epoch % selection.every == 0 or epoch == last


def stop_reason(selection: Selection, state: SelectionState, epoch: int) -> str | None:
    """``patience`` or ``budget`` when training stops after ``epoch``, else None."""
    if selection.patience is not None and state.epoch is not None and epoch - state.epoch >= selection.patience:
        return "patience"
    if selection.budget_s is not None and state.cpu_s >= selection.budget_s:
        return "budget"
    return None


def late_gain(scores: Sequence[tuple[int, float]]) -> float | None:
    """How much the last 25% of the epochs run improved the best validation score (points; 0 when they did not).

    ``scores``: (epoch, score) of the scored epochs, in order; None when no scored epoch lies in the first 75%.
    The plateau check of a baseline: below 1 point, more epochs would hardly have changed the row."""
    early = [s for e, s in scores if e <= 0.75 * scores[-1][0]] if scores else []
    if not early:
        return None
    return max(s for _, s in scores) - max(early)


def summary(
    selection: Selection, best: SelectionState, history: Sequence[Mapping[str, Any]], reason: str
) -> dict[str, Any]:
    """What ``settings.json`` records of the choice: the chosen epoch and its score, epochs run, why it stopped,
    the settings and the late gain (not the CPU seconds spent: they differ between identical runs, and the record
    is part of the settings hash the predictions and tables name)."""
    scores = [(int(row["epoch"]), float(row[VALIDATION_COLUMN])) for row in history if VALIDATION_COLUMN in row]
    return {
        "chosen_epoch": best.epoch,
        "validation_score": best.score if best.epoch is not None else None,
        "epochs_run": int(history[-1]["epoch"]) if history else 0,
        "stopped": reason,
        "validate_every": selection.every,
        "patience": selection.patience,
        "budget_s": selection.budget_s,
        "late_gain": late_gain(scores),
        "split": "validation",
    }
