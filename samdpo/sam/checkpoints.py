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
Before anything is unpickled that way, the pickle's GLOBAL / STACK_GLOBAL opcodes are read
statically (:func:`pickle_globals`): a file that names anything besides the tensor, container,
optimizer and numpy classes of :data:`_TENSOR_GLOBALS` / :data:`_OBJECT_GLOBALS` (``posix.system``,
``builtins.eval``, ...) is refused even with ``trust_pickle=True``.
"""

from __future__ import annotations

import _compat_pickle
import fnmatch
import importlib
import os
import pickletools
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

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
#: Globals that build tensors and their containers (what ``torch.load(weights_only=True)`` accepts):
#: module -> fnmatch patterns of names. Torch dtypes and qschemes are recognised by type.
_TENSOR_GLOBALS: dict[str, tuple[str, ...]] = {
    "torch": ("*Storage", "*Tensor", "Size", "device"),
    "torch.cuda": ("*Storage", "*Tensor"),
    "torch.sparse": ("*Tensor",),
    "torch.cuda.sparse": ("*Tensor",),
    "torch.storage": ("*Storage",),
    "torch._utils": ("_rebuild_*",),
    "torch._tensor": ("_rebuild_from_type_v2",),
    "torch.nn.parameter": ("Parameter",),
    "torch.serialization": ("_get_layout",),
    "collections": ("OrderedDict", "Counter"),
    "builtins": ("set", "complex", "bytearray"),
    "_codecs": ("encode",),
}
#: Further data-only classes a training script pickles next to the weights (optimizer state, its
#: arguments, numpy scalars). Optimizer and learning-rate scheduler classes of ``torch.optim.*`` are
#: recognised by type. Anything else a pickle names can run code when unpickled.
_OBJECT_GLOBALS: dict[str, tuple[str, ...]] = {
    "collections": ("defaultdict",),
    "builtins": ("dict", "list", "tuple", "frozenset", "slice"),
    "argparse": ("Namespace",),
    "numpy": ("dtype", "ndarray"),
    "numpy.core.multiarray": ("scalar", "_reconstruct"),
    "numpy._core.multiarray": ("scalar", "_reconstruct"),
    "numpy.dtypes": ("*DType",),
}
#: The first pickle of a legacy (non-zip) ``torch.save`` file holds this number; four more pickles follow.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PICKLES = 5
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_UNRESOLVED = "<a STACK_GLOBAL whose name is computed>"


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


def _scan(stream: BinaryIO) -> tuple[set[str], bool]:
    """The globals one pickle on ``stream`` names ("module.name"), and whether it holds the legacy magic number.

    Read statically with :func:`pickletools.genops` (nothing is unpickled). A STACK_GLOBAL takes the two
    strings pushed before it (directly or from the memo); one it cannot resolve is named by :data:`_UNRESOLVED`.
    Extension-registry codes (EXT1/2/4) are named ``"copyreg.extension_<code>"``.
    """
    found: set[str] = set()
    magic = False
    pushed: list[object] = []  # the values of the last two pushes (None: not a string)
    memo: dict[int, object] = {}
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.add(_qualified(*str(arg).split(" ", 1)))
        elif name == "STACK_GLOBAL":
            module, attr = pushed[-2:] if len(pushed) == 2 else [None, None]
            found.add(_qualified(module, attr) if isinstance(module, str) and isinstance(attr, str) else _UNRESOLVED)
        elif name.startswith("EXT"):
            found.add(f"copyreg.extension_{arg}")
        magic = magic or arg == _LEGACY_MAGIC
        if name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in _PUT_OPS:
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name in _GET_OPS:
            pushed = [*pushed, memo.get(int(arg))][-2:]
        elif name not in ("FRAME", "PROTO", "STOP"):
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            pushed = [*pushed, value if name in _STRING_OPS else None][-2:]
    return found, magic


def _qualified(module: str, name: str) -> str:
    """``module.name``, with Python 2 names mapped as the unpickler maps them (``__builtin__`` -> ``builtins``)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _pickles(file: Path) -> Iterator[BinaryIO]:
    """The pickle streams ``torch.load`` unpickles: every ``*.pkl`` member of a zip checkpoint, else the file itself."""
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            members = [m for m in archive.namelist() if m.endswith(".pkl")]
            if not members:
                raise DataError(f"{file}: a zip file without a data.pkl: not a PyTorch checkpoint; check the path")
            for member in members:
                with archive.open(member) as stream:
                    yield stream
    else:
        with file.open("rb") as stream:
            yield stream


def pickle_globals(path: str | os.PathLike[str]) -> list[str]:
    """Every class or function (``"module.name"``, sorted) that unpickling the checkpoint would import and call.

    The pickle is only read (:func:`pickletools.genops`), never run: the ``data.pkl`` of a zip
    checkpoint, the five pickles of a legacy ``torch.save`` file, or a plain pickle.

    Raises:
        DataError: the file is missing, or neither a zip checkpoint nor a pickle.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"SAM checkpoint not found: {file}")
    found: set[str] = set()
    try:
        for stream in _pickles(file):
            names, magic = _scan(stream)
            found |= names
            for _ in range(_LEGACY_PICKLES - 1 if magic else 0):
                found |= _scan(stream)[0]
    except (
        ValueError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
    ) as exc:  # genops: unknown opcode, truncated
        raise DataError(
            f"{file}: unreadable: neither a PyTorch checkpoint nor a pickle ({exc}); it is not a checkpoint: "
            "check the path or download the file again"
        ) from exc
    return sorted(found)


def _matches(qualified: str, table: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether ``module.name`` is in ``table`` (name a plain identifier matching one of the module's patterns)."""
    module, _, name = qualified.rpartition(".")
    return name.isidentifier() and any(fnmatch.fnmatchcase(name, pattern) for pattern in table.get(module, ()))


def _is_tensor_global(qualified: str) -> bool:
    """A global that builds tensors (storages, rebuild functions, dtypes, OrderedDict, ...)."""
    module, _, name = qualified.rpartition(".")
    if (
        module == "torch"
        and name.isidentifier()
        and isinstance(getattr(torch, name, None), (torch.dtype, torch.qscheme))
    ):
        return True
    return _matches(qualified, _TENSOR_GLOBALS)


def _is_known_global(qualified: str) -> bool:
    """A global that builds data only: tensors, containers, optimizer / scheduler state, numpy scalars."""
    if _is_tensor_global(qualified) or _matches(qualified, _OBJECT_GLOBALS):
        return True
    module, _, name = qualified.rpartition(".")
    if not (module.startswith("torch.optim.") and name.isidentifier()):
        return False
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    kinds = (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    return isinstance(found, type) and issubclass(found, kinds)


def pickled_objects(path: str | os.PathLike[str]) -> list[str]:
    """The non-tensor classes a pickled checkpoint names (e.g. ``torch.optim.adam.Adam``), after checking them all.

    Raises:
        DataError: the file is missing or not a checkpoint.
        ConfigError: the file names a global that can run code (``posix.system``, ``builtins.eval``, ...):
            unpickling it, even to convert it, would run that.
    """
    names = pickle_globals(path)
    unknown = [name for name in names if not _is_known_global(name)]
    if unknown:
        raise ConfigError(
            f"{path}: the file tries to call {', '.join(unknown)} when unpickled, which is not a tensor, container or "
            "optimizer class and can run any code (e.g. a shell command); loading or converting it would execute that. "
            "Do not load or convert this file; get the weights from their original source"
        )
    return [name for name in names if not _is_tensor_global(name)]


class TrustNeeded(ConfigError):
    """Converting ``source`` unpickles the ``objects`` it names; the caller must say the file is trusted."""

    def __init__(self, source: Path, objects: list[str]) -> None:
        self.source, self.objects = source, objects
        super().__init__(self.explain("trust_pickle=True"))

    def explain(self, how: str) -> str:
        """The refusal, saying to pass ``how`` (``trust_pickle=True``, ``--trust-pickle``)."""
        named = ", ".join(self.objects) or "tensor classes only"
        return (
            f"{self.source}: converting unpickles the file with weights_only=False, which runs the code of the "
            f"classes it names ({named}: known optimizer, container and tensor classes); pass {how} only for a file "
            "you trust"
        )


def _convert_hint(path: Path, objects: list[str]) -> str:
    """Why a checkpoint of known classes needs a conversion, and the command to convert it once."""
    dst = path.with_suffix(SAFETENSORS_SUFFIX)
    return (
        f"torch.load(weights_only=True) refuses it: besides the weights it pickles {', '.join(objects)} objects "
        "(SAM-Med2D's train.py saves the optimizer object next to 'model'). Converting unpickles it with "
        "weights_only=False, which runs those classes' code; every global it names is a known optimizer, "
        "container or tensor class, so if you trust the file (e.g. SAM-Med2D's own release or a run of its "
        "train.py), convert it once:\n"
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
        DataError: the file is missing or unreadable (not a checkpoint at all).
        ConfigError: the file pickles objects other than tensors: known optimizer / container classes
            (the message says how to convert it, see :func:`convert_checkpoint`) or a global that can run
            code (the message names it and says not to load the file); or it holds no state dict.
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
    except Exception as exc:  # the weights-only unpickler runs no code; find out why it refused
        objects = pickled_objects(file)  # a file that names code, or is no pickle at all, is refused here
        if objects:
            raise ConfigError(f"{file}: {_convert_hint(file, objects)}") from exc
        lines = [line for line in str(exc).splitlines() if line.strip()] or [""]
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1])
        raise DataError(f"{file}: unreadable PyTorch checkpoint: {type(exc).__name__}: {reason}") from exc
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

    ``src`` is unpickled with ``weights_only=False``, which runs the code of the classes the file
    names: do it only for a file from a source you trust. A file that names any global besides known
    tensor, container, optimizer and numpy classes (see :func:`pickled_objects`) is refused even then.
    Only the state dict is kept (``model`` entry, or the dict itself); the optimizer and anything else
    are dropped.

    Args:
        src: the ``.pth`` file.
        dst: the ``.safetensors`` file to write (atomically).
        trust_pickle: must be True, to state that ``src`` is trusted.

    Returns:
        The number of tensors written.

    Raises:
        TrustNeeded: ``trust_pickle`` is False (a ConfigError naming the classes the file pickles).
        ConfigError: the file names a global that can run code, or the output is not ``.safetensors``.
        DataError: the file is missing or unreadable.
    """
    source = Path(src)
    if Path(dst).suffix != SAFETENSORS_SUFFIX:
        raise ConfigError(f"convert_checkpoint: the output must end in {SAFETENSORS_SUFFIX}, got {dst}")
    objects = pickled_objects(source)  # refuses a file that names code, trusted or not
    if not trust_pickle:
        raise TrustNeeded(source, objects)
    try:
        obj = torch.load(source, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ConfigError(f"{source}: the pickle needs a class that cannot be imported here: {exc}") from exc
    except Exception as exc:  # a damaged pickle fails in many ways (EOFError, struct.error, ...)
        raise DataError(f"{source}: unreadable PyTorch checkpoint: {type(exc).__name__}: {exc}") from exc
    return save_state_dict(_state_dict_of(obj, source), dst)
