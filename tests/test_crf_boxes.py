"""The dense CRF and the mask -> box/point prompt step."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from samdpo.errors import ConfigError, DataError
from samdpo.prompts.visual.boxes import BoxSettings, VisualPrompt, box_iou, mask_box, mask_to_prompt
from samdpo.prompts.visual.crf import CrfSettings, crf_mask

SIZE = 64


def _disk(row: float, col: float, radius: float, size: int = SIZE) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (rows - row) ** 2 + (cols - col) ** 2 < radius**2


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture()
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright noisy disk and an off-centre, blurry saliency blob over it."""
    rng = np.random.default_rng(0)
    disk = _disk(30, 34, 12)
    image = np.clip(0.2 + 0.5 * disk + rng.normal(0, 0.03, disk.shape), 0, 1).astype(np.float32)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    saliency = np.exp(-((rows - 27) ** 2 + (cols - 37) ** 2) / (2 * 10.0**2))
    return image, saliency, disk


@pytest.mark.parametrize("unary", ["raw", "sigmoid"])
def test_crf_recovers_the_disk(scene: tuple[np.ndarray, np.ndarray, np.ndarray], unary: str) -> None:
    image, saliency, disk = scene
    mask = crf_mask(image, saliency, CrfSettings(unary=unary, sigmoid_center=0.5))
    assert mask.dtype == bool and mask.shape == disk.shape
    assert _iou(mask, disk) > 0.8
    assert _iou(saliency > 0.5, disk) < _iou(mask, disk)  # the image edges did the work
    uint8_mask = crf_mask(np.rint(image * 255).astype(np.uint8), saliency, CrfSettings(unary=unary, sigmoid_center=0.5))
    np.testing.assert_array_equal(uint8_mask, mask)


@pytest.mark.parametrize("value", [0.0, 0.3, 0.5])
@pytest.mark.parametrize("unary", ["raw", "sigmoid"])
def test_constant_saliency_up_to_one_half_gives_an_empty_mask(
    scene: tuple[np.ndarray, np.ndarray, np.ndarray], value: float, unary: str
) -> None:
    image = scene[0]
    assert not crf_mask(image, np.full(image.shape, value), CrfSettings(unary=unary, sigmoid_center=0.5)).any()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iterations", 0),
        ("iterations", 2.5),
        ("gaussian_sxy", 0.0),
        ("bilateral_srgb", -1.0),
        ("bilateral_compat", -0.5),
        ("sigmoid_gain", float("nan")),
        ("sigmoid_center", 1.5),
        ("unary", "softmax"),
    ],
)
def test_crf_settings_are_validated(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"crf.{field}"):
        CrfSettings(**{field: value})


def test_crf_rejects_bad_inputs(scene: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    image, saliency, _ = scene
    with pytest.raises(ValueError, match="differs"):
        crf_mask(image, saliency[:-1], CrfSettings())
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        crf_mask(np.stack([image] * 3, axis=-1), saliency, CrfSettings())
    nan_saliency = saliency.copy()
    nan_saliency[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        crf_mask(image, nan_saliency, CrfSettings())


def test_box_convention_is_xyxy_with_inclusive_maxima() -> None:
    mask = np.zeros((8, 12), dtype=bool)
    mask[2:5, 5:10] = True  # rows 2..4, columns 5..9
    assert mask_box(mask) == (5.0, 2.0, 9.0, 4.0)
    assert mask_box(np.zeros((4, 4), dtype=bool)) is None
    prompt = mask_to_prompt(mask, mask.astype(float), BoxSettings(min_area=1))
    assert prompt.box == (5.0, 2.0, 9.0, 4.0) and prompt.has_box


def _two_blobs() -> np.ndarray:
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:8, 2:10] = True  # 48 px, left
    mask[10:18, 15:27] = True  # 96 px, right
    mask[0, 29] = True  # a 1 px speck
    return mask


def test_largest_versus_all_components() -> None:
    mask = _two_blobs()
    saliency = np.zeros(mask.shape)
    saliency[4, 5] = 0.7
    saliency[14, 20] = 0.9
    largest = mask_to_prompt(mask, saliency, BoxSettings(mode="largest"))
    assert largest.box == (15.0, 10.0, 26.0, 17.0)
    assert largest.mask.sum() == 96
    both = mask_to_prompt(mask, saliency, BoxSettings(mode="all"))
    assert both.box == (2.0, 2.0, 26.0, 17.0)
    assert both.mask.sum() == 96 + 48
    # one peak per component, largest component first, XY order
    np.testing.assert_array_equal(both.points, np.array([[20, 14], [5, 4]], dtype=np.float32))
    np.testing.assert_array_equal(both.point_labels, [1, 1])


def test_min_area_drops_specks() -> None:
    mask = _two_blobs()
    saliency = np.zeros(mask.shape)
    assert not mask_to_prompt(mask, saliency, BoxSettings(mode="all")).mask[0, 29]
    assert mask_to_prompt(mask, saliency, BoxSettings(mode="all", min_area=1)).box == (2.0, 0.0, 29.0, 17.0)
    speck_only = np.zeros((10, 10), dtype=bool)
    speck_only[5, 5:7] = True
    assert mask_to_prompt(speck_only, np.ones((10, 10)), BoxSettings(min_area=3)).box is None


def test_empty_mask_gives_no_box_and_no_points() -> None:
    settings = BoxSettings(positive_points=3, negative_points=2)
    prompt = mask_to_prompt(np.zeros((16, 16), dtype=bool), np.random.default_rng(1).random((16, 16)), settings)
    assert prompt.box is None and not prompt.has_box
    assert prompt.points.shape == (0, 2) and prompt.points.dtype == np.float32
    assert prompt.point_labels.shape == (0,) and prompt.point_labels.dtype == np.int64
    assert not prompt.mask.any()


def test_points_sit_at_saliency_peaks_inside_and_negatives_outside() -> None:
    rng = np.random.default_rng(2)
    mask = _disk(20, 24, 9, size=48)
    saliency = rng.random(mask.shape)
    settings = BoxSettings(positive_points=3, negative_points=4, negative_margin=2)
    prompt = mask_to_prompt(mask, saliency, settings)
    np.testing.assert_array_equal(prompt.point_labels, [1, 1, 1, 0, 0, 0, 0])
    cols, rows = prompt.points[:, 0].astype(int), prompt.points[:, 1].astype(int)
    positive = prompt.point_labels == 1
    assert mask[rows[positive], cols[positive]].all()
    first = (rows[0], cols[0])
    assert saliency[first] == saliency[mask].max()
    assert len({(r, c) for r, c in zip(rows, cols, strict=True)}) == len(rows)  # spread, no repeats
    far = ~ndimage.maximum_filter(mask, size=5)  # more than 2 px (chessboard) from the mask
    assert far[rows[~positive], cols[~positive]].all()
    assert saliency[rows[3], cols[3]] == saliency[far].min()
    again = mask_to_prompt(mask, saliency, settings)
    np.testing.assert_array_equal(again.points, prompt.points)


def test_box_settings_are_validated() -> None:
    for field, value in [("mode", "biggest"), ("min_area", 0), ("positive_points", -1), ("negative_points", 1.5)]:
        with pytest.raises(ConfigError, match=f"boxes.{field}"):
            BoxSettings(**{field: value})
    with pytest.raises(ValueError):
        mask_to_prompt(np.zeros((4, 4), dtype=bool), np.zeros((4, 5)), BoxSettings())
    with pytest.raises(ValueError):
        VisualPrompt(None, np.zeros((2, 3), np.float32), np.zeros(2, np.int64), np.zeros((4, 4), bool))


def test_box_iou() -> None:
    box = (0.0, 0.0, 9.0, 9.0)  # 10 x 10 = 100 px
    assert box_iou(box, box) == 1.0
    assert box_iou(box, (5.0, 0.0, 14.0, 9.0)) == pytest.approx(50 / 150)
    assert box_iou(box, (9.0, 9.0, 18.0, 18.0)) == pytest.approx(1 / 199)  # touching at one pixel
    assert box_iou(box, (10.0, 0.0, 19.0, 9.0)) == 0.0
    assert box_iou((3.0, 3.0, 3.0, 3.0), (3.0, 3.0, 3.0, 3.0)) == 1.0  # a one-pixel box
    assert box_iou(None, None) == 1.0
    assert box_iou(None, box) == 0.0 and box_iou(box, None) == 0.0
