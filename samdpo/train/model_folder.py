"""The files of a trained model's folder (stage 1, stage 2, the U-Net) and reading its ``settings.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from samdpo.errors import DataError

CHECKPOINT, WEIGHTS, LOSS_CSV, LOSS_PNG, SETTINGS = (
    "checkpoint.pt",
    "model.safetensors",
    "loss.csv",
    "loss.png",
    "settings.json",
)


def read_model_spec(folder: str | Path) -> dict[str, Any]:
    """The ``settings.json`` of a trained model folder (architecture, switches, settings hash)."""
    path = Path(folder) / SETTINGS
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: no readable model settings ({exc}); give a folder written by stage-1 training"
        ) from exc
    if not isinstance(spec, dict):
        raise DataError(f"{path}: not a JSON object; give a folder written by stage-1 training")
    return spec
