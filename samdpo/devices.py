"""The torch device a setting names, and the CPU threads a job may use (torch imported on first call)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from samdpo.errors import ConfigError

if TYPE_CHECKING:
    import torch


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("stage1.device is cuda but no GPU is visible")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else name if name != "auto" else "cpu")


def set_threads(count: int) -> None:
    """Torch CPU threads: the job's ``count``, shared by the processes torchrun starts on this machine."""
    import torch

    torch.set_num_threads(max(1, count // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))))
