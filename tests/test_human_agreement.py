"""Human feedback agreement: Cohen's kappa, the merge of several annotators (majority grade, Borda ranks),
pairwise agreement and the relation of a person's grades to the virtual annotator's IoU bins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samdpo.align.agreement import (
    NOT_DECIDED,
    SKIPPED,
    bin_labels,
    cohen_kappa,
    is_decided,
    merge_annotations,
    pairwise_agreement,
    virtual_agreement,
)
from samdpo.align.annotator import EQUAL, Annotation, _from_values, not_graded
from samdpo.errors import ConfigError, DataError


def scored(*grades: int) -> Annotation:
    return _from_values(np.array(grades), True)


def ranked(*ties: int) -> Annotation:
    return _from_values(np.array(ties), False)


def skipped(count: int = 4, mode: str = "score") -> Annotation:
    base = not_graded(count, mode)
    return Annotation(base.order, base.grades, base.ties, SKIPPED)


def same(a: Annotation, b: Annotation) -> bool:
    grades_equal = (a.grades is None and b.grades is None) or (
        a.grades is not None and b.grades is not None and np.array_equal(a.grades, b.grades)
    )
    return grades_equal and np.array_equal(a.order, b.order) and np.array_equal(a.ties, b.ties) and a.reason == b.reason


# --- Cohen's kappa -------------------------------------------------------------------------------------------


def test_kappa_hand_computed_four_levels():
    first = np.array([1, 1, 2, 2, 3, 3, 4, 4, 4, 1])
    second = np.array([1, 2, 2, 2, 3, 4, 4, 4, 3, 1])
    # observed: 7 of 10 agree -> 0.7. Marginals: first 1:3 2:2 3:2 4:3, second 1:2 2:3 3:2 4:3, so
    # expected = (3*2 + 2*3 + 2*2 + 3*3) / 100 = 0.25 and kappa = (0.7 - 0.25) / 0.75 = 0.6.
    assert cohen_kappa(first, second) == pytest.approx(0.6)
    assert cohen_kappa(second, first) == pytest.approx(0.6)


def test_kappa_textbook_two_by_two_on_four_levels():
    # 50 items: both "yes" (4) 20, first yes/second no (1) 5, first no/second yes 10, both no 15.
    # observed 35/50 = 0.7; first says yes 25/50, second 30/50: expected 0.5*0.6 + 0.5*0.4 = 0.5;
    # kappa = (0.7 - 0.5) / 0.5 = 0.4. Levels 2 and 3 are never used and change nothing.
    first = np.array([4] * 20 + [4] * 5 + [1] * 10 + [1] * 15)
    second = np.array([4] * 20 + [1] * 5 + [4] * 10 + [1] * 15)
    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_kappa_identical_constant_empty():
    labels = np.array([1, 2, 3, 4, 4, 2])
    assert cohen_kappa(labels, labels) == 1.0
    assert cohen_kappa(np.full(5, 3), np.full(5, 3)) == 1.0  # expected agreement 1, observed 1
    assert math.isnan(cohen_kappa(np.zeros(0, int), np.zeros(0, int)))
    assert cohen_kappa(np.array([0, 1, 1]), np.array([0, 1, 0]), levels=(0, 1)) == pytest.approx(0.4)


def test_kappa_independent_raters_near_zero():
    rng = np.random.default_rng(0)
    first, second = rng.integers(1, 5, 20000), rng.integers(1, 5, 20000)
    assert abs(cohen_kappa(first, second)) < 0.05


def test_kappa_bad_input():
    with pytest.raises(DataError, match="equal length"):
        cohen_kappa(np.array([1, 2, 3]), np.array([1, 2]))
    with pytest.raises(DataError, match="among"):
        cohen_kappa(np.array([1, 5]), np.array([1, 2]))


# --- merge ---------------------------------------------------------------------------------------------------


def test_merge_single_annotator_is_identity():
    score = {("a", 0): scored(4, 3, 3, 1), ("a", 1): scored(2, 2, 2, 2), ("b", 2): scored(1, 4, 2, 3)}
    merged = merge_annotations({"ann": score}, "score", sorted(score))
    assert all(same(merged[key], score[key]) for key in score)
    rank = {("a", 0): ranked(2, 0, 1, 1), ("a", 1): ranked(0, 0, 0, 0), ("b", 2): ranked(3, 2, 1, 0)}
    merged = merge_annotations({"ann": rank}, "rank", sorted(rank))
    assert all(same(merged[key], rank[key]) for key in rank)
    assert merged[("a", 1)].reason == EQUAL and not merged[("a", 1)].has_preference


def test_merge_majority_grade():
    key = ("img", 3)
    votes = {"x": {key: scored(4, 3, 2, 1)}, "y": {key: scored(4, 2, 2, 1)}, "z": {key: scored(3, 3, 1, 1)}}
    merged = merge_annotations(votes, "score", [key])[key]
    np.testing.assert_array_equal(merged.grades, [4, 3, 2, 1])
    np.testing.assert_array_equal(merged.ties, [4, 3, 2, 1])
    np.testing.assert_array_equal(merged.order, [0, 1, 2, 3])
    assert merged.reason == "" and merged.has_preference


def test_merge_majority_tie_takes_the_lower_grade():
    key = ("img", 0)
    two = {"x": {key: scored(4, 2, 3, 1)}, "y": {key: scored(3, 2, 1, 4)}}
    np.testing.assert_array_equal(merge_annotations(two, "score", [key])[key].grades, [3, 2, 1, 1])
    three = {"x": {key: scored(4, 1, 1, 1)}, "y": {key: scored(3, 1, 1, 1)}, "z": {key: scored(2, 1, 1, 1)}}
    merged = merge_annotations(three, "score", [key])[key]
    np.testing.assert_array_equal(merged.grades, [2, 1, 1, 1])
    np.testing.assert_array_equal(merged.order, [0, 1, 2, 3])


def test_merge_rank_borda_keeps_ties():
    key = ("img", 1)
    # positions (best = 3): x 3 2 1 0, y 2 3 1 0 -> sums 5 5 2 0: candidates 0 and 1 tie.
    votes = {"x": {key: ranked(3, 2, 1, 0)}, "y": {key: ranked(2, 3, 1, 0)}}
    merged = merge_annotations(votes, "rank", [key])[key]
    assert merged.grades is None and merged.reason == "" and merged.has_preference
    np.testing.assert_array_equal(merged.ties, [2, 2, 1, 0])
    np.testing.assert_array_equal(merged.order, [0, 1, 2, 3])
    # ties inside one annotator share a position on the common scale: x 1 1 0 0 -> 3 3 2 2; plus
    # y's 0 1 2 3 -> sums 3 4 4 5 -> dense 0 1 1 2 (x's two groups alone would be ranks 1 1 0 0).
    votes = {"x": {key: ranked(1, 1, 0, 0)}, "y": {key: ranked(0, 1, 2, 3)}}
    merged = merge_annotations(votes, "rank", [key])[key]
    np.testing.assert_array_equal(merged.ties, [0, 1, 1, 2])
    np.testing.assert_array_equal(merged.order, [3, 1, 2, 0])
    # full disagreement cancels out: all tied, no preference
    votes = {"x": {key: ranked(1, 0, 0, 0)}, "y": {key: ranked(0, 1, 1, 1)}}
    merged = merge_annotations(votes, "rank", [key])[key]
    assert merged.reason == EQUAL and not merged.has_preference


def test_merge_undecided_pairs():
    keys = [("a", 0), ("a", 1), ("a", 2), ("a", 3)]
    ann = {
        "x": {keys[0]: skipped(3), keys[1]: not_graded(3, "score"), keys[3]: scored(1, 2, 3)},
        "y": {keys[0]: skipped(3), keys[3]: skipped(3)},
    }
    merged = merge_annotations(ann, "score", keys)
    assert sorted(merged) == keys
    for key in keys[:3]:  # skipped by all, not graded, absent from every file
        assert merged[key].reason == NOT_DECIDED and not merged[key].has_preference
        np.testing.assert_array_equal(merged[key].grades, [1, 1, 1])  # K = 3 from the annotations
        assert not is_decided(merged[key])
    assert same(merged[keys[3]], ann["x"][keys[3]])  # y skipped it: x alone decides
    rank = merge_annotations({"x": {keys[0]: skipped(mode="rank")}}, "rank", keys[:2])
    assert all(a.reason == NOT_DECIDED and a.grades is None and len(a.ties) == 4 for a in rank.values())
    assert merge_annotations({}, "score", [keys[0]])[keys[0]].ties.shape == (4,)
    with pytest.raises(ConfigError):
        merge_annotations(ann, "vote", keys)


def test_merge_rejects_inconsistent_votes():
    key = ("a", 0)
    with pytest.raises(DataError, match="numbers of candidates"):
        merge_annotations({"x": {key: scored(1, 2, 3)}, "y": {key: scored(1, 2, 3, 4)}}, "score", [key])
    with pytest.raises(DataError, match="grades"):
        merge_annotations({"x": {key: scored(1, 2, 3, 4)}, "y": {key: ranked(1, 2, 3, 0)}}, "score", [key])


# --- agreement -----------------------------------------------------------------------------------------------


def three_annotators() -> dict[str, dict[tuple[str, int], Annotation]]:
    k1, k2, k3 = ("s", 1), ("s", 2), ("s", 3)
    return {
        "b": {k1: scored(4, 3, 2, 1), k2: scored(1, 1, 1, 1), k3: scored(2, 2, 3, 3)},
        "a": {k1: scored(4, 3, 2, 1), k2: scored(1, 1, 1, 1), k3: skipped()},
        "c": {k1: scored(1, 2, 3, 4), k3: scored(3, 3, 2, 2), ("s", 9): not_graded(4, "score")},
    }


def test_pairwise_agreement_score():
    rows = pairwise_agreement(three_annotators(), "score")
    assert [(r["first"], r["second"], r["pairs"]) for r in rows] == [("a", "b", 2), ("a", "c", 1), ("b", "c", 2)]
    ab, ac, bc = rows
    assert ab["kappa"] == 1.0 and ab["tau"] == pytest.approx(1.0)  # tau on s1 only: s2 has no preference
    # a-c on s1: no agreement, expected 4 * (1/4 * 1/4) = 0.25 -> kappa -0.25 / 0.75
    assert ac["kappa"] == pytest.approx(-1 / 3) and ac["tau"] == pytest.approx(-1.0)
    # b-c on s1, s3: no agreement; marginals both 1:1 2:3 3:3 4:1 of 8 -> expected 20/64 -> kappa -5/11
    assert bc["kappa"] == pytest.approx(-5 / 11) and bc["tau"] == pytest.approx(-1.0)


def test_pairwise_agreement_rank_and_no_overlap():
    k = ("s", 0)
    ann = {"x": {k: ranked(3, 2, 1, 0)}, "y": {k: ranked(3, 1, 2, 0)}, "z": {k: skipped(mode="rank")}}
    rows = pairwise_agreement(ann, "rank")
    assert [(r["first"], r["second"], r["pairs"]) for r in rows] == [("x", "y", 1), ("x", "z", 0), ("y", "z", 0)]
    assert all(math.isnan(r["kappa"]) for r in rows)
    assert rows[0]["tau"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant of 6 candidate pairs
    assert math.isnan(rows[1]["tau"]) and math.isnan(rows[2]["tau"])


# --- against the virtual annotator ---------------------------------------------------------------------------


def test_virtual_agreement_bins():
    k1, k2, k3 = ("s", 1), ("s", 2), ("s", 3)
    human = {k1: scored(4, 3, 2, 1), k2: scored(4, 4, 1, 1), k3: skipped()}  # k3 skipped: no IoU needed
    ious = {k1: np.array([0.9, 0.6, 0.5, 0.1]), k2: np.array([0.75, 0.3, 0.45, 0.40])}  # virtual 4321, 4122
    rows = virtual_agreement(human, ious)
    assert [r["iou_bin"] for r in rows] == bin_labels() + ["all"]
    assert bin_labels() == ["[0.00, 0.40)", "[0.40, 0.55)", "[0.55, 0.70)", "[0.70, 1.00]"]
    assert [r["virtual_grade"] for r in rows] == [1, 2, 3, 4, None]
    table = [[r[f"human_grade_{g}"] for g in (1, 2, 3, 4)] for r in rows]
    assert table == [[1, 0, 0, 1], [2, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2], [3, 1, 1, 3]]
    assert [r["candidates"] for r in rows] == [2, 3, 1, 2, 8]
    assert [r["mean_human_grade"] for r in rows] == pytest.approx([2.5, 4 / 3, 3.0, 4.0, 2.5])
    assert all(math.isnan(r["kappa"]) and math.isnan(r["tau"]) for r in rows[:4])
    # human 43214411 vs virtual 43214122: 5/8 agree; marginals 1:3 2:1 3:1 4:3 and 1:2 2:3 3:1 4:2
    # -> expected 16/64 = 0.25, kappa (0.625 - 0.25) / 0.75 = 0.5
    assert rows[-1]["kappa"] == pytest.approx(0.5)
    # tau: k1 1.0; k2 (4 4 1 1 vs 4 1 2 2): 2 concordant, 2 discordant -> 0; mean 0.5
    assert rows[-1]["tau"] == pytest.approx(0.5)


def test_virtual_agreement_rank_mode_and_errors():
    k1 = ("s", 1)
    rows = virtual_agreement({k1: ranked(3, 2, 1, 0)}, {k1: np.array([0.9, 0.6, 0.5, 0.1])})
    assert all(r[f"human_grade_{g}"] == 0 for r in rows for g in (1, 2, 3, 4))
    assert [r["candidates"] for r in rows] == [1, 1, 1, 1, 4]
    assert math.isnan(rows[-1]["kappa"]) and math.isnan(rows[-1]["mean_human_grade"])
    assert rows[-1]["tau"] == pytest.approx(1.0)
    with pytest.raises(DataError, match=r"\('s', 7\)"):
        virtual_agreement({k1: scored(1, 2, 3, 4), ("s", 7): scored(1, 2, 3, 4)}, {k1: np.zeros(4)})
    with pytest.raises(DataError, match="candidates"):
        virtual_agreement({k1: scored(1, 2, 3, 4)}, {k1: np.zeros(3)})
    assert virtual_agreement({k1: not_graded(4, "score")}, {})[-1]["candidates"] == 0
