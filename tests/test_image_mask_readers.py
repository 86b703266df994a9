"""BUSI and chest X-ray readers: mask merging, pairing by name, layouts and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samdpo.data import readers
from samdpo.errors import ConfigError, DataError


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _box_mask(shape, rows, cols, value=255) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = value
    return mask


def test_busi_merges_every_mask_file(tmp_path: Path) -> None:
    shape = (40, 60)
    folder = tmp_path / "Dataset_BUSI_with_GT" / "benign"
    _png(folder / "benign (1).png", np.full((*shape, 3), 120))
    _png(folder / "benign (1)_mask.png", _box_mask(shape, (2, 10), (2, 10)))
    _png(folder / "benign (1)_mask_1.png", _box_mask(shape, (20, 30), (40, 50)))
    _png(folder / "benign (1)_mask_2.png", np.stack([_box_mask(shape, (30, 35), (0, 5))] * 3, -1))  # RGB mask
    [sample] = readers.iter_samples("busi", tmp_path, 60)  # the release folder is found inside the root
    assert sample.sample_id == "benign_1" and sample.class_names == ("tumor",)
    assert sample.original_shape == shape and sample.spacing == pytest.approx((40 / 60, 1.0))
    summary = readers.summarize("busi", tmp_path)
    assert summary.foreground == {"tumor": 64 + 100 + 25}


def test_busi_masks_stored_as_0_1_and_varying_sizes(tmp_path: Path) -> None:
    _png(tmp_path / "malignant" / "malignant (1).png", np.full((30, 50), 100))
    _png(tmp_path / "malignant" / "malignant (1)_mask.png", _box_mask((30, 50), (0, 15), (0, 25), value=1))
    _png(tmp_path / "malignant" / "malignant (2).png", np.full((64, 40), 100))
    _png(tmp_path / "malignant" / "malignant (2)_mask.png", _box_mask((64, 40), (0, 32), (0, 40)))
    samples = list(readers.iter_samples("busi", tmp_path, 32))
    assert [s.sample_id for s in samples] == ["malignant_1", "malignant_2"]
    assert [int(s.label.sum()) for s in samples] == [16 * 16, 16 * 32]
    assert all(s.image.shape == (32, 32) for s in samples)


def test_busi_pairs_by_name_in_natural_order(busi_root: Path) -> None:
    cases = [s.sample_id for s in readers.iter_samples("busi", busi_root, 32)]
    benign = [c for c in cases if c.startswith("benign")]
    assert benign == [f"benign_{i}" for i in range(1, len(benign) + 1)]
    assert not any(c.startswith("normal") for c in cases)
    with_normal = list(readers.iter_samples("busi", busi_root, 32, {"include_normal": True}))
    normals = [s for s in with_normal if s.group == "normal"]
    assert normals and not any(s.label.any() for s in normals)


def test_busi_bad_input(tmp_path: Path) -> None:
    folder = tmp_path / "benign"
    _png(folder / "benign (1).png", np.zeros((8, 8)))
    _png(folder / "benign (10)_mask.png", np.zeros((8, 8)))  # belongs to benign (10), not benign (1)
    with pytest.raises(DataError, match=r"benign \(10\)_mask.png: mask without an image"):
        list(readers.iter_samples("busi", tmp_path, 16))
    (folder / "benign (10)_mask.png").unlink()
    with pytest.raises(DataError, match=r"benign \(1\).png: no mask file"):
        list(readers.iter_samples("busi", tmp_path, 16))
    _png(folder / "benign (1)_mask.png", np.zeros((9, 8)))
    with pytest.raises(DataError, match=r"benign \(1\)_mask.png: mask shape \(9, 8\) does not match"):
        list(readers.iter_samples("busi", tmp_path, 16))
    (folder / "benign (1)_mask.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="not a readable image"):
        list(readers.iter_samples("busi", tmp_path, 16))
    with pytest.raises(DataError, match="no BUSI images"):
        list(readers.iter_samples("busi", tmp_path / "benign", 16))
    with pytest.raises(ConfigError, match="busi.include_normals: unknown setting"):
        list(readers.iter_samples("busi", tmp_path, 16, {"include_normals": True}))


def test_montgomery_merges_left_and_right(tmp_path: Path) -> None:
    shape = (50, 40)
    _png(tmp_path / "MontgomerySet" / "CXR_png" / "MCUCXR_0001_0.png", np.full(shape, 90))
    _png(
        tmp_path / "MontgomerySet" / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png",
        _box_mask(shape, (10, 40), (24, 36)),
    )
    _png(
        tmp_path / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png",
        _box_mask(shape, (10, 40), (4, 16)),
    )
    [sample] = readers.iter_samples("cxr", tmp_path, 40, {"layout": "montgomery"})
    assert sample.sample_id == "mcucxr_0001_0" and sample.group == "montgomery"
    assert readers.summarize("cxr", tmp_path).foreground == {"lungs": 2 * 30 * 12}
    (tmp_path / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png").unlink()
    with pytest.raises(DataError, match="no lung mask .*rightMask/MCUCXR_0001_0.png"):
        list(readers.iter_samples("cxr", tmp_path, 40))


@pytest.mark.parametrize(
    "image_dir,mask_name", [("images", "X1.png"), ("images", "X1_mask.png"), ("CXR_png", "X1_mask.png")]
)
def test_paired_layouts(image_dir: str, mask_name: str, tmp_path: Path) -> None:
    _png(tmp_path / image_dir / "X1.png", np.full((20, 20), 50))
    _png(tmp_path / "masks" / mask_name, _box_mask((20, 20), (0, 10), (0, 20)))
    [sample] = readers.iter_samples("cxr", tmp_path, 20)
    assert sample.label.sum() == 200 and sample.group == "paired"


def test_paired_layout_missing_mask(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "A.png", np.zeros((8, 8)))
    _png(tmp_path / "masks" / "B.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="images/A.png: no mask"):
        list(readers.iter_samples("cxr", tmp_path, 16))
    with pytest.raises(DataError, match="needs images/"):
        list(readers.iter_samples("cxr", tmp_path / "masks", 16))
    with pytest.raises(ConfigError, match="cxr.layout"):
        list(readers.iter_samples("cxr", tmp_path, 16, {"layout": "jsrt"}))


def test_synthetic_cxr_reads_back(cxr_root: Path) -> None:
    samples = list(readers.iter_samples("cxr", cxr_root, 64))
    assert len(samples) == 5
    for s in samples:
        frac = s.label.mean()
        assert 0.1 < frac < 0.5  # two lung fields, a plausible share of the radiograph
        assert s.image[s.label > 0].mean() < s.image[s.label == 0].mean()  # lungs are dark
