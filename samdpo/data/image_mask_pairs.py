"""2D datasets stored as image files with one or more mask files per image (BUSI, chest X-ray)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samdpo.data import files
from samdpo.data.pngio import DEFAULT_MAX_IMAGE_PIXELS, read_gray, read_mask
from samdpo.data.sample import Sample
from samdpo.data.summary import DatasetSummary
from samdpo.data.transforms import resize_image, resize_label
from samdpo.errors import ConfigError, DataError


@dataclass(frozen=True)
class ImageFileSettings:
    """Reader settings shared by the image-file datasets.

    Attributes:
        max_image_pixels: an image or mask file with more pixels than this is refused as a likely
            decompression bomb (PIL's default limit).
    """

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        value = self.max_image_pixels
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"reader setting max_image_pixels must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ImageMaskCase:
    """One image file and the mask files whose union is its target.

    Attributes:
        case_id: filesystem-safe id (also the sample id: one image is one case).
        group: subgroup (BUSI class folder, CXR layout).
        image: the image file.
        masks: mask files, merged by union; empty tuple = no target drawn (BUSI ``normal``).
    """

    case_id: str
    group: str
    image: Path
    masks: tuple[Path, ...]


def check_unique(cases: Sequence[ImageMaskCase], root: Path) -> None:
    """Fail if two files map to the same case id, or if there is no case."""
    files.check_unique((case.case_id, case.image) for case in cases)
    if not cases:
        raise DataError(f"{root}: no images found")


def load_case(case: ImageMaskCase, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Read the (H, W) float gray image in [0, 1] and the (H, W) bool union of its masks."""
    image = read_gray(case.image, max_pixels)
    target = np.zeros(image.shape, dtype=bool)
    for path in case.masks:
        mask = read_mask(path, max_pixels)
        if mask.shape != image.shape:
            raise DataError(f"{path}: mask shape {mask.shape} does not match its image {case.image} {image.shape}")
        target |= mask
    return image, target


def iter_samples(
    cases: Sequence[ImageMaskCase], root: Path, image_size: int, class_name: str, max_pixels: int
) -> Iterator[Sample]:
    """Yield one resized Sample per case; the label map is 0/1 for ``class_name``."""
    for case in cases:
        image, target = load_case(case, max_pixels)
        yield image_sample(
            case.case_id, case.group, str(case.image.relative_to(root)), image, target, image_size, class_name
        )


def image_sample(
    case_id: str,
    group: str,
    source: str,
    image: np.ndarray,
    target: np.ndarray | None,
    image_size: int,
    class_name: str,
) -> Sample:
    """The resized Sample of an (H, W) gray image in [0, 1] and its (H, W) bool ``target`` of ``class_name``
    (None: an image to segment, unlabelled)."""
    height, width = image.shape
    return Sample(
        sample_id=case_id,
        case_id=case_id,
        slice_index=0,
        image=resize_image(image, image_size),
        label=None if target is None else resize_label(target.astype(np.uint8), image_size),
        spacing=(height / image_size, width / image_size),
        spacing_unit="px",
        class_names=(class_name,),
        group=group,
        source=source,
        original_shape=(height, width),
    )


def summarize(kind: str, cases: Sequence[ImageMaskCase], class_name: str, max_pixels: int) -> DatasetSummary:
    """Count images and foreground pixels of ``class_name`` in the original-size masks."""
    total = 0
    for case in cases:
        _, target = load_case(case, max_pixels)
        total += int(target.sum())
    return DatasetSummary(kind, len(cases), len(cases), {class_name: total})
