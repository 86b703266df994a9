"""Read, convert and write SAM weights without ever unpickling code by accident.

Files read:
- ``.safetensors``: a flat state dict (what :func:`save_weights` and :func:`convert_checkpoint` write);
- anything else through ``torch.load(..., weights_only=True)``: SAM-Med2D's ``sam-med2d_b.pth`` (a dict
  whose ``model`` entry is the state dict) or a vanilla SAM checkpoint (the state dict itself).

A checkpoint made for another input size is fitted to the model: the absolute position embedding is
resized bicubically over its grid and the global-attention blocks' relative position tables linearly
over their length. Every other difference (a missing, an extra or a reshaped tensor) is an error that
lists the keys; nothing is loaded partially.

SAM-Med2D's ``train.py`` saves ``{"model": ..., "optimizer": <Adam object>}``, which
``weights_only=True`` refuses. Such a file is converted once, explicitly, with
:func:`convert_checkpoint` (``trust_pickle=True``); there is no silent ``weights_only=False``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from samdpo.atomic import atomic_path
from samdpo.errors import ConfigError, DataError

SAFETENSORS_SUFFIX = ".safetensors"
#: Keys listed per kind (missing / unexpected / reshaped) in a mismatch error.
_KEYS_SHOWN = 10
_REL_POS_SUFFIXES = ("rel_pos_h", "rel_pos_w")


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize an absolute position embedding over its token grid.

    Args:
        pos_embed: (1, H, W, C) embedding, e.g. vanilla SAM's (1, 64, 64, C) for 1024 px inputs.
        grid: target (h, w) in tokens (input side / patch size).

    Returns:
        (1, h, w, C) tensor of the input's dtype, bicubic with antialiasing (as timm resamples
        ViT position embeddings), so shrinking 64 -> 16 averages instead of skipping tokens.
    """
    x = pos_embed.detach().float().permute(0, 3, 1, 2)
    x = F.interpolate(x, size=grid, mode="bicubic", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a relative position table (L, C) -> (length, C), linearly over L.

    The same interpolation segment_anything's ``get_rel_pos`` applies at run time when a table does
    not fit; L = 2 * tokens - 1 (127 for a 64-token side, 31 for 16).
    """
    x = rel_pos.detach().float().t().unsqueeze(0)
    x = F.interpolate(x, size=length, mode="linear", align_corners=False)
    return x[0].t().to(rel_pos.dtype).contiguous()


def fit_sizes(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Resize the size-dependent tensors of ``state`` to the shapes in ``target`` (the model's).

    Only ``*pos_embed`` (1, H, W, C) and ``*rel_pos_h`` / ``*rel_pos_w`` (L, C) tensors with the same
    width C are resized; every other tensor is returned unchanged, so a real mismatch still shows.
    """
    fitted = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape or value.ndim != want.ndim or value.shape[-1] != want.shape[-1]:
            continue
        if key.endswith("pos_embed") and value.ndim == 4 and value.shape[0] == want.shape[0]:
            fitted[key] = resize_pos_embed(value, (want.shape[1], want.shape[2]))
        elif key.endswith(_REL_POS_SUFFIXES) and value.ndim == 2:
            fitted[key] = resize_rel_pos(value, want.shape[0])
    return fitted


def _listing(title: str, items: list[str]) -> str:
    """One report line: ``title (count): first keys, ... (and N more)``."""
    shown = ", ".join(items[:_KEYS_SHOWN])
    more = f" (and {len(items) - _KEYS_SHOWN} more)" if len(items) > _KEYS_SHOWN else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def mismatch_report(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> str | None:
    """Describe how ``state`` differs from ``target`` in keys and shapes; None when it fits exactly."""
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if not (missing or unexpected or reshaped):
        return None
    report = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of another shape"
    for title, items in (("missing", missing), ("unexpected", unexpected), ("another shape", reshaped)):
        if items:
            report += _listing(title, items)
    return report


def _convert_hint(path: Path) -> str:
    """How to turn a trusted pickled checkpoint into safetensors, once."""
    dst = path.with_suffix(SAFETENSORS_SUFFIX)
    return (
        "If you trust the file (e.g. it is SAM-Med2D's own release or a run of its train.py), convert it once:\n"
        f"  samdpo sam convert {path} {dst} --trust-pickle\n"
        f"and set sam.checkpoint to {dst}"
    )


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: ``obj["model"]`` (SAM-Med2D) or ``obj`` itself."""
    if isinstance(obj, Mapping) and "model" in obj:
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{path}: not a state dict (found {type(obj).__name__})")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConfigError(f"{path}: not a state dict: entry {key!r} holds a {type(value).__name__}, not a tensor")
    return dict(obj)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the state dict of a checkpoint file on the CPU, never executing pickled code.

    Raises:
        DataError: the file is missing or unreadable.
        ConfigError: the file pickles objects other than tensors (see :func:`convert_checkpoint`),
            or holds no state dict.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"SAM checkpoint not found: {file}")
    if file.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(file, device="cpu")
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{file}: unreadable safetensors file: {exc}") from exc
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise ConfigError(
                f"{file}: torch.load(weights_only=True) refuses it: it pickles a {refused.group(1)} object "
                "besides the weights (SAM-Med2D's train.py saves the optimizer object next to 'model'), and "
                f"unpickling that can run arbitrary code.\n{_convert_hint(file)}"
            ) from exc
        raise DataError(f"{file}: not a weights-only PyTorch checkpoint ({str(exc).splitlines()[-1]}).\n{_convert_hint(file)}") from exc
    except Exception as exc:  # the weights-only unpickler runs no code; any other failure is a bad file
        raise DataError(f"{file}: unreadable PyTorch checkpoint: {type(exc).__name__}: {exc}") from exc
    return _state_dict_of(obj, file)


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a checkpoint into ``model`` (strictly, after fitting position embeddings to its size).

    Raises:
        DataError: the file is missing or unreadable.
        ConfigError: the file needs a conversion, or its keys / shapes do not fit the model; the
            message lists up to ten missing, unexpected and reshaped keys with their counts.
    """
    target = model.state_dict()
    state = fit_sizes(read_state_dict(path), target)
    report = mismatch_report(state, target)
    if report is not None:
        raise ConfigError(f"{path}: the checkpoint does not fit the model ({len(target)} tensors): {report}")
    model.load_state_dict(state, strict=True)


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> int:
    """Write a state dict to a safetensors file atomically; returns the number of tensors.

    Tensors are moved to the CPU and made contiguous; tensors that share memory (tied weights)
    are written as separate copies, so every key of ``state`` comes back on reading.
    """
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    return len(tensors)


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> int:
    """Write ``model.state_dict()`` to a safetensors file atomically; returns the number of tensors."""
    return save_state_dict(model.state_dict(), path)


def convert_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], trust_pickle: bool) -> int:
    """Convert a pickled checkpoint (e.g. one saved by SAM-Med2D's train.py) to safetensors, once.

    ``src`` is unpickled with ``weights_only=False``, which runs whatever code the file names: do it
    only for a file from a source you trust. Only the state dict is kept (``model`` entry, or the
    dict itself); the optimizer and anything else are dropped.

    Args:
        src: the ``.pth`` file.
        dst: the ``.safetensors`` file to write (atomically).
        trust_pickle: must be True, to state that ``src`` is trusted.

    Returns:
        The number of tensors written.
    """
    source = Path(src)
    if not trust_pickle:
        raise ConfigError(
            f"convert_checkpoint({source}) unpickles the file with weights_only=False, which can run "
            "arbitrary code stored in it; pass trust_pickle=True only for a file from a source you trust"
        )
    if Path(dst).suffix != SAFETENSORS_SUFFIX:
        raise ConfigError(f"convert_checkpoint: the output must end in {SAFETENSORS_SUFFIX}, got {dst}")
    if not source.is_file():
        raise DataError(f"SAM checkpoint not found: {source}")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ConfigError(f"{source}: the pickle needs a class that cannot be imported here: {exc}") from exc
    except Exception as exc:  # a damaged pickle fails in many ways (EOFError, struct.error, ...)
        raise DataError(f"{source}: unreadable PyTorch checkpoint: {type(exc).__name__}: {exc}") from exc
    return save_state_dict(_state_dict_of(obj, source), dst)
