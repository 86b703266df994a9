"""Reliability of the dataset readers and the sample store: bad input gets one line naming the file
or setting, exit 2, no traceback and no output; odd but valid files are read by their real type."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from samdpo.cli import main
from samdpo.data import readers
from samdpo.data.splits import read_splits
from samdpo.data.store import IMAGES, TABLE, SampleStore
from samdpo.errors import DataError
from tests.reliability import expect_error

SHAPE = (24, 32)
Capsys = pytest.CaptureFixture[str]


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
    image.save(path)
    return path


def _lesion(value: int = 255, dtype: type = np.uint8) -> np.ndarray:
    """A (24, 32) mask with a 6 x 8 = 48 pixel box of ``value`` on 0."""
    mask = np.zeros(SHAPE, dtype=dtype)
    mask[4:10, 8:16] = value
    return mask


def _gray(level: int = 120) -> np.ndarray:
    return np.full(SHAPE, level, dtype=np.uint8)


def _busi(root: Path, n: int = 3) -> Path:
    for i in range(1, n + 1):
        _png(root / "benign" / f"benign ({i}).png", _gray())
        _png(root / "benign" / f"benign ({i})_mask.png", _lesion())
    return root


def _cxr(root: Path, n: int = 3, suffix: str = ".png") -> Path:
    for i in range(1, n + 1):
        _png(root / "images" / f"X{i}{suffix}", _gray())
        _png(root / "masks" / f"X{i}{suffix}", _lesion())
    return root


def _montgomery(root: Path, n: int = 3) -> Path:
    for i in range(1, n + 1):
        name = f"MCUCXR_{i:04d}_0.png"
        _png(root / "CXR_png" / name, _gray())
        _png(root / "ManualMask" / "leftMask" / name, _lesion())
        _png(root / "ManualMask" / "rightMask" / name, _lesion())
    return root


@pytest.fixture
def amos_copy(amos_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(amos_root, tmp_path / "amos"))


def _prepare(kind: str, root: Path, out: Path, *extra: str) -> list[str]:
    root_args = ["--kind", kind, "--root", str(root), "--out", str(out)]
    return ["data", "prepare", *root_args, "--image-size", "16", "--no-progress", *extra]


def _summary(kind: str, root: Path, *extra: str) -> list[str]:
    return ["data", "summary", "--kind", kind, "--root", str(root), "--json", *extra]


def _tumour_pixels(root: Path, capsys: Capsys, kind: str = "busi") -> int:
    capsys.readouterr()
    assert main(_summary(kind, root)) == 0
    return next(iter(json.loads(capsys.readouterr().out)["foreground"].values()))


# --- defect 1: masks and images read by their real pixel type -------------------------------------


def _rgba_alpha_mask() -> np.ndarray:
    rgba = np.zeros((*SHAPE, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = _lesion()
    return rgba


def _la_alpha_mask() -> np.ndarray:
    return np.stack([np.full(SHAPE, 200, np.uint8), _lesion()], axis=-1)


def _palette_mask() -> Image.Image:
    image = Image.fromarray(_lesion(1)).convert("P")
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    return image


@pytest.mark.parametrize(
    "kind",
    [
        "rgba_alpha",
        "la_alpha",
        "rgba_opaque_colour",
        "palette",
        "uint16",
        "uint16_12bit",
        "bool",
        "zero_one",
        "antialiased",
    ],
)
def test_busi_mask_pixel_kinds_give_the_drawn_lesion(kind: str, tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "busi", n=1)
    path = root / "benign" / "benign (1)_mask.png"
    if kind == "rgba_alpha":
        _png(path, _rgba_alpha_mask(), "RGBA")
    elif kind == "la_alpha":
        _png(path, _la_alpha_mask(), "LA")
    elif kind == "rgba_opaque_colour":
        _png(path, np.dstack([_lesion()] * 3 + [np.full(SHAPE, 255, np.uint8)]), "RGBA")
    elif kind == "palette":
        _palette_mask().save(path)
    elif kind == "uint16":
        _png(path, _lesion(65535, np.uint16))
    elif kind == "uint16_12bit":
        _png(path, _lesion(4095, np.uint16))
    elif kind == "bool":
        Image.fromarray(_lesion(1).astype(bool)).save(path)
    elif kind == "zero_one":
        _png(path, _lesion(1))
    else:
        mask = _lesion()
        mask[3, 8:16] = 40  # a faint halo row above the box
        _png(path, mask)
    assert _tumour_pixels(root, capsys) == 48


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("label_map", "(a label map?)"),
        ("all_foreground", "not 0 (background)"),
        ("colour_alpha_disagree", "colour and alpha channels draw different masks"),
    ],
)
def test_ambiguous_masks_are_refused(kind: str, needle: str, tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "busi", n=1)
    path = root / "benign" / "benign (1)_mask.png"
    if kind == "label_map":
        mask = _lesion(1)
        mask[12:16, 20:24] = 2
        _png(path, mask)
    elif kind == "all_foreground":
        _png(path, np.full(SHAPE, 255, np.uint8))
    else:
        rgba = np.dstack([_lesion()] * 3 + [np.roll(_lesion(), 10, axis=1)])
        _png(path, rgba, "RGBA")
    expect_error(_summary("busi", root), capsys, "benign (1)_mask.png", needle)


def test_image_with_transparent_pixels_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "busi", n=1)
    rgba = np.dstack([_gray()] * 3 + [_lesion()])
    _png(root / "benign" / "benign (1).png", rgba, "RGBA")
    expect_error(
        _prepare("busi", root, tmp_path / "out"), capsys, "benign (1).png", "transparent", absent=[tmp_path / "out"]
    )


# --- defect 2: 32-bit TIFF radiographs scaled by their range --------------------------------------


@pytest.mark.parametrize(
    "dtype,low,high", [(np.float32, 0.0, 1.0), (np.float32, -1000.0, 3000.0), (np.int32, 0, 70000)]
)
def test_cxr_32bit_tiff_is_scaled_by_its_range(dtype: type, low: float, high: float, tmp_path: Path) -> None:
    root = _cxr(tmp_path / "cxr", n=1)
    (root / "images" / "X1.png").unlink()
    ramp = np.linspace(low, high, SHAPE[0] * SHAPE[1]).reshape(SHAPE).astype(dtype)
    Image.fromarray(ramp).save(root / "images" / "X1.tif")
    [sample] = readers.iter_samples("cxr", root, 32)
    assert sample.image.min() == pytest.approx(0.0, abs=0.02) and sample.image.max() == pytest.approx(1.0, abs=0.02)
    assert sample.image.mean() == pytest.approx(0.5, abs=0.02)


def test_16bit_radiograph_is_scaled_by_the_bits_it_uses(tmp_path: Path) -> None:
    root = _cxr(tmp_path / "cxr", n=1)
    _png(root / "images" / "X1.png", np.full(SHAPE, 2048, np.uint16))  # 12-bit values in a 16-bit file
    [sample] = readers.iter_samples("cxr", root, 32)
    assert sample.image.mean() == pytest.approx(2048 / 4095, abs=1e-3)


@pytest.mark.parametrize(
    "content,needle", [("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("constant", "every pixel")]
)
def test_32bit_tiff_with_nan_inf_or_one_value_is_refused(
    content: str, needle: str, tmp_path: Path, capsys: Capsys
) -> None:
    root = _cxr(tmp_path / "cxr")
    (root / "images" / "X2.png").unlink()
    image = np.full(SHAPE, 7.0, np.float32)
    if content != "constant":
        image[0, 0], image[1, 1] = 0.0, float(content)
    Image.fromarray(image).save(root / "images" / "X2.tif")
    expect_error(_prepare("cxr", root, tmp_path / "out"), capsys, "X2.tif", needle, absent=[tmp_path / "out"])


def test_multi_frame_tiff_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    root = _cxr(tmp_path / "cxr")
    (root / "images" / "X1.png").unlink()
    frames = [Image.fromarray(_gray(v)) for v in (10, 200)]
    frames[0].save(root / "images" / "X1.tif", save_all=True, append_images=frames[1:])
    expect_error(_prepare("cxr", root, tmp_path / "out"), capsys, "X1.tif", "2 frames", absent=[tmp_path / "out"])


# --- defect 3: masks and labels without an image ---------------------------------------------------


@pytest.mark.parametrize("layout", ["paired", "montgomery"])
def test_cxr_mask_without_an_image_is_an_error(layout: str, tmp_path: Path, capsys: Capsys) -> None:
    if layout == "paired":
        root = _cxr(tmp_path / "cxr")
        orphan = _png(root / "masks" / "X9_mask.png", _lesion())
    else:
        root = _montgomery(tmp_path / "cxr")
        orphan = _png(root / "ManualMask" / "rightMask" / "MCUCXR_0099_1.png", _lesion())
    expect_error(_summary("cxr", root), capsys, str(orphan), "mask without an image")


def test_amos_label_without_an_image_is_an_error(amos_copy: Path, capsys: Capsys) -> None:
    shutil.copy(amos_copy / "labelsTr" / "amos_0001.nii.gz", amos_copy / "labelsTr" / "amos_0042.nii.gz")
    expect_error(_summary("amos", amos_copy), capsys, "labelsTr/amos_0042.nii.gz", "label without an image")


def test_cxr_image_with_two_masks_is_an_error(tmp_path: Path, capsys: Capsys) -> None:
    root = _cxr(tmp_path / "cxr")
    _png(root / "masks" / "X2_mask.png", _lesion())
    expect_error(_summary("cxr", root), capsys, "images/X2.png", "two masks")


# --- defect 4: AMOS label voxel size differs from its image ----------------------------------------


def test_amos_label_voxel_size_must_match_the_image(amos_copy: Path, tmp_path: Path, capsys: Capsys) -> None:
    path = amos_copy / "labelsTr" / "amos_0001.nii.gz"
    label = nib.load(path)
    affine = label.affine.copy()
    affine[:3, :3] *= 1.5
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), affine, label.header), path)
    argv = _prepare("amos", amos_copy, tmp_path / "out")
    expect_error(argv, capsys, str(path), "imagesTr/amos_0001.nii.gz", "voxel size", absent=[tmp_path / "out"])
    # a difference within the tolerance is the same grid
    affine = label.affine.copy()
    affine[:3, :3] *= 1.0 + 1e-5
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), affine, label.header), path)
    assert main(_summary("amos", amos_copy)) == 0
    assert len(list(readers.iter_samples("amos", amos_copy, 16))) > 0


# --- defect 5: names that give no case id ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["busi", "cxr", "amos"])
def test_file_name_without_a_usable_case_id_is_refused(
    kind: str, amos_root: Path, tmp_path: Path, capsys: Capsys
) -> None:
    if kind == "busi":
        root = _busi(tmp_path / "busi")
        _png(root / "benign" / "ééé.png", _gray())
        _png(root / "benign" / "ééé_mask.png", _lesion())
        name = "ééé.png"
    elif kind == "cxr":
        root = _cxr(tmp_path / "cxr")
        _png(root / "images" / "Щ.png", _gray())
        _png(root / "masks" / "Щ.png", _lesion())
        name = "Щ.png"
    else:
        root = Path(shutil.copytree(amos_root, tmp_path / "amos"))
        for folder in ("imagesTr", "labelsTr"):
            shutil.copy(root / folder / "amos_0001.nii.gz", root / folder / "ü.nii.gz")
        name = "ü.nii.gz"
    out = tmp_path / "out"
    settings = ["--settings", '{"modality": "all"}'] if kind == "amos" else []
    expect_error(_prepare(kind, root, out, *settings), capsys, name, "case id", "rename", absent=[out])


@pytest.mark.parametrize("names", [("a b.png", "a_b.png"), ("X.png", "x.png")])
def test_two_files_with_one_case_id_are_refused(names: tuple[str, str], tmp_path: Path, capsys: Capsys) -> None:
    root = _cxr(tmp_path / "cxr")
    for name in names:
        _png(root / "images" / name, _gray())
        _png(root / "masks" / name, _lesion())
    expect_error(_summary("cxr", root), capsys, *names, "case id")


def test_same_stem_in_two_letter_cases_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "busi")
    _png(root / "benign" / "benign (1).PNG", _gray())
    expect_error(_summary("busi", root), capsys, "benign (1).PNG", "benign (1).png", "keep one")


# --- defect 6: suffixes in any letter case ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["busi", "cxr_paired", "cxr_montgomery", "amos"])
def test_upper_case_suffixes_are_read(kind: str, amos_root: Path, tmp_path: Path, capsys: Capsys) -> None:
    if kind == "busi":
        root = _busi(tmp_path / "busi")
        os.rename(root / "benign" / "benign (2).png", root / "benign" / "benign (2).PNG")
        os.rename(root / "benign" / "benign (3)_mask.png", root / "benign" / "benign (3)_mask.Png")
    elif kind == "cxr_paired":
        root = _cxr(tmp_path / "cxr")
        os.rename(root / "images" / "X1.png", root / "images" / "X1.PNG")
    elif kind == "cxr_montgomery":
        root = _montgomery(tmp_path / "cxr")
        os.rename(root / "CXR_png" / "MCUCXR_0001_0.png", root / "CXR_png" / "MCUCXR_0001_0.PNG")
    else:
        root = Path(shutil.copytree(amos_root, tmp_path / "amos"))
        os.rename(root / "imagesTr" / "amos_0001.nii.gz", root / "imagesTr" / "amos_0001.NII.GZ")
    reader = kind.split("_")[0]
    assert main(_summary(reader, root)) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == (5 if reader == "amos" else 3)


# --- defect 7: hidden files ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["busi", "cxr", "amos"])
def test_hidden_files_are_ignored(kind: str, amos_root: Path, tmp_path: Path, capsys: Capsys) -> None:
    if kind == "busi":
        root = _busi(tmp_path / "busi")
        folders = [root / "benign"]
    elif kind == "cxr":
        root = _cxr(tmp_path / "cxr")
        folders = [root / "images", root / "masks"]
    else:
        root = Path(shutil.copytree(amos_root, tmp_path / "amos"))
        folders = [root / "imagesTr", root / "labelsTr"]
    for folder in folders:
        first = sorted(p for p in folder.iterdir())[0]
        (folder / f"._{first.name}").write_bytes(b"\x00\x05\x16\x07 resource fork")
        (folder / ".hidden.png").write_bytes(b"not an image")
    assert main(_summary(kind, root)) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == (5 if kind == "amos" else 3)
    assert main(_prepare(kind, root, tmp_path / "out")) == 0


# --- defect 8: file names that are not UTF-8 --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["busi", "cxr"])
@pytest.mark.parametrize("command", ["summary", "prepare"])
def test_latin1_file_name_gets_one_line(kind: str, command: str, tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "data") if kind == "busi" else _cxr(tmp_path / "data")
    folder = root / ("benign" if kind == "busi" else "images")
    raw = _png(tmp_path / "raw.png", _gray()).read_bytes()
    fd = os.open(os.fsencode(folder) + b"/caf\xe9.png", os.O_WRONLY | os.O_CREAT)
    os.write(fd, raw)
    os.close(fd)
    out = tmp_path / "out"
    argv = _summary(kind, root) if command == "summary" else _prepare(kind, root, out)
    expect_error(argv, capsys, "caf\\xe9.png", "not valid UTF-8", "rename", absent=[out])


# --- defect 9: decompression bombs -------------------------------------------------------------------------


@pytest.mark.parametrize("side", [40, 80])  # over the limit (PIL warns) and over twice the limit (PIL raises)
@pytest.mark.parametrize("kind", ["busi", "cxr"])
def test_image_over_max_image_pixels_is_refused(kind: str, side: int, tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "data") if kind == "busi" else _cxr(tmp_path / "data")
    big = np.zeros((side, side), np.uint8)
    big[5:10, 5:10] = 255
    busi_pair = ("benign/benign (2).png", "benign/benign (2)_mask.png")
    image, mask = busi_pair if kind == "busi" else ("images/X2.png", "masks/X2.png")
    _png(root / image, big)
    _png(root / mask, big)
    limit = json.dumps({"max_image_pixels": 1000})
    for argv in (
        _summary(kind, root, "--settings", limit),
        _prepare(kind, root, tmp_path / "out", "--settings", limit),
    ):
        expect_error(argv, capsys, image, "1,000 pixels", "max_image_pixels", absent=[tmp_path / "out"])
    assert main(_summary(kind, root, "--settings", json.dumps({"max_image_pixels": side * side}))) == 0


@pytest.mark.parametrize("value", [0, -5, "big", True, 1.5])
def test_bad_max_image_pixels_setting(value: object, tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "busi")
    expect_error(
        _summary("busi", root, "--settings", json.dumps({"max_image_pixels": value})), capsys, "max_image_pixels"
    )


# --- errors the readers already reported: still one line naming the file or setting ------------------------


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("busi", "BUSI folder does not exist"),
        ("cxr", "chest X-ray folder does not exist"),
        ("amos", "AMOS folder does not exist"),
    ],
)
def test_missing_dataset_folder(kind: str, needle: str, tmp_path: Path, capsys: Capsys) -> None:
    out = tmp_path / "out"
    expect_error(_prepare(kind, tmp_path / "nowhere", out), capsys, "nowhere", needle, absent=[out])


@pytest.mark.parametrize(
    "kind,needle", [("busi", "no BUSI images"), ("cxr", "needs images/"), ("amos", "dataset.json: missing")]
)
def test_empty_dataset_folder(kind: str, needle: str, tmp_path: Path, capsys: Capsys) -> None:
    (tmp_path / "empty").mkdir()
    expect_error(_summary(kind, tmp_path / "empty"), capsys, "empty", needle)


@pytest.mark.parametrize("kind", ["busi", "cxr", "amos"])
def test_image_without_mask(kind: str, amos_root: Path, tmp_path: Path, capsys: Capsys) -> None:
    if kind == "busi":
        root = _busi(tmp_path / "busi")
        (root / "benign" / "benign (2)_mask.png").unlink()
        needles = ("benign (2).png", "no mask file")
    elif kind == "cxr":
        root = _cxr(tmp_path / "cxr")
        (root / "masks" / "X2.png").unlink()
        needles = ("images/X2.png", "no mask")
    else:
        root = Path(shutil.copytree(amos_root, tmp_path / "amos"))
        (root / "labelsTr" / "amos_0002.nii.gz").unlink()
        needles = ("imagesTr/amos_0002.nii.gz", "no label file")
    expect_error(_prepare(kind, root, tmp_path / "out"), capsys, *needles, absent=[tmp_path / "out"])


@pytest.mark.parametrize("which", ["busi_image", "cxr_mask", "amos_image", "amos_label"])
def test_corrupt_file_bytes(which: str, amos_root: Path, tmp_path: Path, capsys: Capsys) -> None:
    if which == "busi_image":
        root = _busi(tmp_path / "busi")
        bad, kind = root / "benign" / "benign (2).png", "busi"
    elif which == "cxr_mask":
        root = _cxr(tmp_path / "cxr")
        bad, kind = root / "masks" / "X3.png", "cxr"
    else:
        root = Path(shutil.copytree(amos_root, tmp_path / "amos"))
        bad, kind = root / ("imagesTr" if which == "amos_image" else "labelsTr") / "amos_0002.nii.gz", "amos"
    bad.write_bytes(bad.read_bytes()[:60] if kind == "amos" else b"\x89PNG\r\n\x1a\n broken")
    needle = "unreadable or truncated NIfTI" if kind == "amos" else "not a readable image"
    expect_error(_prepare(kind, root, tmp_path / "out"), capsys, str(bad), needle, absent=[tmp_path / "out"])


@pytest.mark.parametrize("kind", ["busi", "cxr"])
def test_mask_size_differs_from_image(kind: str, tmp_path: Path, capsys: Capsys) -> None:
    root = _busi(tmp_path / "data") if kind == "busi" else _cxr(tmp_path / "data")
    name = "benign/benign (3)_mask.png" if kind == "busi" else "masks/X3.png"
    mask = _png(root / name, np.zeros((SHAPE[0] + 1, SHAPE[1]), np.uint8))
    expect_error(_summary(kind, root), capsys, str(mask), "mask shape (25, 32) does not match")


def test_amos_shape_and_label_values(amos_copy: Path, tmp_path: Path, capsys: Capsys) -> None:
    path = amos_copy / "labelsTr" / "amos_0003.nii.gz"
    label = nib.load(path)
    data = np.asarray(label.dataobj).copy()
    data[0, 0, 0] = 99
    nib.save(nib.Nifti1Image(data, label.affine, label.header), path)
    expect_error(_summary("amos", amos_copy), capsys, str(path), "outside the class map")
    nib.save(nib.Nifti1Image(data[:, :, :5] * 0, label.affine, label.header), path)
    expect_error(
        _prepare("amos", amos_copy, tmp_path / "out"), capsys, str(path), "does not match", absent=[tmp_path / "out"]
    )


def test_amos_4d_volume(amos_copy: Path, tmp_path: Path, capsys: Capsys) -> None:
    path = amos_copy / "imagesTr" / "amos_0002.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), image.affine), path)
    argv = _prepare("amos", amos_copy, tmp_path / "out")
    expect_error(argv, capsys, str(path), "expected a 3D volume", absent=[tmp_path / "out"])


@pytest.mark.parametrize("content", ["{not json", '{"labels": 3}', '{"labels": {"0": "bg", "2": "liver"}}'])
def test_amos_bad_dataset_json(content: str, amos_copy: Path, capsys: Capsys) -> None:
    (amos_copy / "dataset.json").write_text(content)
    expect_error(_summary("amos", amos_copy), capsys, "dataset.json")


def test_amos_file_not_named_amos_needs_modality_all(amos_copy: Path, capsys: Capsys) -> None:
    for folder in ("imagesTr", "labelsTr"):
        shutil.copy(amos_copy / folder / "amos_0001.nii.gz", amos_copy / folder / "patient7.nii.gz")
    expect_error(_summary("amos", amos_copy), capsys, "patient7.nii.gz", "amos.modality: all")
    assert main(_summary("amos", amos_copy, "--settings", '{"modality": "all"}')) == 0


@pytest.mark.parametrize(
    "kind,settings,needle",
    [
        ("busi", {"include_normals": True}, "include_normals"),
        ("busi", {"include_normal": "yes"}, "busi.include_normal"),
        ("cxr", {"layout": "jsrt"}, "cxr.layout"),
        ("amos", {"modality": "pet"}, "amos.modality"),
        ("amos", {"window_width": 0}, "amos.window_width"),
        ("amos", {"window_width": "wide"}, "amos.window_width"),
        ("amos", {"subsets": "Tr"}, "amos.subsets"),
        ("amos", {"slices": "some"}, "amos.slices"),
    ],
)
def test_bad_reader_setting(kind: str, settings: dict, needle: str, tmp_path: Path, capsys: Capsys) -> None:
    out = tmp_path / "out"
    expect_error(_prepare(kind, tmp_path, out, "--settings", json.dumps(settings)), capsys, needle, absent=[out])


@pytest.mark.parametrize(
    "text,needle", [("{bad", "--settings is not valid JSON"), ("[1, 2]", "--settings must be a JSON object")]
)
def test_bad_settings_json(text: str, needle: str, tmp_path: Path, capsys: Capsys) -> None:
    argv = _prepare("busi", _busi(tmp_path / "busi"), tmp_path / "out", "--settings", text)
    expect_error(argv, capsys, needle, absent=[tmp_path / "out"])


@pytest.mark.parametrize("size", ["8", "0", "-16"])
def test_image_size_too_small(size: str, tmp_path: Path, capsys: Capsys) -> None:
    argv = _prepare("busi", _busi(tmp_path / "busi"), tmp_path / "out")
    argv[argv.index("--image-size") + 1] = size
    expect_error(argv, capsys, "image_size must be at least 16", absent=[tmp_path / "out"])


def test_failed_prepare_leaves_the_previous_store(tmp_path: Path, capsys: Capsys) -> None:
    root, out = _busi(tmp_path / "busi"), tmp_path / "store"
    assert main(_prepare("busi", root, out)) == 0
    before = {path: path.read_bytes() for path in sorted(out.iterdir())}
    (root / "benign" / "benign (3).png").write_bytes(b"\x89PNG broken")
    expect_error(_prepare("busi", root, out), capsys, "benign (3).png", intact=before)
    assert sorted(out.iterdir()) == sorted(before)


@pytest.mark.parametrize("broken", [TABLE, IMAGES])
def test_corrupt_store_is_named(broken: str, tmp_path: Path, capsys: Capsys) -> None:
    store = tmp_path / "store"
    assert main(_prepare("busi", _busi(tmp_path / "busi", n=4), store)) == 0
    (store / broken).write_bytes(b"garbage")
    if broken == TABLE:
        argv = ["data", "split", "--store", str(store), "--out", str(tmp_path / "s.csv")]
        expect_error(argv, capsys, broken, "run the prepare rule again", absent=[tmp_path / "s.csv"])
    else:
        with pytest.raises(DataError, match=f"{broken}: unreadable store array"):
            SampleStore(store).images()


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00garbage\x00\xff", b"", b"case,fold\na,1\n", b"case_id,split\na,train\n"]
)
def test_unreadable_split_table(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "splits.csv").write_bytes(content)
    with pytest.raises(DataError, match="splits.csv"):
        read_splits(tmp_path / "splits.csv")
