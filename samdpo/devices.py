"""The torch device a setting names."""

from __future__ import annotations

import torch

from samdpo.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("stage1.device is cuda but no GPU is visible")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else name if name != "auto" else "cpu")
