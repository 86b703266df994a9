"""How a SAM model predicts the slices of a volume (the ``predict`` section); torch-free, so that the settings
check every Snakemake start runs imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from samdpo.errors import ConfigError

#: How a volume's slices are predicted (:class:`PredictSettings`).
VOLUME_MODES = ("independent", "propagate")


@dataclass(frozen=True)
class PredictSettings:
    """How a SAM model predicts (the ``predict`` section).

    Attributes:
        volume: ``independent`` (every slice on its own) or ``propagate``
            (:func:`samdpo.train.predict.predict_volumes`).
        margin: pixels a propagated box is grown by on every side.
    """

    volume: str = "independent"
    margin: int = 2

    def __post_init__(self) -> None:
        if self.volume not in VOLUME_MODES:
            raise ConfigError(f"predict.volume must be one of {', '.join(VOLUME_MODES)}, got {self.volume!r}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, int) or self.margin < 0:
            raise ConfigError(f"predict.margin must be an integer >= 0, got {self.margin!r}")
