"""A new image in, its masks out, in the image's own format and grid, for ``samdpo segment``.

A volume model (AMOS: CT) takes a NIfTI scan (``.nii.gz`` / ``.nii``), read as the AMOS reader reads a
case (reoriented to RAS+, axial display slices, the recipe's CT window) but with every slice kept and no
labels, and writes a uint8 label NIfTI on the scan's own grid and affine (labels 1..K in the recipe's
class order, as ``dataset.json`` numbers them). A 2D model (BUSI, CXR) takes a PNG, JPEG, BMP or TIFF,
read as its reader reads an image, and writes a PNG of the input's size: 0/255 for one class, the labels
1..K for several.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samdpo.data.sample import Sample
from samdpo.errors import DataError
from samdpo.segment.recipe import Recipe

VOLUME_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: A CT scan reaches air (-1000 HU) outside the body; a volume whose lowest value is above this is not in HU.
CT_AIR_HU = -500.0
#: The group recorded for the samples of an image given to ``samdpo segment``.
GROUP = "segment"


def is_volume_model(recipe: Recipe) -> bool:
    """Whether the recipe's dataset is one of 3D scans (segmented from NIfTI volumes)."""
    return recipe.kind == "amos"


def _suffix(path: Path, choices: tuple[str, ...]) -> str | None:
    return next((suffix for suffix in choices if path.name.lower().endswith(suffix)), None)


def check_paths(recipe: Recipe, model_dir: Path, image: Path, out: Path) -> None:
    """Refuse, before any work, an input of the wrong kind for the model or an output of the wrong format.

    Raises:
        DataError: a 2D image for a volume model, a volume for a 2D model, an unknown file type, a missing
            input, or an output whose suffix is not the input's format.
    """
    volume = is_volume_model(recipe)
    if _suffix(image, VOLUME_SUFFIXES if volume else IMAGE_SUFFIXES) is None:
        other = _suffix(image, IMAGE_SUFFIXES if volume else VOLUME_SUFFIXES)
        wanted = "a NIfTI volume (.nii.gz or .nii)" if volume else f"a 2D image ({', '.join(IMAGE_SUFFIXES)})"
        what = "a 2D image" if other and volume else "a volume" if other else "not a known image file"
        raise DataError(
            f"{image}: {what}; the model in {model_dir} segments {recipe.kind} ({', '.join(recipe.class_names)}) "
            f"from {wanted}"
        )
    if not image.is_file():
        raise DataError(f"{image}: no such file")
    wanted_out = (".nii.gz",) if volume else (".png",)  # the label volume is written gzipped
    if _suffix(out, wanted_out) is None:
        raise DataError(f"{out}: the masks are written as {' or '.join(wanted_out)}, the input's own format")


def read_image(recipe: Recipe, image: Path) -> list[Sample]:
    """The unlabelled samples of ``image`` at the recipe's image size: every axial slice of a scan, or the image.

    Raises:
        DataError: an unreadable or corrupt file, not a 3D volume, or (CT) values that are not Hounsfield units.
    """
    from samdpo.data import files

    reader = recipe.settings("reader")
    case_id = files.case_id(image.name.split(".")[0], image)
    if is_volume_model(recipe):
        from samdpo.data.amos import read_scan, volume_samples

        hu, spacing = read_scan(image)
        if not np.isfinite(hu).all():
            raise DataError(f"{image}: the scan has NaN or infinite voxels")
        lowest = float(hu.min())
        if reader.modality == "ct" and lowest > CT_AIR_HU:
            raise DataError(
                f"{image}: its lowest value is {lowest:g}, no air at -1000 HU: not a CT scan in Hounsfield units "
                "(an MRI, or a normalised image?); the model segments CT"
            )
        slices = volume_samples(
            case_id, GROUP, str(image), hu, None, spacing, recipe.image_size, reader, recipe.class_names
        )
        return list(slices)
    from samdpo.data.image_mask_pairs import image_sample
    from samdpo.data.pngio import read_gray

    gray = read_gray(image, reader.max_image_pixels)
    if len(recipe.class_names) != 1:
        raise DataError(f"{recipe.folder}: a 2D recipe of {len(recipe.class_names)} classes; 2D readers have one")
    return [image_sample(case_id, GROUP, str(image), gray, None, recipe.image_size, recipe.class_names[0])]


def write_masks(recipe: Recipe, image: Path, samples: list[Sample], probs: np.ndarray, out: Path) -> str:
    """Write the masks of ``probs`` (N, T, S, S) uint8, the probabilities x 255 of ``samples``, to ``out`` on
    ``image``'s grid (atomically); returns a line naming the classes found and their size."""
    from samdpo.evaluation.metrics import probability_cut
    from samdpo.evaluation.volume_files import case_slices, slice_label_maps

    maps = slice_label_maps(probs, probability_cut(float(recipe.values["threshold"])))
    if is_volume_model(recipe):
        from samdpo.data.amos import display_shape, label_image_like, write_nifti

        labels = case_slices(display_shape(image), [s.slice_index for s in samples], maps)
        write_nifti(out, label_image_like(image, labels))
        unit = "voxels"
    else:
        from samdpo import atomic
        from samdpo.data.pngio import png_bytes
        from samdpo.data.transforms import resize_label

        labels = resize_label(maps[0], samples[0].original_shape)
        shown = labels * np.uint8(255) if len(recipe.class_names) == 1 else labels
        atomic.write_bytes(out, png_bytes(shown))
        unit = "pixels"
    counts = np.bincount(labels.ravel(), minlength=len(recipe.class_names) + 1)[1:]
    found = [f"{name} {count}" for name, count in zip(recipe.class_names, counts) if count]
    return f"{', '.join(found) or 'nothing found'} ({unit}, of {labels.size} in {'x'.join(map(str, labels.shape))})"
