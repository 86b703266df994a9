"""Content fingerprints: one hash of everything that determines a training run's result.

A resumable trainer keys its epoch checkpoint on the fingerprint of its settings, its data (image,
label and prompt arrays, in order) and its initial weights, so a checkpoint written for other data
- another split, a label fixed on disk, a changed prompt - is never resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Tensor elements hashed at a time.
_CHUNK = 1 << 24


def _update(digest: Any, value: Any) -> None:
    """Feed ``value`` to ``digest`` with a type tag, so that different structures never collide."""
    import torch

    if isinstance(value, torch.Tensor):
        flat = value.detach().contiguous().reshape(-1)
        digest.update(f"tensor:{flat.dtype}:{tuple(value.shape)}:".encode())
        for start in range(0, flat.numel(), _CHUNK):  # a GPU tensor comes to the CPU a chunk at a time
            digest.update(flat[start : start + _CHUNK].cpu().view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"array:{array.dtype.str}:{array.shape}:".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"dataclass:{type(value).__qualname__}:".encode())
        _update(digest, {field.name: getattr(value, field.name) for field in dataclasses.fields(value)})
    elif isinstance(value, Mapping):
        digest.update(f"map:{len(value)}:".encode())
        for key in sorted(value, key=str):
            _update(digest, str(key))
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq:{len(value)}:".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(f"json:{json.dumps(value, sort_keys=True, default=str)};".encode())


def fingerprint(value: Any) -> str:
    """SHA-256 (16 hex) of ``value``: nested mappings, sequences, dataclasses, numpy arrays and torch
    tensors (by dtype, shape and bytes) and JSON scalars. Mapping keys are taken in sorted order."""
    digest = hashlib.sha256()
    _update(digest, value)
    return digest.hexdigest()[:16]


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A short stable hash of a model spec."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
