"""AMOS 2022 reader: ``dataset.json``, ``images{Tr,Va}/amos_XXXX.nii.gz``, ``labels{Tr,Va}/``.

Volumes are reoriented to RAS+ whatever their affine, then cut into axial slices shown in the
radiological convention (rows anterior -> posterior, columns patient right -> left).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from samdpo import atomic
from samdpo.data import files
from samdpo.data.sample import Sample
from samdpo.data.summary import DatasetSummary
from samdpo.data.transforms import resize_image, resize_label, window_ct
from samdpo.errors import ConfigError, DataError

#: The 15 AMOS organs, labels 1..15, with the official json's "arota" spelled "aorta".
AMOS_CLASSES: tuple[str, ...] = (
    "spleen",
    "right kidney",
    "left kidney",
    "gall bladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "postcava",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
    "duodenum",
    "bladder",
    "prostate/uterus",
)
_NAME_FIXES = {"arota": "aorta"}
_CASE_ID = re.compile(r"^amos_(\d+)$")
#: AMOS numbers CT scans up to 500 and MRI scans above.
LAST_CT_ID = 500
_NIFTI = (".nii.gz",)
#: Relative difference up to which image and label voxel sizes count as equal.
SPACING_TOLERANCE = 1e-3


@dataclass(frozen=True)
class AmosSettings:
    """Reader settings.

    Attributes:
        subsets: which labelled folder pairs to read (``Tr`` -> imagesTr/labelsTr, ``Va``).
        modality: ``ct`` (ids <= 500), ``mri`` (ids > 500) or ``all``.
        window_level: CT window centre in HU.
        window_width: CT window width in HU.
        slices: ``foreground`` keeps axial slices with any organ, ``all`` keeps every slice.
    """

    subsets: tuple[str, ...] = ("Tr", "Va")
    modality: str = "ct"
    window_level: float = 40.0
    window_width: float = 400.0
    slices: str = "foreground"

    def __post_init__(self) -> None:
        for name in ("window_level", "window_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"amos.{name} must be a number, got {value!r}")
        if isinstance(self.subsets, str):
            raise ConfigError(f"amos.subsets must be a list such as ['Tr', 'Va'], got {self.subsets!r}")
        object.__setattr__(self, "subsets", tuple(self.subsets))
        bad = [s for s in self.subsets if s not in ("Tr", "Va")]
        if bad or not self.subsets:
            raise ConfigError(f"amos.subsets must be a non-empty list of 'Tr'/'Va', got {list(self.subsets)}")
        if self.modality not in ("ct", "mri", "all"):
            raise ConfigError(f"amos.modality must be ct, mri or all, got {self.modality!r}")
        if self.window_width <= 0:
            raise ConfigError(f"amos.window_width must be positive, got {self.window_width}")
        if self.slices not in ("foreground", "all"):
            raise ConfigError(f"amos.slices must be 'foreground' or 'all', got {self.slices!r}")


@dataclass(frozen=True)
class AmosCase:
    """One labelled volume: its id, subset and the two NIfTI paths."""

    case_id: str
    subset: str
    image: Path
    label: Path


def read_class_names(root: Path) -> tuple[str, ...]:
    """Read ``dataset.json``'s ``labels`` and return the names of labels 1..K (aorta fixed)."""
    if not Path(root).is_dir():
        raise DataError(f"{root}: AMOS folder does not exist")
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; an AMOS folder holds dataset.json beside imagesTr/ and labelsTr/")
    try:
        labels = json.loads(path.read_text())["labels"]
        values = sorted((int(k), str(v)) for k, v in labels.items())
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a dataset.json with a 'labels' object ({exc})") from exc
    names = [_NAME_FIXES.get(name.strip().lower(), name.strip().lower()) for value, name in values if value != 0]
    if [v for v, _ in values if v != 0] != list(range(1, len(names) + 1)):
        raise DataError(f"{path}: label values must run 1..K without gaps, got {[v for v, _ in values]}")
    return tuple(names)


def _modality_ok(case_id: str, modality: str, path: Path) -> bool:
    if modality == "all":
        return True
    match = _CASE_ID.match(case_id)
    if match is None:
        raise DataError(f"{path}: cannot tell CT from MRI for a file not named amos_XXXX; set amos.modality: all")
    is_ct = int(match.group(1)) <= LAST_CT_ID
    return is_ct if modality == "ct" else not is_ct


def list_cases(root: Path, settings: AmosSettings) -> list[AmosCase]:
    """Pair ``images{subset}/X.nii.gz`` with ``labels{subset}/X.nii.gz`` by name, sorted by id.

    Hidden files (``._X.nii.gz``) are skipped and suffixes match in any letter case; a label file
    without its image, or two files giving one case id, stop the reader.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: AMOS folder does not exist")
    cases: list[AmosCase] = []
    for subset in settings.subsets:
        image_dir, label_dir = root / f"images{subset}", root / f"labels{subset}"
        images = files.by_stem(image_dir, _NIFTI) if image_dir.is_dir() else {}
        labels = files.by_stem(label_dir, _NIFTI) if label_dir.is_dir() else {}
        for stem, image in sorted(images.items()):
            case_id = files.case_id(stem, image)
            if not _modality_ok(case_id, settings.modality, image):
                continue
            if stem not in labels:
                raise DataError(f"{image}: no label file {label_dir / image.name}")
            cases.append(AmosCase(case_id, subset, image, labels[stem]))
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise DataError(f"{labels[orphans[0]]}: label without an image {image_dir / orphans[0]}.nii.gz")
    if not cases:
        folders = ", ".join(f"images{s}/" for s in settings.subsets)
        raise DataError(f"{root}: no {settings.modality.upper()} volumes amos_XXXX.nii.gz found in {folders}")
    files.check_unique((case.case_id, case.image) for case in cases)
    return cases


def _load(path: Path, *, is_label: bool) -> tuple[np.ndarray, tuple[float, float, float], tuple[str, ...]]:
    """Load a NIfTI volume reoriented to RAS+: (X, Y, Z) array, voxel size in mm, original axcodes."""
    try:
        img = nib.load(str(path))
        axcodes = tuple(nib.aff2axcodes(img.affine))
        canonical = nib.as_closest_canonical(img)
        if is_label:
            data = np.asanyarray(canonical.dataobj)
        else:
            data = canonical.get_fdata(dtype=np.float32)
        zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise DataError(f"{path}: unreadable or truncated NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, zooms, axcodes


def label_volume(path: Path, n_classes: int) -> tuple[np.ndarray, tuple[float, float, float], tuple[str, ...]]:
    """Load a label file reoriented to RAS+: (X, Y, Z) uint8 labels, voxel size in mm, original axcodes.

    Raises:
        DataError: unreadable, not 3D, or values outside 0..n_classes.
    """
    data, zooms, axcodes = _load(path, is_label=True)
    rounded = np.rint(data)
    if not np.array_equal(rounded, data) or rounded.min() < 0 or rounded.max() > n_classes:
        found = np.unique(data)
        bad = [float(v) for v in found if v != np.rint(v) or v < 0 or v > n_classes][:10]
        raise DataError(f"{path}: label values {bad} are outside the class map 0..{n_classes} of dataset.json")
    return rounded.astype(np.uint8), zooms, axcodes


def to_display(volume: np.ndarray) -> np.ndarray:
    """(X, Y, Z) RAS+ volume -> (Z, rows, cols) axial slices, rows anterior->posterior, cols right->left."""
    return np.ascontiguousarray(np.transpose(volume[::-1, ::-1, :], (2, 1, 0)))


def from_display(slices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`: (Z, rows, cols) axial slices -> the (X, Y, Z) RAS+ volume."""
    return np.ascontiguousarray(np.transpose(slices, (2, 1, 0))[::-1, ::-1, :])


def display_shape(image_path: Path) -> tuple[int, int, int]:
    """(Z, rows, cols) of a NIfTI volume's display-oriented slices (:func:`to_display`), from its header.

    Raises:
        DataError: unreadable or not a 3D volume.
    """
    try:
        img = nib.load(str(image_path))
        shape = nib.orientations.apply_orientation(np.empty(img.shape[:3], bool), nib.io_orientation(img.affine)).shape
    except Exception as exc:  # nibabel raises many types for foreign files
        raise DataError(f"{image_path}: unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    if len(img.shape) != 3:
        raise DataError(f"{image_path}: expected a 3D volume, got shape {img.shape}")
    return shape[2], shape[1], shape[0]


def label_image_like(image_path: Path, slices: np.ndarray) -> nib.Nifti1Image:
    """A uint8 label NIfTI on ``image_path``'s own grid and affine from its (Z, rows, cols) display slices.

    The reader's reorientation (to RAS+, then :func:`to_display`) is undone, so that voxel (i, j, k) of the
    result is voxel (i, j, k) of the image; the affine and the voxel size are the image's.

    Raises:
        DataError: an unreadable image, or ``slices`` not of its display shape.
    """
    expected = display_shape(image_path)
    if slices.shape != expected:
        raise DataError(f"{image_path}: label slices of shape {slices.shape}, the image's are {expected}")
    img = nib.load(str(image_path))
    ras = from_display(np.asarray(slices, np.uint8))
    back = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.io_orientation(img.affine)
    )
    data = np.ascontiguousarray(nib.orientations.apply_orientation(ras, back)).astype(np.uint8)
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(data, img.affine, header)
    out.set_qform(img.affine, code=1)
    out.set_sform(img.affine, code=1)
    out.header.set_slope_inter(1.0, 0.0)
    return out


def write_nifti(path: Path, image: nib.Nifti1Image) -> None:
    """Write ``.nii.gz`` atomically, with a fixed gzip timestamp so that the bytes depend on the data only."""
    atomic.write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def _mm(zooms: tuple[float, ...]) -> str:
    return " x ".join(f"{z:g}" for z in zooms)


def read_scan(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A CT NIfTI as display-oriented (Z, H, W) float32 HU slices (:func:`to_display`) and (z, row, col) mm.

    Raises:
        DataError: unreadable, truncated or not a 3D volume.
    """
    image, zooms, _ = _load(path, is_label=False)
    return to_display(image), (zooms[2], zooms[1], zooms[0])


def load_case(case: AmosCase, n_classes: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Load one case as display-oriented (Z, H, W) HU image and uint8 labels plus (z, row, col) mm."""
    image, zooms, image_codes = _load(case.image, is_label=False)
    label, label_zooms, label_codes = label_volume(case.label, n_classes)
    if image.shape != label.shape or image_codes != label_codes:
        raise DataError(
            f"{case.label}: shape {label.shape} / orientation {''.join(label_codes)} does not match "
            f"the image {case.image} ({image.shape} / {''.join(image_codes)})"
        )
    if not np.allclose(zooms, label_zooms, rtol=SPACING_TOLERANCE, atol=0.0):
        raise DataError(
            f"{case.label}: voxel size {_mm(label_zooms)} mm does not match the image {case.image} "
            f"({_mm(zooms)} mm); the label must be drawn on the image's grid"
        )
    spacing = (zooms[2], zooms[1], zooms[0])
    return to_display(image), to_display(label), spacing


def iter_samples(root: Path, image_size: int, settings: AmosSettings) -> Iterator[Sample]:
    """Yield one Sample per kept axial slice of every case, windowed and resized."""
    class_names = read_class_names(Path(root))
    for case in list_cases(Path(root), settings):
        hu, labels, spacing = load_case(case, len(class_names))
        source = str(case.image.relative_to(root))
        yield from volume_samples(
            case.case_id, case.subset, source, hu, labels, spacing, image_size, settings, class_names
        )


def volume_samples(
    case_id: str,
    group: str,
    source: str,
    hu: np.ndarray,
    labels: np.ndarray | None,
    spacing: tuple[float, float, float],
    image_size: int,
    settings: AmosSettings,
    class_names: tuple[str, ...],
) -> Iterator[Sample]:
    """One Sample per kept slice of a display-oriented (Z, H, W) HU volume with (Z, H, W) ``labels``, windowed
    and resized; ``spacing``: (z, row, col) mm. ``labels`` None (a scan to segment): every slice, unlabelled."""
    _, row_mm, col_mm = spacing
    height, width = hu.shape[1:]
    for z in range(hu.shape[0]):
        if labels is not None and settings.slices == "foreground" and not labels[z].any():
            continue
        yield Sample(
            sample_id=f"{case_id}_z{z:03d}",
            case_id=case_id,
            slice_index=z,
            image=resize_image(window_ct(hu[z], settings.window_level, settings.window_width), image_size),
            label=None if labels is None else resize_label(labels[z], image_size),
            spacing=(row_mm * height / image_size, col_mm * width / image_size),
            spacing_unit="mm",
            class_names=class_names,
            group=group,
            source=source,
            original_shape=(height, width),
            slice_count=int(hu.shape[0]),
        )


def summarize(root: Path, settings: AmosSettings) -> DatasetSummary:
    """Count cases, axial slices and voxels per organ in the original label volumes."""
    class_names = read_class_names(Path(root))
    counts = np.zeros(len(class_names) + 1, dtype=np.int64)
    slices = 0
    cases = list_cases(Path(root), settings)
    for case in cases:
        labels, _, _ = label_volume(case.label, len(class_names))
        counts += np.bincount(labels.ravel(), minlength=len(class_names) + 1)
        slices += labels.shape[2]
    return DatasetSummary("amos", len(cases), slices, {n: int(c) for n, c in zip(class_names, counts[1:])})
