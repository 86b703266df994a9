"""Chest X-ray reader: the Montgomery layout and plain image/mask folder pairs.

- ``montgomery``: ``CXR_png/X.png`` with ``ManualMask/leftMask/X.png`` and ``ManualMask/rightMask/X.png``
  (both lungs merged into one target).
- ``paired``: ``images/X.png`` (or Shenzhen's ``CXR_png/X.png``) with ``masks/X.png`` or ``masks/X_mask.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from samdpo.data import flat
from samdpo.data.sample import Sample
from samdpo.data.summary import DatasetSummary
from samdpo.errors import ConfigError, DataError

CLASS_NAME = "lungs"
LAYOUTS = ("auto", "montgomery", "paired")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class CxrSettings:
    """Reader settings.

    Attributes:
        layout: ``montgomery``, ``paired`` or ``auto`` (Montgomery when ``ManualMask/`` exists).
    """

    layout: str = "auto"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"cxr.layout must be one of {LAYOUTS}, got {self.layout!r}")


def resolve_root(root: Path) -> Path:
    """Accept the dataset folder or a parent holding ``MontgomerySet/``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: chest X-ray folder does not exist")
    nested = root / "MontgomerySet"
    return nested if nested.is_dir() and not (root / "CXR_png").is_dir() else root


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def _montgomery(root: Path) -> list[flat.FlatCase]:
    image_dir, mask_dir = root / "CXR_png", root / "ManualMask"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: missing; the Montgomery layout is CXR_png/ + ManualMask/{{left,right}}Mask/")
    cases = []
    for image in _images(image_dir):
        masks = tuple(mask_dir / side / image.name for side in ("leftMask", "rightMask"))
        for mask in masks:
            if not mask.is_file():
                raise DataError(f"{image}: no lung mask {mask}")
        cases.append(flat.FlatCase(flat.safe_id(image.stem), "montgomery", image, masks))
    return cases


def _paired(root: Path) -> list[flat.FlatCase]:
    image_dir = next((root / name for name in ("images", "CXR_png") if (root / name).is_dir()), None)
    mask_dir = root / "masks"
    if image_dir is None or not mask_dir.is_dir():
        raise DataError(f"{root}: the paired layout needs images/ (or CXR_png/) and masks/ folders")
    by_name = {p.stem: p for p in _images(mask_dir)}
    cases = []
    for image in _images(image_dir):
        mask = by_name.get(image.stem) or by_name.get(f"{image.stem}_mask")
        if mask is None:
            raise DataError(f"{image}: no mask {mask_dir / image.stem}.png or {mask_dir / image.stem}_mask.png")
        cases.append(flat.FlatCase(flat.safe_id(image.stem), "paired", image, (mask,)))
    return cases


def list_cases(root: Path, settings: CxrSettings) -> list[flat.FlatCase]:
    """Pair each radiograph with its lung mask(s) by file name, sorted by name."""
    root = resolve_root(root)
    layout = settings.layout
    if layout == "auto":
        layout = "montgomery" if (root / "ManualMask").is_dir() else "paired"
    cases = _montgomery(root) if layout == "montgomery" else _paired(root)
    flat.check_unique(cases, root)
    return cases


def iter_samples(root: Path, image_size: int, settings: CxrSettings) -> Iterator[Sample]:
    """Yield one Sample per radiograph (class ``lungs``), resized to ``image_size``."""
    return flat.iter_samples(list_cases(root, settings), resolve_root(root), image_size, CLASS_NAME)


def summarize(root: Path, settings: CxrSettings) -> DatasetSummary:
    """Images and lung pixels at original size."""
    return flat.summarize("cxr", list_cases(root, settings), CLASS_NAME)
