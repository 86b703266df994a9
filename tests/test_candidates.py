"""Candidate sources, the bit-packed candidate file, diversity selection, the empty candidate of absent
organs, K-candidate preference weights and the stage-2 grade gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samdpo.align.annotator import annotate, position_weights, preference_weights
from samdpo.align.candidate_draws import draw_count, draw_masks, perturb_prompts
from samdpo.align.candidates import (
    CandidateSettings,
    build_candidates,
    candidate_labels,
    choose_candidates,
    pack_masks,
    read_candidates,
    select_diverse,
    threshold_masks,
    unpack_masks,
    write_candidates,
)
from samdpo.align.pairs import WITHIN_GAP, preference_pairs
from samdpo.align.stage2_settings import Stage2Settings
from samdpo.errors import ConfigError, DataError
from samdpo.settings import parse_settings
from samdpo.train.batches import make_batch
from tests.prompt_rows import SIZE
from tests.stage1_data import small_model, training_data


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_packed_masks_round_trip_any_size() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 7, 10, 32):
        masks = rng.random((2, 3, 4, size, size)) > 0.5
        packed = pack_masks(masks)
        assert packed.shape == (2, 3, 4, (size * size + 7) // 8) and packed.dtype == np.uint8
        assert np.array_equal(unpack_masks(packed, size), masks)


def test_select_diverse_starts_with_the_answer_and_takes_the_farthest() -> None:
    answer = _square(20, 5, 5, 8)
    near = _square(20, 5, 5, 9)  # IoU 64/81 with the answer
    far = _square(20, 0, 12, 8)  # disjoint from the answer
    pool = np.stack([answer, near, answer.copy(), far])
    assert select_diverse(pool, 3).tolist() == [0, 3, 1]
    # fewer distinct masks than asked: the last choice repeats (identical candidates tie)
    assert select_diverse(np.stack([answer, answer]), 3).tolist() == [0, 0, 0]


def test_empty_candidate_is_always_chosen_and_candidates_ordered_by_area() -> None:
    pool = np.stack([_square(16, 2, 2, 6), _square(16, 2, 2, 8), _square(16, 8, 8, 4)])
    chosen = choose_candidates(pool, 3, empty=True)
    areas = chosen.reshape(3, -1).sum(1).tolist()
    assert areas == [64, 36, 0] or areas == [64, 16, 0] or areas == [36, 16, 0]
    assert not chosen[-1].any()
    assert choose_candidates(np.zeros((2, 16, 16), bool), 4, empty=True).sum() == 0  # nothing found: all empty


def test_paper_candidates_are_the_threshold_masks_unchanged() -> None:
    probs = np.zeros((2, 3, 12, 12), np.uint8)
    probs[:, :, 2:9, 2:9] = 100
    probs[:, :, 4:7, 4:7] = 220
    packed, origin = build_candidates(CandidateSettings(), probs, None)
    assert np.array_equal(unpack_masks(packed, 12), threshold_masks(probs, (0.3, 0.4, 0.5, 0.6)))
    assert origin == {"thresholds": 2 * 3 * 4}
    assert candidate_labels({"count": 4, "candidates": CandidateSettings().describe()})[0] == "p >= 0.3"


def test_combined_sources_give_k_distinct_candidates_with_the_empty_one() -> None:
    probs = np.zeros((1, 1, 16, 16), np.uint8)
    probs[0, 0, 4:12, 4:12] = 200
    draws = np.stack([_square(16, 2, 2, 12), _square(16, 6, 6, 4), _square(16, 4, 4, 9)])[None, None]
    settings = CandidateSettings(source=("thresholds", "perturb"), empty=True, draws=3)
    packed, origin = build_candidates(settings, probs, draws)
    masks = unpack_masks(packed, 16)[0, 0]
    assert masks.shape == (4, 16, 16) and not masks[-1].any()
    assert len({m.tobytes() for m in masks}) == 4  # four different masks
    assert origin["empty"] == 1 and sum(origin.values()) == 4
    with pytest.raises(ValueError, match="draws"):
        build_candidates(settings, probs, None)


def test_bad_candidate_settings_name_the_setting() -> None:
    for values, match in (
        ({"source": ["sampling"]}, "source"),
        ({"source": []}, "source"),
        ({"count": 1}, "count"),
        ({"thresholds": [0.6, 0.3]}, "ascending"),
        ({"draws": 0}, "draws"),
        ({"colour": 1}, "align.candidates.colour"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse_settings(CandidateSettings, values, "align.candidates")


def test_candidate_files_round_trip_and_old_files_are_refused(tmp_path: Path) -> None:
    masks = np.random.default_rng(1).random((2, 3, 4, 10, 10)) > 0.5
    meta = {"sample_ids": ["a", "b"], "class_names": ["x", "y", "z"], "count": 4, "size": 10, "candidates": {}}
    write_candidates(tmp_path / "c", pack_masks(masks), meta)
    read = read_candidates(tmp_path / "c")
    assert read.count == 4 and read.size == 10
    assert np.array_equal(read.masks(1), masks[1]) and np.array_equal(read.masks(0, 2), masks[0, 2])
    assert np.array_equal(read.masks(np.array([1, 0]), np.array([2, 1])), masks[[1, 0], [2, 1]])
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "candidates.npy", np.zeros((2, 3, 10, 10), np.uint8))
    (old / "candidates.json").write_text(json.dumps({"sample_ids": ["a", "b"], "class_names": ["x", "y", "z"]}))
    with pytest.raises(DataError, match="lacks.*rerun the candidates rule"):
        read_candidates(old)


def test_absent_organ_grades_the_empty_candidate_best() -> None:
    candidates = np.stack([_square(12, 1, 1, 6), _square(12, 2, 2, 3), np.zeros((12, 12), bool)])
    absent = np.zeros((12, 12), bool)
    scored = annotate(candidates, absent, "score")
    assert scored.grades.tolist() == [1, 1, 4] and scored.order[0] == 2 and scored.grade_spread == 3
    ranked = annotate(candidates, absent, "rank")
    assert ranked.order[0] == 2 and ranked.grade_spread == 3 and ranked.grades is None


def test_position_weights_for_any_k_sum_to_zero_and_keep_the_paper_for_four() -> None:
    assert position_weights(4, 1.0, 0.5).tolist() == [1.0, 0.5, -0.5, -1.0]
    assert position_weights(2, 1.0, 0.5).tolist() == [1.0, -1.0]
    assert position_weights(3, 1.0, 0.5).tolist() == [1.0, 0.0, -1.0]
    assert position_weights(6, 1.0, 0.5).tolist() == [1.0, 0.75, 0.5, -0.5, -0.75, -1.0]
    for count in range(2, 9):
        assert position_weights(count).sum() == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="at least 2"):
        position_weights(1)
    three = annotate(
        np.stack([_square(8, 0, 0, 4), _square(8, 0, 0, 3), np.zeros((8, 8), bool)]), _square(8, 0, 0, 4), "score"
    )
    assert preference_weights(three).tolist() == [1.0, 0.0, -1.0]  # IoU 1, 9/16, 0: grades 4, 3, 1


def test_min_grade_gap_keeps_the_pairs_whose_grades_differ_enough() -> None:
    truth = _square(10, 0, 0, 5)  # 25 pixels
    slight = np.stack([truth, _square(10, 0, 0, 4)])  # IoU 1 and 0.64: grades 4 and 3
    strong = np.stack([truth, np.zeros((10, 10), bool)])  # grades 4 and 1
    annotations = {("a", 0): annotate(slight, truth, "rank"), ("a", 1): annotate(strong, truth, "rank")}
    assert len(preference_pairs(["a"], 2, annotations, 1.0, 0.5, 0).image) == 2
    gapped = preference_pairs(["a"], 2, annotations, 1.0, 0.5, 2)
    assert gapped.klass.tolist() == [1] and gapped.reasons == {WITHIN_GAP: 1} and gapped.weights.shape == (1, 2)
    with pytest.raises(ConfigError, match="min_grade_gap"):
        Stage2Settings(min_grade_gap=4)


def test_perturbed_prompts_move_boxes_and_points_inside_the_image(tmp_path: Path) -> None:
    _, _, prompts, texts = training_data(tmp_path)
    batch = make_batch([prompts[0]], [range(2)], texts, SIZE, 2)
    moved = perturb_prompts(batch, 0.3, np.random.default_rng(0))
    boxes, points = moved.boxes.numpy(), moved.points.numpy()
    assert not np.array_equal(boxes, batch.boxes.numpy()) and not np.array_equal(points, batch.points.numpy())
    assert boxes.min() >= 0 and boxes.max() <= SIZE - 1 and points.min() >= 0 and points.max() <= SIZE - 1
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert np.array_equal(moved.point_labels.numpy(), batch.point_labels.numpy())


def test_model_draws_are_seeded_and_differ_by_source(tmp_path: Path) -> None:
    import torch

    images, _, prompts, texts = training_data(tmp_path)
    model = small_model()
    settings = CandidateSettings(source=("perturb", "dropout"), draws=2, jitter=0.3, dropout=0.5)
    args = (model, None, prompts[:2], texts, 2, SIZE, 2, settings, torch.device("cpu"))
    first = draw_masks(*args, progress=False, images=images[:2])
    again = draw_masks(*args, progress=False, images=images[:2])
    assert first.shape == (2, 2, draw_count(settings), SIZE, SIZE) == (2, 2, 4, SIZE, SIZE)
    assert np.array_equal(first, again)  # seeded
    other = draw_masks(
        *args[:7],
        CandidateSettings(source=("perturb", "dropout"), draws=2, seed=5),
        args[8],
        progress=False,
        images=images[:2],
    )
    assert first.shape == other.shape
