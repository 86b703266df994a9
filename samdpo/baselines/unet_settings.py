"""Settings of the U-Net baseline (:mod:`samdpo.baselines.unet`), checked without importing torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from samdpo.data.splits import check_training_splits
from samdpo.errors import ConfigError
from samdpo.train.selection import check_selection_settings


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class UnetSettings:
    """Settings of the U-Net baseline.

    Attributes:
        channels: feature channels per level, top to bottom (at least two levels).
        strides: down-sampling stride between consecutive levels (``len(channels) - 1`` values).
        num_res_units: residual units per block (0: plain convolutions).
        epochs: the most passes over the training images.
        lr: Adam learning rate (constant).
        batch_size: images per step.
        seed: seeds the initialisation and the order of the images.
        device: ``auto`` (a GPU if there is one), ``cpu`` or ``cuda``.
        splits: the splits whose images and labels it trains on (the paper's 20%: labelled + unlabelled).
        validate_every: score the validation split's mDice after every this many epochs; the best epoch's
            weights are kept (:mod:`samdpo.train.selection`).
        patience: stop after this many epochs without a better validation mDice (null: run ``epochs``).
        budget_s: stop once the training process has used this many CPU seconds (null: no budget).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    epochs: int = 300
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    splits: tuple[str, ...] = ("labeled", "unlabeled")
    validate_every: int = 1
    patience: int | None = 40
    budget_s: float | None = 1800.0

    def __post_init__(self) -> None:
        check_selection_settings("unet", self.validate_every, self.patience, self.budget_s)
        object.__setattr__(self, "splits", check_training_splits("unet.splits", self.splits))
        for name in ("channels", "strides"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"unet.{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if len(self.channels) < 2 or not all(_is_int(c) and c >= 1 for c in self.channels):
            raise ConfigError(f"unet.channels must be at least two positive integers, got {list(self.channels)}")
        if len(self.strides) != len(self.channels) - 1 or not all(_is_int(s) and s >= 1 for s in self.strides):
            want = len(self.channels) - 1
            raise ConfigError(
                f"unet.strides must be {want} positive integers (one fewer than unet.channels), got "
                f"{list(self.strides)}"
            )
        for name, least in (("num_res_units", 0), ("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise ConfigError(f"unet.{name} must be an integer >= {least}, got {value!r}")
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise ConfigError(f"unet.lr must be a number > 0, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unet.device must be auto, cpu or cuda, got {self.device!r}")


def check_image_size(settings: UnetSettings, image_size: int) -> None:
    """The image side must divide by the total stride and leave at least 2 x 2 pixels at the bottom."""
    total = math.prod(settings.strides)
    if image_size % total or image_size // total < 2:
        raise ConfigError(
            f"unet.strides {list(settings.strides)}: {image_size} px images must divide by their product {total} "
            "and leave at least 2 px at the bottom level"
        )
