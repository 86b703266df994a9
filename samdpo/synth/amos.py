"""Synthetic AMOS-like CT: 3D volumes with the 15 organ labels, written as AMOS 2022 lays them out.

Each case is drawn in a body frame (u: patient right -> left, v: anterior -> posterior, both in
units of the body's half-width / half-depth; w: 0 at the pelvis floor, 1 at the diaphragm dome),
with organ centres, sizes and slice ranges jittered per case and boundaries perturbed by smooth
random fields. The volume is stored in a per-case orientation (flipped / permuted axes with the
matching affine), so readers must reorient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from samdpo import atomic
from samdpo.data.amos import AMOS_CLASSES, write_nifti
from samdpo.errors import ConfigError
from samdpo.synth.shapes import ellipse_level, smooth_field


@dataclass(frozen=True)
class Organ:
    """Mean placement of one organ in the body frame.

    Attributes:
        label: AMOS label value.
        u, v: centre (patient right -> left, anterior -> posterior), body half-axes as units.
        ru, rv: in-plane radii in the same units.
        w0, w1: slice range as fractions of the scanned length (pelvis floor = 0).
        hu: mean intensity in Hounsfield units.
        tube: constant cross-section over [w0, w1] (vessels, oesophagus) instead of an ellipsoid.
    """

    label: int
    u: float
    v: float
    ru: float
    rv: float
    w0: float
    w1: float
    hu: float
    tube: bool = False


# Painted in this order; later organs overwrite earlier ones where they touch.
ORGANS: tuple[Organ, ...] = (
    Organ(6, -0.38, 0.00, 0.55, 0.64, 0.60, 1.02, 62),  # liver
    Organ(1, 0.60, 0.36, 0.23, 0.30, 0.64, 0.92, 52),  # spleen
    Organ(7, 0.32, -0.20, 0.32, 0.30, 0.58, 0.90, 28),  # stomach
    Organ(2, -0.44, 0.46, 0.16, 0.22, 0.44, 0.68, 150),  # right kidney
    Organ(3, 0.44, 0.46, 0.16, 0.22, 0.47, 0.71, 150),  # left kidney
    Organ(4, -0.30, -0.38, 0.11, 0.12, 0.58, 0.70, 8),  # gall bladder
    Organ(13, -0.16, 0.02, 0.13, 0.10, 0.52, 0.64, 32),  # duodenum
    Organ(10, 0.08, 0.10, 0.38, 0.09, 0.57, 0.70, 45),  # pancreas
    Organ(5, 0.05, 0.30, 0.055, 0.055, 0.84, 1.00, 40, tube=True),  # esophagus
    Organ(8, 0.09, 0.40, 0.075, 0.075, 0.28, 1.00, 190, tube=True),  # aorta
    Organ(9, -0.13, 0.32, 0.075, 0.065, 0.30, 0.90, 140, tube=True),  # postcava
    Organ(11, -0.28, 0.36, 0.05, 0.06, 0.70, 0.78, 35),  # right adrenal gland
    Organ(12, 0.28, 0.36, 0.05, 0.06, 0.70, 0.78, 35),  # left adrenal gland
    Organ(14, 0.00, -0.30, 0.26, 0.26, -0.06, 0.20, 6),  # bladder
    Organ(15, 0.00, 0.10, 0.13, 0.12, -0.04, 0.11, 42),  # prostate/uterus
)
#: Stored orientations (nibabel axis codes); the reader must bring each back to RAS.
ORIENTATIONS: tuple[tuple[str, str, str], ...] = (("L", "P", "S"), ("R", "A", "S"), ("P", "L", "S"), ("L", "A", "I"))


@dataclass(frozen=True)
class AmosSynthSettings:
    """Size of the synthetic volumes.

    Attributes:
        size: in-plane voxels per side.
        slices: axial slices per volume (jittered by up to +-10% per case).
        validation_every: every n-th case goes to imagesVa/labelsVa (0 = none).
    """

    size: int = 128
    slices: int = 40
    validation_every: int = 4


def _draw_case(
    rng: np.random.Generator, settings: AmosSynthSettings
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Draw one case in the display frame: (Z, H, W) int16 HU and uint8 labels, and (z, row, col) mm."""
    n = settings.size
    nz = int(round(settings.slices * rng.uniform(0.9, 1.1)))
    pixel = rng.uniform(2.7, 3.3) * 128.0 / n
    slice_mm = 360.0 / nz * rng.uniform(0.95, 1.05)
    rows, cols = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32), indexing="ij")
    half_w, half_d = n * rng.uniform(0.40, 0.46), n * rng.uniform(0.30, 0.35)
    cy, cx = n * rng.uniform(0.48, 0.54), n * rng.uniform(0.48, 0.52)
    u, v = (cols - cx) / half_w, (rows - cy) / half_d
    # relative height of each slice in the abdomen; a random phase per case, so that a few slices per
    # volume still sample every organ's height range across cases (as scans start at varying heights)
    w = ((np.arange(nz, dtype=np.float32) + rng.uniform(0.0, 1.0)) / nz)[:, None, None]
    shape3 = (nz, n, n)
    outline = ellipse_level((u, v), (0.0, 0.0), (1.0, 1.0))[None] * (1 + 0.04 * smooth_field(rng, shape3, (2, 3, 3)))
    body = outline < 1.0
    hu = np.where(body, -95.0, -1000.0).astype(np.float32)
    inner = outline < 0.82
    hu[inner] = (-45.0 + 35.0 * smooth_field(rng, shape3, (3, 6, 6)))[inner]
    spine = (ellipse_level((u, v), (0.0, 0.72), (0.13, 0.17)) < 1.0)[None] & inner
    hu[np.broadcast_to(spine, shape3)] = 650.0
    gas = (smooth_field(rng, shape3, (4, 8, 8)) > 2.2) & inner & (w < 0.6)
    hu[gas] = -700.0
    labels = np.zeros(shape3, dtype=np.uint8)
    for organ in ORGANS:
        scale = rng.uniform(0.85, 1.15)
        cu, cv = organ.u + rng.uniform(-0.05, 0.05), organ.v + rng.uniform(-0.04, 0.04)
        w0, w1 = organ.w0 + rng.uniform(-0.03, 0.03), organ.w1 + rng.uniform(-0.03, 0.03)
        wc, hw = (w0 + w1) / 2, max((w1 - w0) / 2, 0.02)
        level = ellipse_level((u, v), (cu, cv), (organ.ru * scale, organ.rv * scale))[None]
        if organ.tube:
            level = level + np.zeros_like(w)
            level = np.where(np.abs(w - wc) <= hw, level, np.inf)
        else:
            level = level + ((w - wc) / hw) ** 2
        inside = level < 1.0 + 0.35 * smooth_field(rng, shape3, (3, 5, 5))
        inside &= body
        labels[inside] = organ.label
        hu[inside] = organ.hu + 8.0 * smooth_field(rng, shape3, (3, 8, 8))[inside]
    hu += rng.normal(0.0, 12.0, size=shape3).astype(np.float32)
    hu = np.clip(hu, -1024, 3071)
    return np.rint(hu).astype(np.int16), labels, (slice_mm, pixel, pixel)


def _to_nifti(
    display: np.ndarray, spacing: tuple[float, float, float], codes: tuple[str, str, str], origin: np.ndarray
) -> nib.Nifti1Image:
    """Store a (Z, rows, cols) display-frame volume in orientation ``codes`` with the matching affine."""
    ras = np.transpose(display, (2, 1, 0))[::-1, ::-1, :]
    ras_affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    ras_affine[:3, 3] = origin
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(codes)
    )
    data = nib.orientations.apply_orientation(ras, transform)
    affine = ras_affine @ nib.orientations.inv_ornt_aff(transform, ras.shape)
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def dataset_json(training: list[str], validation: list[str]) -> dict:
    """A ``dataset.json`` shaped like AMOS 2022's (including its "arota" spelling)."""
    labels = {"0": "background"} | {str(i + 1): ("arota" if n == "aorta" else n) for i, n in enumerate(AMOS_CLASSES)}
    return {
        "name": "AMOS22-synthetic",
        "description": "Synthetic AMOS-like CT phantoms generated by samdpo (not patient data)",
        "tensorImageSize": "3D",
        "reference": "samdpo synth amos",
        "licence": "CC-BY-4.0",
        "release": "1.0",
        "modality": {"0": "CT"},
        "labels": labels,
        "numTraining": len(training),
        "numValidation": len(validation),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in training],
        "validation": [{"image": f"./imagesVa/{c}.nii.gz", "label": f"./labelsVa/{c}.nii.gz"} for c in validation],
        "test": [],
    }


def write(out: Path, cases: int, seed: int, settings: AmosSynthSettings | None = None) -> None:
    """Write ``cases`` synthetic CT volumes ``amos_0001`` ... into ``out`` in the AMOS layout.

    Raises:
        ConfigError: ``settings.size`` or ``settings.slices`` below 1.
    """
    settings = settings or AmosSynthSettings()
    if settings.size < 1 or settings.slices < 1:
        raise ConfigError(f"synth amos: size and slices must be at least 1, got {settings.size} and {settings.slices}")
    training, validation = [], []
    for index in range(cases):
        rng = np.random.default_rng([seed, index])
        case_id = f"amos_{index + 1:04d}"
        is_val = settings.validation_every > 0 and index % settings.validation_every == settings.validation_every - 1
        subset = "Va" if is_val else "Tr"
        (validation if is_val else training).append(case_id)
        hu, labels, spacing = _draw_case(rng, settings)
        codes = ORIENTATIONS[index % len(ORIENTATIONS)]
        origin = rng.uniform(-200.0, 200.0, size=3).round(2)
        write_nifti(out / f"images{subset}" / f"{case_id}.nii.gz", _to_nifti(hu, spacing, codes, origin))
        write_nifti(out / f"labels{subset}" / f"{case_id}.nii.gz", _to_nifti(labels, spacing, codes, origin))
    atomic.write_text(out / "dataset.json", json.dumps(dataset_json(training, validation), indent=4) + "\n")
