"""Preference alignment: the annotator's bins and ties, the DPO loss and its log-likelihood reduction,
candidates, and stage 2 (what trains, bad input)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samdpo.align import dpo_loss, grade
from samdpo.align.annotator import (
    IDENTICAL,
    NOT_GRADED,
    Annotation,
    add_noise,
    annotate,
    annotate_all,
    kendall_tau,
    mask_iou,
    not_graded,
    preference_weights,
)
from samdpo.align.candidates import (
    check_thresholds,
    pack_masks,
    threshold_masks,
)
from samdpo.align.dpo import candidate_logp, weighted_dpo_loss
from samdpo.align.pairs import preference_pairs
from samdpo.align.stage2 import LabelledSet, disagreement_pixels, disagreement_share, train_stage2
from samdpo.align.stage2_settings import Stage2Settings
from samdpo.align.uncertainty import UncertaintySettings, consensus_masks, jitter_boxes
from samdpo.errors import ConfigError, DataError
from samdpo.sam.builders import build_sam
from samdpo.sam.checkpoints import load_checkpoint, save_weights
from samdpo.sam.prompted import PromptedSam
from samdpo.sam.settings import SamSettings
from tests.prompt_rows import SIZE
from tests.stage1_data import small_model, training_data
from tests.stage2_data import stage2_inputs


def test_grade_bin_edges() -> None:
    assert [grade(v) for v in (0.0, 0.3999, 0.40, 0.5499, 0.55, 0.6999, 0.70, 1.0)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert grade(np.array([0.1, 0.45, 0.6, 0.9])).tolist() == [1, 2, 3, 4]


def test_ties_average_the_weights_and_four_equal_grades_carry_nothing() -> None:
    annotation = Annotation(order=np.array([1, 0, 2, 3]), grades=np.array([4, 4, 2, 1]), ties=np.array([4, 4, 2, 1]))
    weights = preference_weights(annotation)
    assert weights.tolist() == [0.75, 0.75, -0.5, -1.0] and weights.sum() == 0
    equal = Annotation(order=np.arange(4), grades=np.full(4, 3), ties=np.full(4, 3))
    assert not equal.has_preference and preference_weights(equal).tolist() == [0, 0, 0, 0]
    strict = Annotation(order=np.array([2, 0, 3, 1]), grades=None, ties=np.array([2, 0, 3, 1]))
    assert preference_weights(strict).tolist() == [0.5, -1.0, 1.0, -0.5]


def test_annotator_returns_grades_or_order_and_handles_empty_masks() -> None:
    truth = np.zeros((10, 10), bool)
    truth[2:8, 2:8] = True  # 36 px
    candidates = np.zeros((4, 10, 10), bool)
    candidates[0, 1:9, 1:9] = True  # IoU 36/64 = 0.5625 -> 3
    candidates[1, 2:8, 2:8] = True  # 1.0 -> 4
    candidates[2, 3:7, 3:7] = True  # 16/36 = 0.44 -> 2
    candidates[3, 4:5, 4:5] = True  # 1/36 -> 1
    scored = annotate(candidates, truth, "score")
    assert scored.grades.tolist() == [3, 4, 2, 1] and scored.order.tolist() == [1, 0, 2, 3]
    ranked = annotate(candidates, truth, "rank")
    assert ranked.grades is None and ranked.order.tolist() == [1, 0, 2, 3]
    # all candidates empty: IoU 0 with a present target, 1 with an absent one: no preference either way
    empty = np.zeros((4, 10, 10), bool)
    assert not annotate(empty, truth, "score").has_preference
    assert mask_iou(empty, np.zeros((10, 10), bool)).tolist() == [1, 1, 1, 1]
    # a class absent from the image: the empty candidates are preferred
    nested = np.zeros((4, 10, 10), bool)
    nested[:2, 0:3, 0:3] = True
    absent = annotate(nested, np.zeros((10, 10), bool), "score")
    assert absent.grades.tolist() == [1, 1, 4, 4] and absent.has_preference
    with pytest.raises(ConfigError, match="mode"):
        annotate(candidates, truth, "vote")


def test_dpo_loss_value_gradient_and_pairwise_limit() -> None:
    torch.manual_seed(0)
    ref = torch.randn(5, 4)
    assert dpo_loss(ref.clone(), ref).item() == pytest.approx(math.log(2), abs=1e-6)
    policy = ref.clone().requires_grad_(True)
    dpo_loss(policy, ref).backward()
    assert (policy.grad[:, 0] < 0).all() and (policy.grad[:, 3] > 0).all()  # descent raises best, lowers worst
    assert (policy.grad[:, 1] < 0).all() and (policy.grad[:, 2] > 0).all()
    other = torch.randn(5, 4)
    pairwise = -F.logsigmoid((other[:, 0] - ref[:, 0]) - (other[:, 3] - ref[:, 3])).mean()
    assert dpo_loss(other, ref, beta1=1.0, beta2=0.0).item() == pytest.approx(pairwise.item(), rel=1e-6)
    loss, margins = weighted_dpo_loss(other, ref, torch.zeros(4))
    assert loss.item() == pytest.approx(math.log(2)) and (margins == 0).all()  # all tied: no preference, no gradient
    with pytest.raises(ValueError):
        dpo_loss(torch.zeros(2, 3), torch.zeros(2, 3))


def test_log_likelihood_reduction_does_not_wash_out() -> None:
    torch.manual_seed(1)
    small = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
    for k in range(4):
        small[0, k, 2 : 6 - k // 2, 2:6] = True  # candidates differ in a few pixels
    logits = torch.randn(1, 8, 8)
    big_logits = torch.full((1, 64, 64), -8.0)  # the same image inside a much larger background
    big_logits[:, :8, :8] = logits
    big = torch.zeros(1, 4, 64, 64, dtype=torch.bool)
    big[:, :, :8, :8] = small
    ref_small, ref_big = torch.zeros(1, 8, 8), torch.full((1, 64, 64), -8.0)
    ref_big[:, :8, :8] = ref_small

    def margin(reduction: str, lg, rf, cand) -> float:
        return (candidate_logp(lg, cand, reduction) - candidate_logp(rf, cand, reduction)) @ torch.tensor(
            [1.0, 0.5, -0.5, -1.0]
        )

    # sum: pixels where all candidates agree cancel exactly, the margin does not depend on the background
    assert margin("sum", logits, ref_small, small).item() == pytest.approx(
        margin("sum", big_logits, ref_big, big).item(), rel=1e-5
    )
    assert margin("disagreement_mean", logits, ref_small, small).item() == pytest.approx(
        margin("disagreement_mean", big_logits, ref_big, big).item(), rel=1e-5
    )
    # mean over all pixels: the margin shrinks with the image (64x more pixels)
    ratio = margin("mean", logits, ref_small, small).item() / margin("mean", big_logits, ref_big, big).item()
    assert ratio == pytest.approx(64.0, rel=1e-4)
    assert candidate_logp(logits, torch.zeros(1, 4, 8, 8, dtype=torch.bool), "disagreement_mean").abs().sum() == 0


def test_threshold_candidates_are_nested() -> None:
    probs = np.array([[0, 76, 77, 102, 128, 153, 255]], np.uint8)  # 0, .298, .302, .4, .502, .6, 1
    masks = threshold_masks(probs, [0.3, 0.4, 0.5, 0.6])
    assert masks.shape == (4, 1, 7)  # (..., S, S) -> (..., K, S, S): here S x S = 1 x 7
    assert masks.reshape(4, 7).sum(0).tolist() == [0, 0, 1, 2, 3, 4, 4]
    stacked = masks.reshape(4, 7)
    assert all((stacked[k + 1] <= stacked[k]).all() for k in range(3))  # a higher threshold keeps a subset
    with pytest.raises(ConfigError, match="ascending"):
        check_thresholds([0.5, 0.4])


def test_stage2_trains_the_decoder_only(tmp_path: Path) -> None:
    images, candidates, prompts, texts, ids, annotations = stage2_inputs(tmp_path)
    pairs = preference_pairs(ids, 2, annotations, 1.0, 0.5)
    policy, reference = small_model(), small_model()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    settings = Stage2Settings(
        epochs=3, lr=1e-4, batch_pairs=8, reduction="sum"
    )  # one step per epoch: epoch 1's loss is the start's
    history = train_stage2(
        policy, reference, images, candidates, pairs, prompts, texts, settings, tmp_path / "s2", {}, 1, progress=False
    )
    assert (
        history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6) and history[0]["mean_margin"] == 0
    )  # policy = reference
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["mean_margin"] > 0
    changed = {k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("sam.mask_decoder.") for k in changed)
    used = {
        k
        for k in before
        if k.startswith("sam.mask_decoder.")
        and not k.startswith(("sam.mask_decoder.iou_prediction_head", "sam.mask_decoder.output_hypernetworks_mlps."))
    }
    used |= {k for k in before if k.startswith("sam.mask_decoder.output_hypernetworks_mlps.0.")}
    # every decoder parameter that shapes the (single) output mask changes; the IoU head and the
    # hypernetworks of the unused multimask outputs take no part in the loss
    assert used <= changed, sorted(used - changed)
    assert all(torch.equal(v, before[k]) for k, v in reference.state_dict().items())
    for name in ("model.safetensors", "train_log.csv", "loss.png", "settings.json"):
        assert (tmp_path / "s2" / name).is_file()


def test_stage2_bad_input(tmp_path: Path) -> None:
    images, candidates, prompts, texts, ids, annotations = stage2_inputs(tmp_path)
    del annotations[(ids[1], 0)]
    with pytest.raises(DataError, match=f"no annotation for 1 .*image {ids[1]} class 0"):
        preference_pairs(ids, 2, annotations, 1.0, 0.5)
    tied = {
        key: Annotation(np.arange(4), np.full(4, 2), np.full(4, 2)) for key in [(s, t) for s in ids for t in range(2)]
    }
    none = preference_pairs(ids, 2, tied, 1.0, 0.5)
    assert len(none.image) == 0 and none.without_preference == 2 * len(ids)
    # no preference at all: the stage-1 weights are kept, said in the outputs
    policy = small_model()
    history = train_stage2(
        policy,
        small_model(),
        images,
        candidates,
        none,
        prompts,
        texts,
        Stage2Settings(reduction="sum"),
        tmp_path / "none",
        {},
        1,
        progress=False,
    )
    assert history == []
    assert all(torch.equal(v, small_model().state_dict()[k]) for k, v in policy.state_dict().items())
    assert '"pairs": 0' in (tmp_path / "none" / "settings.json").read_text()
    other = PromptedSam(
        build_sam(
            SamSettings(
                name="small",
                image_size=32,
                encoder_width=48,
                encoder_depth=1,
                encoder_heads=2,
                patch_size=8,
                prompt_dim=16,
            )
        ),
        8,
    )
    save_weights(other, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="another shape|missing|unexpected"):
        load_checkpoint(small_model(), tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="objective"):
        Stage2Settings(objective="ppo")


def test_annotate_all_grades_present_classes_only_and_says_why_not() -> None:
    truth = np.zeros((2, 10, 10), bool)
    truth[0, 2:8, 2:8] = True  # class 0 present, class 1 absent
    probs = np.zeros((1, 2, 10, 10), np.uint8)
    probs[0, 0, 2:8, 2:8] = 200
    probs[0, 0, 1:9, 1:9] = np.maximum(probs[0, 0, 1:9, 1:9], 90)
    probs[0, 1, 0:3, 0:3] = 200
    packed = pack_masks(threshold_masks(probs, [0.3, 0.4, 0.5, 0.6]))
    every = annotate_all(packed, 10, lambda n: truth, "rank")
    present = annotate_all(packed, 10, lambda n: truth, "rank", graded=truth.any(axis=(1, 2))[None])
    assert every[0][0].has_preference and every[0][1].reason == IDENTICAL  # four equal candidates: nothing to choose
    assert present[0][0].ties.tolist() == every[0][0].ties.tolist()
    assert present[0][1].reason == NOT_GRADED and not present[0][1].has_preference


def test_rating_noise_flips_the_share_asked_for_seeded() -> None:
    scored = Annotation(order=np.array([3, 2, 1, 0]), grades=np.array([1, 2, 3, 4]), ties=np.array([1, 2, 3, 4]))
    rng = np.random.default_rng(0)
    noisy = [add_noise(scored, 0.3, rng) for _ in range(2000)]
    flipped = np.mean([g != o for a in noisy for g, o in zip(a.grades, scored.grades)])
    assert flipped == pytest.approx(0.3, abs=0.02)
    assert all(set(a.grades.tolist()) <= {1, 2, 3, 4} for a in noisy)
    again = [add_noise(scored, 0.3, np.random.default_rng(0)) for _ in range(3)]
    assert all(np.array_equal(a.grades, again[0].grades) for a in again)  # seeded
    assert add_noise(scored, 0.0, rng) is scored
    ranked = Annotation(order=np.array([1, 0, 2, 3]), grades=None, ties=np.array([2, 3, 1, 0]))
    assert add_noise(ranked, 1.0, np.random.default_rng(1)).grades is None
    skipped = not_graded(4, "score")
    assert add_noise(skipped, 1.0, rng) is skipped
    with pytest.raises(ConfigError, match="noise"):
        add_noise(scored, 1.5, rng)


def test_kendall_tau_of_two_annotators() -> None:
    first = Annotation(order=np.array([0, 1, 2, 3]), grades=None, ties=np.array([3, 2, 1, 0]))
    same = Annotation(order=np.array([0, 1, 2, 3]), grades=None, ties=np.array([30, 20, 10, 0]))
    reverse = Annotation(order=np.array([3, 2, 1, 0]), grades=None, ties=np.array([0, 1, 2, 3]))
    assert kendall_tau(first, same) == pytest.approx(1.0) and kendall_tau(first, reverse) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau(first, not_graded(4, "rank")))


def test_stage2_anchor_terms_and_diagnostics(tmp_path: Path) -> None:
    images, candidates, prompts, texts, ids, annotations = stage2_inputs(tmp_path)
    pairs = preference_pairs(ids, 2, annotations, 1.0, 0.5)
    _, labels, _, _ = training_data(tmp_path)
    labelled = LabelledSet(images, labels, prompts, None, 1.0, 1.0)
    logs = {}
    for name, settings in (
        ("plain", Stage2Settings(epochs=2, batch_pairs=8, reduction="sum")),
        ("best", Stage2Settings(epochs=2, batch_pairs=8, anchor_weight=1.0, reduction="sum")),
        ("labeled", Stage2Settings(epochs=2, batch_pairs=8, anchor_weight=1.0, anchor_on="labeled", reduction="sum")),
    ):
        logs[name] = train_stage2(
            small_model(),
            small_model(),
            images,
            candidates,
            pairs,
            prompts,
            texts,
            settings,
            tmp_path / name,
            {},
            1,
            progress=False,
            labelled=labelled,
        )
    assert (
        logs["plain"][0]["anchor_loss"] == 0
        and logs["best"][0]["anchor_loss"] > 0
        and logs["labeled"][0]["anchor_loss"] > 0
    )
    assert logs["best"][0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at the first step
    assert logs["plain"][0]["at_ln2"] == 1.0  # every pair starts at ln 2
    written = json.loads((tmp_path / "plain" / "settings.json").read_text())
    assert written["pairs"] == len(pairs.image) and written["median_disagreement_px"] > 0
    assert set(written) >= {"why_no_preference", "at_ln2", "mean_margin", "best_rose", "dpo_loss"}
    header = (tmp_path / "plain" / "train_log.csv").read_text().splitlines()[0]
    assert header.split(",") == [
        "epoch",
        "loss",
        "dpo_loss",
        "anchor_loss",
        "at_ln2",
        "mean_margin",
        "best_rose",
        "lr",
        "seconds",
    ]
    with pytest.raises(ConfigError, match="labelled split"):
        train_stage2(
            small_model(),
            small_model(),
            images,
            candidates,
            pairs,
            prompts,
            texts,
            Stage2Settings(anchor_weight=1.0, anchor_on="labeled"),
            tmp_path / "x",
            {},
            1,
            progress=False,
        )
    with pytest.raises(ConfigError, match="anchor"):
        Stage2Settings(anchor_on="test")
    nested = np.array([[[0, 1, 4], [2, 4, 0]]], np.uint8)  # levels: candidate k is level >= k + 1
    masks = np.stack([nested >= k + 1 for k in range(4)], axis=1)
    assert disagreement_pixels(masks).tolist() == [2]
    assert disagreement_share(masks).tolist() == [0.5]  # 2 of the largest candidate's 4 pixels


def test_uncertainty_consensus_jitters_boxes_and_agrees_with_itself(tmp_path: Path) -> None:
    images, _, prompts, texts = training_data(tmp_path)
    model = small_model()
    from samdpo.sam.image_embeddings import EmbeddingRows
    from samdpo.train.batches import make_batch

    with torch.no_grad():
        rows = EmbeddingRows(model.embed_images(torch.from_numpy(images)).numpy(), list(range(len(images))))
    batch = make_batch(prompts[:1], [[0, 1]], texts, SIZE, 1)
    moved = jitter_boxes(batch, 0.1, np.random.default_rng(0))
    width = (batch.boxes[:, 2] - batch.boxes[:, 0] + 1).numpy()
    shift = (moved.boxes - batch.boxes).abs().numpy()
    assert (shift[:, [0, 2]] <= 0.1 * width[:, None] + 1e-5).all() and shift.max() > 0
    assert (moved.boxes[:, 2] >= moved.boxes[:, 0]).all()
    settings = UncertaintySettings(augmentations=2, jitter=0.1, seed=3)
    first = consensus_masks(model, rows, prompts, texts, 2, SIZE, 1, settings, torch.device("cpu"), progress=False)
    again = consensus_masks(model, rows, prompts, texts, 2, SIZE, 1, settings, torch.device("cpu"), progress=False)
    assert first.shape == (len(images), 2, SIZE, SIZE) and first.dtype == bool and np.array_equal(first, again)
    with pytest.raises(ConfigError, match="augmentations"):
        UncertaintySettings(augmentations=1)
