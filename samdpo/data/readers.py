"""One entry point over the dataset readers, keyed by dataset kind."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from samdpo.data import amos, busi, cxr
from samdpo.data.sample import Sample
from samdpo.data.summary import DatasetSummary
from samdpo.errors import ConfigError
from samdpo.settings import parse_settings

KINDS = ("amos", "busi", "cxr")
_MODULES: dict[str, tuple[ModuleType, type]] = {
    "amos": (amos, amos.AmosSettings),
    "busi": (busi, busi.BusiSettings),
    "cxr": (cxr, cxr.CxrSettings),
}


def reader_for(kind: str, settings: Mapping[str, Any] | None) -> tuple[ModuleType, Any]:
    """The reader module of a dataset kind and its parsed reader settings (None: the defaults)."""
    if kind not in _MODULES:
        raise ConfigError(f"unknown dataset kind {kind!r}; expected one of {KINDS}")
    module, settings_type = _MODULES[kind]
    return module, parse_settings(settings_type, settings, kind)


def iter_samples(kind: str, root: Path, image_size: int, settings: Mapping[str, Any] | None = None) -> Iterator[Sample]:
    """Yield the 2D samples of the dataset at ``root``, resized to ``image_size`` x ``image_size``."""
    if image_size < 16:
        raise ConfigError(f"image_size must be at least 16 pixels, got {image_size}")
    module, parsed = reader_for(kind, settings)
    return module.iter_samples(Path(root), image_size, parsed)


def summarize(kind: str, root: Path, settings: Mapping[str, Any] | None = None) -> DatasetSummary:
    """Case, slice and foreground counts of the dataset at ``root``."""
    module, parsed = reader_for(kind, settings)
    return module.summarize(Path(root), parsed)
