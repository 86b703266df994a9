"""AMOS reader: orientation, windowing, resizing, pairing and bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from samdpo.data import amos, readers
from samdpo.data.transforms import window_ct
from samdpo.errors import DataError
from samdpo.synth.amos import dataset_json


def _ras_case(shape=(20, 16, 6)) -> tuple[np.ndarray, np.ndarray]:
    """A RAS+ (X, Y, Z) volume with landmarks: label 6 at the patient's right-anterior-superior corner,
    label 1 at the left-posterior-superior corner, both in the top slice."""
    hu = np.full(shape, -50, dtype=np.int16)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[-4:, -4:, -1] = 6  # max x = right, max y = anterior, max z = superior
    labels[:3, :3, -1] = 1  # min x = left, min y = posterior
    hu[labels > 0] = 100
    return hu, labels


def _write_case(
    root: Path, subset: str, case_id: str, hu: np.ndarray, labels: np.ndarray, codes=("R", "A", "S")
) -> None:
    affine = np.diag([0.8, 0.7, 5.0, 1.0])
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(codes)
    )
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, hu.shape)
    for folder, data in ((f"images{subset}", hu), (f"labels{subset}", labels)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(nib.orientations.apply_orientation(data, transform), new_affine),
            root / folder / f"{case_id}.nii.gz",
        )


def _dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(dataset_json([], [])))
    return root


@pytest.mark.parametrize("codes", [("R", "A", "S"), ("L", "P", "S"), ("P", "L", "I"), ("S", "R", "A")])
def test_any_affine_gives_the_same_radiological_slices(codes, tmp_path: Path) -> None:
    root = _dataset(tmp_path / "amos")
    hu, labels = _ras_case()
    _write_case(root, "Tr", "amos_0001", hu, labels, codes)
    samples = list(readers.iter_samples("amos", root, 16, {"slices": "all"}))
    assert [s.slice_index for s in samples] == list(range(6))  # inferior -> superior
    top = samples[-1].label
    # radiological view: anterior at the top, the patient's right on the image's left
    assert top[0, 0] == 6 and top[-1, -1] == 1
    assert samples[-1].spacing == pytest.approx((0.7 * 16 / 16, 0.8 * 20 / 16))
    assert samples[-1].original_shape == (16, 20)
    assert samples[0].class_names[7] == "aorta"


def test_window_resize_and_foreground_slices(amos_root: Path) -> None:
    assert window_ct(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    samples = list(readers.iter_samples("amos", amos_root, 32, {}))
    everything = list(readers.iter_samples("amos", amos_root, 32, {"slices": "all"}))
    assert 0 < len(samples) < len(everything)
    assert all(s.label.any() for s in samples)
    for s in samples[:5]:
        assert s.image.shape == s.label.shape == (32, 32) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert set(np.unique(s.label)) <= set(range(16))
    assert {s.group for s in samples} == {"Tr", "Va"}
    assert len({s.sample_id for s in samples}) == len(samples)


def test_windowing_follows_settings(amos_root: Path) -> None:
    soft = next(readers.iter_samples("amos", amos_root, 32, {}))
    wide = next(readers.iter_samples("amos", amos_root, 32, {"window_level": 400, "window_width": 2000}))
    assert not np.allclose(soft.image, wide.image)


def test_modality_filter_skips_mri_ids(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "amos")
    hu, labels = _ras_case()
    _write_case(root, "Tr", "amos_0001", hu, labels)
    _write_case(root, "Tr", "amos_0600", hu, labels)
    ids = {c.case_id for c in amos.list_cases(root, amos.AmosSettings())}
    assert ids == {"amos_0001"}
    assert {c.case_id for c in amos.list_cases(root, amos.AmosSettings(modality="mri"))} == {"amos_0600"}


def test_summary_counts_voxels(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "amos")
    hu, labels = _ras_case()
    _write_case(root, "Tr", "amos_0001", hu, labels)
    _write_case(root, "Va", "amos_0002", hu, labels)
    summary = readers.summarize("amos", root)
    assert summary.cases == 2 and summary.slices == 12
    assert summary.foreground["liver"] == 2 * 16 and summary.foreground["spleen"] == 2 * 9
    assert summary.foreground["aorta"] == 0 and len(summary.foreground) == 15


def _copy(amos_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "amos"
    shutil.copytree(amos_root, root)
    return root


def test_truncated_nifti_names_the_file(amos_root: Path, tmp_path: Path) -> None:
    root = _copy(amos_root, tmp_path)
    path = root / "imagesTr" / "amos_0001.nii.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="amos_0001.nii.gz.*unreadable or truncated"):
        list(readers.iter_samples("amos", root, 32))


def test_garbage_nifti_names_the_file(amos_root: Path, tmp_path: Path) -> None:
    root = _copy(amos_root, tmp_path)
    (root / "labelsTr" / "amos_0001.nii.gz").write_bytes(gzip.compress(b"not a nifti"))
    with pytest.raises(DataError, match="labelsTr/amos_0001.nii.gz"):
        readers.summarize("amos", root)


def test_shape_mismatch(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "amos")
    hu, labels = _ras_case()
    _write_case(root, "Tr", "amos_0001", hu, labels)
    nib.save(nib.Nifti1Image(labels[:, :, :4], np.eye(4)), root / "labelsTr" / "amos_0001.nii.gz")
    with pytest.raises(DataError, match="labelsTr/amos_0001.nii.gz: shape .* does not match"):
        list(readers.iter_samples("amos", root, 16))


def test_label_values_outside_class_map(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "amos")
    hu, labels = _ras_case()
    labels[0, 0, 0] = 16
    _write_case(root, "Tr", "amos_0001", hu, labels)
    with pytest.raises(DataError, match=r"label values \[16.0\] are outside the class map 0..15"):
        list(readers.iter_samples("amos", root, 16))


def test_image_without_label(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "amos")
    hu, labels = _ras_case()
    _write_case(root, "Tr", "amos_0001", hu, labels)
    (root / "labelsTr" / "amos_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="amos_0001.nii.gz: no label file"):
        list(readers.iter_samples("amos", root, 16))


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        list(readers.iter_samples("amos", tmp_path / "nowhere", 16))
    root = _dataset(tmp_path / "amos")
    with pytest.raises(DataError, match="no CT volumes"):
        list(readers.iter_samples("amos", root, 16))
    (root / "dataset.json").unlink()
    with pytest.raises(DataError, match="dataset.json: missing"):
        list(readers.iter_samples("amos", root, 16))
