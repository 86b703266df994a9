"""Settings of stage 2 (:mod:`samdpo.align.stage2`), checked without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from samdpo.errors import ConfigError

OBJECTIVES = ("dpo", "best")
ANCHORS = ("best_candidate", "labeled")
#: How a candidate's per-pixel log-likelihoods become one number (:func:`samdpo.align.dpo.candidate_logp`).
REDUCTIONS = ("sum", "disagreement_mean", "mean")


@dataclass(frozen=True)
class Stage2Settings:
    """Alignment settings (defaults: the paper's).

    Attributes:
        objective: ``dpo`` (the paper) or ``best`` (supervised on the best candidate: the ablation).
        epochs: passes over the (image, class) pairs that carry a preference.
        lr, lr_step, lr_gamma: Adam learning rate, halved every ``lr_step`` epochs.
        batch_pairs: (image, class) pairs per step.
        beta1, beta2: DPO weights of the outer and inner positions.
        reduction: per-candidate log-likelihood reduction (``sum``, ``disagreement_mean``, ``mean``).
        min_grade_gap: pairs whose best and worst candidates' grades differ by less are left out
            (0 or 1: every pair with a preference).
        anchor_weight: weight of the supervised anchor term (0: none).
        anchor_on: ``best_candidate`` (of each unlabelled pair) or ``labeled`` (the labelled split's ground truth).
        seed: order of the pairs.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    objective: str = "dpo"
    epochs: int = 30
    lr: float = 1e-4
    lr_step: int = 10
    lr_gamma: float = 0.5
    batch_pairs: int = 16
    beta1: float = 1.0
    beta2: float = 0.5
    reduction: str = "disagreement_mean"
    min_grade_gap: int = 0
    anchor_weight: float = 0.0
    anchor_on: str = "best_candidate"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"stage2.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"stage2.reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if not 0 <= self.min_grade_gap <= 3:
            raise ConfigError(f"stage2.min_grade_gap must be in 0..3 (grades are 1..4), got {self.min_grade_gap}")
        if self.epochs < 1 or self.batch_pairs < 1 or self.lr_step < 1 or not self.lr > 0:
            raise ConfigError("stage2: epochs, batch_pairs and lr_step must be >= 1 and lr > 0")
        if self.anchor_on not in ANCHORS or not self.anchor_weight >= 0:
            raise ConfigError(
                f"stage2.anchor_on must be one of {ANCHORS} and anchor_weight >= 0, got {self.anchor_on!r}, "
                f"{self.anchor_weight}"
            )
