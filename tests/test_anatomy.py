"""The anatomical prior (labelled split -> body-frame class maps), the saliency weighting, the
SAM box refinement and the prompt-sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samdpo.errors import ConfigError, DataError
from samdpo.prompts.visual.anatomy import AnatomySettings, body_frame, fit_prior, read_prior, write_prior
from samdpo.prompts.visual.boxes import box_iou, mask_box
from samdpo.prompts.visual.refine import RefineSettings, grow, largest_component, refine_boxes
from samdpo.prompts.visual.saliency_check import class_sensitivity, pair_correlations
from samdpo.prompts.visual.saliency_files import weighted_saliency
from samdpo.sam.specs import build_model

SIZE = 64


def _body(cy: float, cx: float, half_h: float, half_w: float) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return ((rows - cy) / half_h) ** 2 + ((cols - cx) / half_w) ** 2 < 1.0


def _case(cy: float, cx: float, half_h: float, half_w: float) -> tuple[np.ndarray, np.ndarray]:
    """A bright body ellipse with class 1 in its upper-left quadrant and class 2 at its lower right,
    both placed in body units (so they move and scale with the body)."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    u, v = (cols - cx) / half_w, (rows - cy) / half_h
    body = _body(cy, cx, half_h, half_w)
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[((u + 0.4) ** 2 + (v + 0.4) ** 2 < 0.2**2) & body] = 1
    label[((u - 0.45) ** 2 + (v - 0.4) ** 2 < 0.15**2) & body] = 2
    image = np.where(body, 120, 0).astype(np.uint8)
    image[label == 1] = 200
    image[label == 2] = 60
    return image, label


def test_body_frame_is_the_outline_box() -> None:
    image = np.where(_body(30, 34, 20, 25), 100, 0).astype(np.uint8)
    image[5, 5] = 255  # a speck outside the body is ignored
    frame = body_frame(image, 0.05)
    assert (frame.cy, frame.cx) == pytest.approx((30, 34), abs=0.6)
    assert (frame.half_height, frame.half_width) == pytest.approx((20, 25), abs=1.0)
    blank = body_frame(np.zeros((SIZE, SIZE), np.uint8), 0.05)
    assert (blank.cy, blank.half_width) == (31.5, 32.0)


def test_the_prior_follows_the_body_and_finds_each_class() -> None:
    cases = [_case(30, 32, 22, 26), _case(34, 30, 18, 22), _case(31, 33, 24, 28)]
    images, labels = np.stack([c[0] for c in cases]), np.stack([c[1] for c in cases])
    prior = fit_prior(images, labels, ("a", "b", "absent"), AnatomySettings(smoothing=1.0))
    assert list(prior.counts) == [3, 3, 0]
    image, label = _case(28, 36, 16, 20)  # a smaller body elsewhere: the prior moves with it
    maps = prior.image_maps(image)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    for t in (0, 1):
        assert box_iou(mask_box(maps[t] >= 0.5), mask_box(label == t + 1)) > 0.5
        assert maps[t][label == t + 1].mean() > 0.6 and maps[t][label == 2 - t].mean() < 0.1
    assert np.all(maps[2] == 1.0)  # no labelled example: no prior


def test_prior_round_trip_and_errors(tmp_path) -> None:
    image, label = _case(30, 32, 22, 26)
    prior = fit_prior(image[None], label[None], ("a", "b"), AnatomySettings())
    write_prior(prior, tmp_path / "p.npz", {"dataset": "toy"})
    again, meta = read_prior(tmp_path / "p.npz")
    np.testing.assert_array_equal(again.maps, prior.maps)
    assert again.class_names == ("a", "b") and again.settings == prior.settings and meta["dataset"] == "toy"
    with pytest.raises(DataError, match="run the anatomy_prior rule"):
        read_prior(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="labelled split is empty"):
        fit_prior(image[None][:0], label[None][:0], ("a", "b"), AnatomySettings())
    for field, value in (
        ("grid", 2),
        ("extent", 0.0),
        ("smoothing", -1.0),
        ("body_threshold", 1.0),
        ("floor", 1.0),
        ("saliency_power", -0.5),
    ):
        with pytest.raises(ConfigError, match=f"anatomy.{field}"):
            AnatomySettings(**{field: value})


def test_weighted_saliency_moves_the_peak_into_the_prior() -> None:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    saliency = (
        np.exp(-((rows - 10) ** 2 + (cols - 10) ** 2) / 50.0)
        + 0.3 * np.exp(-((rows - 45) ** 2 + (cols - 45) ** 2) / 50.0)
    ).astype(np.float32)
    prior = np.exp(-((rows - 45) ** 2 + (cols - 45) ** 2) / 200.0).astype(np.float32)
    for power in (1.0, 0.5):
        weighted = weighted_saliency(saliency, prior, power)
        assert np.unravel_index(weighted.argmax(), weighted.shape) == (45, 45)
        assert weighted.max() == pytest.approx(saliency.max())
    np.testing.assert_allclose(weighted_saliency(saliency, prior, 0.0), prior / prior.max(), rtol=1e-6)
    assert not weighted_saliency(np.zeros_like(saliency), prior, 0.0).any()  # a constant image gets no box


def test_pair_correlations_and_class_sensitivity() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((SIZE, SIZE))
    same = np.stack([base, 2 * base + 1, rng.random((SIZE, SIZE)), np.full((SIZE, SIZE), 0.5)])
    corr = pair_correlations(same)
    assert corr[0, 1] == pytest.approx(1.0) and abs(corr[0, 2]) < 0.1 and np.isnan(corr[0, 3])
    report = class_sensitivity(same[None, :3], ["a", "b", "c"])
    assert list(report["class"]) == ["a", "b", "c", "all"]
    assert report["mean_correlation"].iloc[-1] == pytest.approx((1.0 + corr[0, 2] + corr[1, 2]) / 3)
    with pytest.raises(ValueError, match="T = 2"):
        class_sensitivity(same[None, :3], ["a", "b"])
    single = class_sensitivity(same[None, :1], ["lungs"])  # one class: no pair, NaN rather than an error
    assert list(single["class"]) == ["lungs", "all"] and single["mean_correlation"].isna().all()


def test_refine_settings_and_helpers() -> None:
    for field, value in (
        ("iterations", -1),
        ("margin", 1.5),
        ("min_area", 0),
        ("threshold", 1.0),
        ("converged_iou", 0.0),
    ):
        with pytest.raises(ConfigError, match=f"refine.{field}"):
            RefineSettings(**{field: value})
    assert grow((1.0, 5.0, 60.0, 62.0), 2, SIZE) == (0.0, 3.0, 62.0, 63.0)
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = mask[4:8, 4:8] = True
    assert largest_component(mask).sum() == 16


def test_refinement_tightens_a_loose_box_on_a_real_sam() -> None:
    """LiteMedSAM, no labels: a box much larger than a bright organ shrinks to it; a tight box stays put."""
    size = 128
    rows, cols = np.mgrid[:size, :size]
    body = ((rows - 64) / 50) ** 2 + ((cols - 64) / 58) ** 2 < 1
    target = ((rows - 55) / 16) ** 2 + ((cols - 48) / 20) ** 2 < 1
    image = np.where(body, 110, 0) + np.where(target, 90, 0) + np.random.default_rng(0).normal(0, 4, (size, size))
    image = np.clip(image, 0, 255).astype(np.uint8)
    truth = mask_box(target)
    model = build_model(
        {"name": "lite_medsam", "image_size": 256}, 1, {"box": True, "points": False, "vqa": False, "llm": False}, 0
    ).eval()
    with torch.inference_mode():
        embedding = model.embed_images(torch.from_numpy(image)[None])
    loose = np.array([grow(truth, 12, size), grow(truth, 1, size)], np.float32)
    boxes, masks, rounds = refine_boxes(
        model, embedding, loose, ["largest", "largest"], size, RefineSettings(iterations=3, margin=1)
    )
    assert box_iou(tuple(loose[0]), truth) < 0.6 and box_iou(tuple(boxes[0]), truth) > 0.8 and rounds[0] >= 2
    assert box_iou(tuple(boxes[1]), truth) > 0.8
    assert 2 * (masks[0] & target).sum() / (masks[0].sum() + target.sum()) > 0.9
    none, empty, zero = refine_boxes(
        model, embedding, loose, ["largest", "largest"], size, RefineSettings(iterations=0)
    )
    np.testing.assert_array_equal(none, loose)
    assert not empty.any() and not zero.any()


def test_box_quality_reports_each_table_per_class() -> None:
    import pandas as pd

    from samdpo.evaluation.box_quality import box_quality

    labels = np.zeros((3, SIZE, SIZE), np.uint8)
    labels[:, 10:20, 10:30] = 1  # class "a" in every image
    labels[2, 40:50, 40:50] = 2  # class "b" in the last one only
    samples = pd.DataFrame({"index": [0, 1, 2], "sample_id": ["s0", "s1", "s2"], "case_id": ["lab", "t1", "t2"]})
    splits = {"lab": "labeled", "t1": "test", "t2": "test"}
    exact = (
        [(s, 0, (10.0, 10.0, 29.0, 19.0)) for s in ("s0", "s1", "s2")]
        + [(s, 1, None) for s in ("s0", "s1")]
        + [("s2", 1, (40.0, 40.0, 49.0, 49.0))]
    )
    half = [(s, c, None if b is None else (b[0], b[1], (b[0] + b[2]) / 2 - 0.5, b[3])) for s, c, b in exact]
    frame = lambda rows: pd.DataFrame(rows, columns=["sample_id", "class_index", "box"])  # noqa: E731
    report = box_quality(labels, samples, splits, {"crf_box": frame(half), "refined_box": frame(exact)}, ["a", "b"])
    assert list(report["class"]) == ["a", "b"] and list(report["n"]) == [2, 1]
    assert report["refined_box"].tolist() == [1.0, 1.0] and report["crf_box"].tolist() == [0.5, 0.5]
    assert report["no_box"].tolist() == [0.0, 0.0]
    for bad in ((29.0, 10.0, 10.0, 19.0), (10.0, 10.0, float("nan"), 19.0)):  # maximum below minimum; NaN
        with pytest.raises(DataError, match=r"crf_box: image s1, class 0: box .* is not XYXY pixels"):
            box_quality(
                labels, samples, splits, {"crf_box": frame([*exact[:1], ("s1", 0, bad), *exact[2:]])}, ["a", "b"]
            )
