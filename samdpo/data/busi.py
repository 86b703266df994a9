"""BUSI reader: ``{benign,malignant,normal}/NAME.png`` with ``NAME_mask.png`` and ``NAME_mask_N.png``.

Every mask file of an image is merged into one target (several BUSI images have a second or third
lesion in ``_mask_1.png`` / ``_mask_2.png``, which common loaders drop). Files are read by their real
pixel type (:mod:`samdpo.data.pngio`); a mask drawn in the alpha channel of an RGBA file over
constant colour is read from its alpha channel.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from samdpo.data import files, image_mask_pairs
from samdpo.data.sample import Sample
from samdpo.data.summary import DatasetSummary
from samdpo.errors import ConfigError, DataError

CLASS_NAME = "tumor"
GROUPS = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<n>\d+))?$")
_RELEASE_FOLDER = "Dataset_BUSI_with_GT"


@dataclass(frozen=True)
class BusiSettings(image_mask_pairs.ImageFileSettings):
    """Reader settings (and ``max_image_pixels``, see :class:`image_mask_pairs.ImageFileSettings`).

    Attributes:
        include_normal: read the ``normal`` folder too (images without a lesion, empty masks).
    """

    include_normal: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.include_normal, bool):
            raise ConfigError(f"busi.include_normal must be true or false, got {self.include_normal!r}")


def resolve_root(root: Path) -> Path:
    """Accept the release folder or its parent (which holds ``Dataset_BUSI_with_GT/``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: BUSI folder does not exist")
    nested = root / _RELEASE_FOLDER
    return nested if nested.is_dir() and not (root / "benign").is_dir() else root


def list_cases(root: Path, settings: BusiSettings) -> list[image_mask_pairs.ImageMaskCase]:
    """Pair each image with all of its mask files by name, sorted by group then natural name order."""
    root = resolve_root(root)
    groups = GROUPS if settings.include_normal else GROUPS[:2]
    cases: list[image_mask_pairs.ImageMaskCase] = []
    for group in groups:
        folder = root / group
        if not folder.is_dir():
            continue
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for name, path in files.by_stem(folder, (".png",)).items():
            match = _MASK.match(name)
            if match:
                masks.setdefault(match["stem"], []).append((int(match["n"] or 0), path))
            else:
                images[name] = path
        orphans = sorted(set(masks) - set(images))
        if orphans:
            raise DataError(f"{min(masks[orphans[0]])[1]}: mask without an image {orphans[0]}.png beside it")
        for stem in sorted(images, key=_natural_key):
            found = [p for _, p in sorted(masks.get(stem, []))]
            if not found:
                raise DataError(f"{images[stem]}: no mask file {stem}_mask.png beside it")
            cases.append(
                image_mask_pairs.ImageMaskCase(files.case_id(stem, images[stem]), group, images[stem], tuple(found))
            )
    if not cases:
        raise DataError(f"{root}: no BUSI images found in {', '.join(g + '/' for g in groups)}")
    image_mask_pairs.check_unique(cases, root)
    return cases


def _natural_key(stem: str) -> tuple[str, int]:
    match = re.search(r"\((\d+)\)\s*$", stem)
    return (stem[: match.start()] if match else stem, int(match.group(1)) if match else -1)


def iter_samples(root: Path, image_size: int, settings: BusiSettings) -> Iterator[Sample]:
    """Yield one Sample per image (class ``tumor``), resized to ``image_size``."""
    cases = list_cases(root, settings)
    return image_mask_pairs.iter_samples(cases, resolve_root(root), image_size, CLASS_NAME, settings.max_image_pixels)


def summarize(root: Path, settings: BusiSettings) -> DatasetSummary:
    """Images and tumour pixels at original size."""
    return image_mask_pairs.summarize("busi", list_cases(root, settings), CLASS_NAME, settings.max_image_pixels)
