"""Synthetic phantoms: determinism, layouts, label coverage, orientation variety."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from samdpo.data import amos as amos_reader
from samdpo.synth import amos, busi, cxr
from tests.conftest import tree_bytes


def _write(kind: str, out: Path, seed: int) -> None:
    if kind == "amos":
        amos.write(out, 2, seed, amos.AmosSynthSettings(size=40, slices=12))
    elif kind == "busi":
        busi.write(out, 6, seed)
    else:
        cxr.write(out, 3, seed)


@pytest.mark.parametrize("kind", ["amos", "busi", "cxr"])
def test_same_seed_same_bytes(kind: str, tmp_path: Path) -> None:
    _write(kind, tmp_path / "a", seed=11)
    _write(kind, tmp_path / "b", seed=11)
    _write(kind, tmp_path / "c", seed=12)
    first, second, other = (tree_bytes(tmp_path / n) for n in "abc")
    assert first and first == second
    assert first.keys() == other.keys() or kind == "busi"
    assert first != other


def test_amos_layout_has_all_15_labels_and_real_dataset_json(amos_root: Path) -> None:
    meta = json.loads((amos_root / "dataset.json").read_text())
    assert meta["labels"]["8"] == "arota" and meta["modality"] == {"0": "CT"}
    assert meta["numTraining"] + meta["numValidation"] == 5
    for entry in meta["training"] + meta["validation"]:
        assert (amos_root / entry["image"]).is_file() and (amos_root / entry["label"]).is_file()
    present: set[int] = set()
    for case in amos_reader.list_cases(amos_root, amos_reader.AmosSettings()):
        present |= set(np.unique(np.asanyarray(nib.load(case.label).dataobj)).tolist())
    assert present == set(range(16))


def test_amos_volumes_are_ct_like_with_varied_orientation(amos_root: Path) -> None:
    codes = set()
    for path in sorted(amos_root.glob("images*/*.nii.gz")):
        image = nib.load(path)
        codes.add(nib.aff2axcodes(image.affine))
        hu = np.asanyarray(image.dataobj)
        assert image.get_data_dtype() == np.int16
        assert hu.min() <= -900 and hu.max() >= 300  # air outside the body, bone in the spine
    assert len(codes) >= 3


def test_busi_layout(busi_root: Path) -> None:
    assert sorted(p.name for p in busi_root.iterdir()) == ["benign", "malignant", "normal"]
    assert (busi_root / "benign" / "benign (1).png").is_file()
    assert (busi_root / "benign" / "benign (1)_mask.png").is_file()
    assert list(busi_root.glob("*/*_mask_1.png")), "some images must carry a second mask file"
    normal_masks = list((busi_root / "normal").glob("*_mask.png"))
    assert normal_masks


@pytest.mark.parametrize("layout", ["montgomery", "paired"])
def test_cxr_layouts(layout: str, tmp_path: Path) -> None:
    cxr.write(tmp_path, 2, seed=0, layout=layout)
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    if layout == "montgomery":
        stem = Path(names[0]).name
        assert {f"CXR_png/{stem}", f"ManualMask/leftMask/{stem}", f"ManualMask/rightMask/{stem}"} <= set(names)
    else:
        assert any(n.startswith("images/") for n in names) and any(n.endswith("_mask.png") for n in names)


def test_an_unknown_kind_or_layout_is_a_config_error(tmp_path: Path) -> None:
    """Bad settings are the package's typed error (one line from the CLI), and nothing is written."""
    from samdpo import synth
    from samdpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown phantom kind 'ct'; expected one of \('amos', 'busi', 'cxr'\)"):
        synth.write("ct", tmp_path / "ct", 1, 0)
    with pytest.raises(ConfigError, match=r"layout must be one of \('montgomery', 'paired'\), got 'nih'"):
        synth.write("cxr", tmp_path / "nih", 1, 0, layout="nih")
    for size, slices in ((0, 40), (32, 0), (-3, 40)):  # were ZeroDivisionError / numpy ValueError tracebacks
        with pytest.raises(
            ConfigError, match=f"synth amos: size and slices must be at least 1, got {size} and {slices}"
        ):
            synth.write("amos", tmp_path / "amos", 1, 0, size=size, slices=slices)
    assert not list(tmp_path.iterdir())
