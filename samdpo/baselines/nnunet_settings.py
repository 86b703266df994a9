"""Settings of the nnU-Net baseline (:mod:`samdpo.baselines.nnunet`), checked without importing torch or nnunetv2."""

from __future__ import annotations

from dataclasses import dataclass

from samdpo.data.splits import check_training_splits
from samdpo.errors import ConfigError
from samdpo.train.selection import check_selection_settings


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class NnunetSettings:
    """Settings of the nnU-Net baseline (nnunetv2's ``2d`` configuration, fold 0: the training splits, validated
    on the validation split).

    Attributes:
        epochs: training epochs of the short schedule; null: nnU-Net's own ``nnUNetTrainer`` and its schedule
            (1000 epochs of 250 iterations, made for a GPU).
        iterations_per_epoch: training iterations (batches) per epoch of the short schedule.
        val_iterations_per_epoch: the per-epoch pseudo-Dice batches of the short schedule, drawn from the
            validation cases (nnU-Net needs at least one).
        device: ``auto`` (a GPU if there is one), ``cpu`` or ``cuda``.
        seed: seeds numpy, torch and random before training (nnU-Net has no seed of its own; its
            augmentation runs in the main process here, so the seed fixes the run).
        processes: worker processes of nnU-Net's fingerprinting and preprocessing.
        splits: the splits whose images and labels it trains on (the paper's 20%: labelled + unlabelled); the
            validation split is nnU-Net's fold-0 validation set, which chooses ``checkpoint_best.pth``.
        patience: (short schedule) end after this many epochs without a new best EMA pseudo Dice (null: never).
        budget_s: (short schedule) end once the training process has used this many CPU seconds (null: no budget).
    """

    epochs: int | None = 60
    iterations_per_epoch: int = 25
    val_iterations_per_epoch: int = 2
    device: str = "auto"
    seed: int = 0
    processes: int = 1
    splits: tuple[str, ...] = ("labeled", "unlabeled")
    patience: int | None = 15
    budget_s: float | None = 900.0

    def __post_init__(self) -> None:
        check_selection_settings("nnunet", 1, self.patience, self.budget_s)
        object.__setattr__(self, "splits", check_training_splits("nnunet.splits", self.splits))
        if self.epochs is not None and (not _is_int(self.epochs) or self.epochs < 1):
            raise ConfigError(
                f"nnunet.epochs must be an integer >= 1 or null (nnU-Net's schedule), got {self.epochs!r}"
            )
        for name, least in (
            ("iterations_per_epoch", 1),
            ("val_iterations_per_epoch", 1),
            ("seed", 0),
            ("processes", 1),
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise ConfigError(f"nnunet.{name} must be an integer >= {least}, got {value!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"nnunet.device must be auto, cpu or cuda, got {self.device!r}")

    @property
    def schedule(self) -> str:
        """The training schedule in words, as a table names it."""
        if self.epochs is None:
            return "nnU-Net's default schedule (nnUNetTrainer: 1000 epochs x 250 iterations)"
        return f"short schedule ({self.epochs} epochs x {self.iterations_per_epoch} iterations)"
