"""Chest X-ray reader: the Montgomery layout and plain image/mask folder pairs.

- ``montgomery``: ``CXR_png/X.png`` with ``ManualMask/leftMask/X.png`` and ``ManualMask/rightMask/X.png``
  (both lungs merged into one target).
- ``paired``: ``images/X.png`` (or Shenzhen's ``CXR_png/X.png``) with ``masks/X.png`` or ``masks/X_mask.png``.

Images and masks may be PNG, JPEG, BMP or TIFF (any letter case, read by their real pixel type: see
:mod:`samdpo.data.pngio`); an image without its mask(s), a mask without its image, and an image with
both ``X`` and ``X_mask`` masks stop the reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from samdpo.data import files, image_mask_pairs
from samdpo.data.sample import Sample
from samdpo.data.summary import DatasetSummary
from samdpo.errors import ConfigError, DataError

CLASS_NAME = "lungs"
LAYOUTS = ("auto", "montgomery", "paired")
#: Image and mask file suffixes, matched in any letter case.
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class CxrSettings(image_mask_pairs.ImageFileSettings):
    """Reader settings (and ``max_image_pixels``, see :class:`image_mask_pairs.ImageFileSettings`).

    Attributes:
        layout: ``montgomery``, ``paired`` or ``auto`` (Montgomery when ``ManualMask/`` exists).
    """

    layout: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in LAYOUTS:
            raise ConfigError(f"cxr.layout must be one of {LAYOUTS}, got {self.layout!r}")


def resolve_root(root: Path) -> Path:
    """Accept the dataset folder or a parent holding ``MontgomerySet/``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: chest X-ray folder does not exist")
    nested = root / "MontgomerySet"
    return nested if nested.is_dir() and not (root / "CXR_png").is_dir() else root


def _check_orphans(masks: dict[str, Path], claimed: set[str], image_dir: Path) -> None:
    """Fail on a mask file (stem -> path) whose stem no image claims."""
    orphans = sorted(set(masks) - claimed)
    if orphans:
        raise DataError(f"{masks[orphans[0]]}: mask without an image {orphans[0]}.* in {image_dir}")


def _montgomery(root: Path) -> list[image_mask_pairs.ImageMaskCase]:
    image_dir, mask_dir = root / "CXR_png", root / "ManualMask"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: missing; the Montgomery layout is CXR_png/ + ManualMask/{{left,right}}Mask/")
    images = files.by_stem(image_dir, _IMAGE_SUFFIXES)
    sides = {side: mask_dir / side for side in ("leftMask", "rightMask")}
    masks = {side: files.by_stem(folder, _IMAGE_SUFFIXES) if folder.is_dir() else {} for side, folder in sides.items()}
    cases = []
    for stem, image in sorted(images.items()):
        for side, found in masks.items():
            if stem not in found:
                raise DataError(f"{image}: no lung mask {sides[side] / image.name}")
        pair = tuple(found[stem] for found in masks.values())
        cases.append(image_mask_pairs.ImageMaskCase(files.case_id(stem, image), "montgomery", image, pair))
    for found in masks.values():
        _check_orphans(found, set(images), image_dir)
    return cases


def _paired(root: Path) -> list[image_mask_pairs.ImageMaskCase]:
    image_dir = next((root / name for name in ("images", "CXR_png") if (root / name).is_dir()), None)
    mask_dir = root / "masks"
    if image_dir is None or not mask_dir.is_dir():
        raise DataError(f"{root}: the paired layout needs images/ (or CXR_png/) and masks/ folders")
    images, masks = files.by_stem(image_dir, _IMAGE_SUFFIXES), files.by_stem(mask_dir, _IMAGE_SUFFIXES)
    cases = []
    for stem, image in sorted(images.items()):
        found = [masks[name] for name in (stem, f"{stem}_mask") if name in masks]
        if not found:
            raise DataError(f"{image}: no mask {mask_dir / stem}.png or {mask_dir / stem}_mask.png")
        if len(found) > 1:
            raise DataError(f"{image}: two masks {found[0]} and {found[1]}; keep one")
        cases.append(image_mask_pairs.ImageMaskCase(files.case_id(stem, image), "paired", image, (found[0],)))
    _check_orphans(masks, set(images) | {f"{stem}_mask" for stem in images}, image_dir)
    return cases


def list_cases(root: Path, settings: CxrSettings) -> list[image_mask_pairs.ImageMaskCase]:
    """Pair each radiograph with its lung mask(s) by file name, sorted by name."""
    root = resolve_root(root)
    layout = settings.layout
    if layout == "auto":
        layout = "montgomery" if (root / "ManualMask").is_dir() else "paired"
    cases = _montgomery(root) if layout == "montgomery" else _paired(root)
    image_mask_pairs.check_unique(cases, root)
    return cases


def iter_samples(root: Path, image_size: int, settings: CxrSettings) -> Iterator[Sample]:
    """Yield one Sample per radiograph (class ``lungs``), resized to ``image_size``."""
    cases = list_cases(root, settings)
    return image_mask_pairs.iter_samples(cases, resolve_root(root), image_size, CLASS_NAME, settings.max_image_pixels)


def summarize(root: Path, settings: CxrSettings) -> DatasetSummary:
    """Images and lung pixels at original size."""
    return image_mask_pairs.summarize("cxr", list_cases(root, settings), CLASS_NAME, settings.max_image_pixels)
