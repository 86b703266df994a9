"""The report's example overlays: label-free choice of examples, grades/ranks, and `samdpo overlays`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samdpo.align.annotator import Annotation, read_annotations, write_annotations
from samdpo.align.candidates import CandidateSettings, pack_masks, read_candidates, write_candidates
from samdpo.class_maps import write_arrays
from samdpo.cli import main
from samdpo.errors import DataError
from samdpo.predictions import PROBS, read_predictions
from samdpo.report.overlays import _judgement, build_examples, choose_examples
from tests.prompt_rows import SIZE
from tests.prompt_rows import prompt_file as prompt_file  # noqa: F401  (the fixture: one prompt file, liver + spleen)

NAMES = ["liver", "spleen"]
THRESHOLDS = [0.3, 0.4, 0.5, 0.6]


def _annotation(grades: list[int]) -> Annotation:
    grades_array = np.array(grades)
    return Annotation(np.argsort(-grades_array, kind="stable"), grades_array, grades_array)


def test_examples_with_a_preference_come_first_then_non_empty_pairs() -> None:
    masks = np.zeros((4, 2, 4, 8, 8), bool)  # (N, T, K, S, S), nested: the loosest candidate first
    masks[0, 0, :, 2:4, 2:4] = True  # non-empty, no preference
    masks[1, 1, :2, 2:4, 2:4] = True  # non-empty, preference
    masks[3, 0, 0, 1:3, 1:3] = True  # non-empty (its loosest candidate only), no annotation
    packed = pack_masks(masks)
    ids = ["a", "b", "c", "d"]
    annotations = {
        ("a", 0): _annotation([4, 4, 4, 4]),
        ("b", 1): _annotation([3, 2, 1, 1]),
        ("c", 0): _annotation([1, 1, 1, 1]),
    }
    assert choose_examples(packed, annotations, ids, 1) == [(1, 1)]
    assert choose_examples(packed, annotations, ids, 3) == [(1, 1), (0, 0), (3, 0)]
    assert choose_examples(packed, annotations, ids, 10) == [(1, 1), (0, 0), (3, 0)]  # empty pairs never shown


def test_examples_spread_over_the_images() -> None:
    packed = pack_masks(np.ones((9, 1, 4, 4, 4), bool))
    assert choose_examples(packed, {}, [str(i) for i in range(9)], 3) == [(0, 0), (4, 0), (8, 0)]


def test_judgement_says_grade_or_rank() -> None:
    assert _judgement(_annotation([1, 3, 4, 2]), 1) == "grade 3"
    rank = Annotation(np.array([2, 0, 3, 1]), None, np.array([2, 0, 3, 1]))
    assert [_judgement(rank, k) for k in range(4)] == ["rank 2", "rank 4", "rank 1", "rank 3"]
    tied = Annotation(np.array([0, 1, 3, 2]), None, np.array([1, 1, 0, 1]))
    assert [_judgement(tied, k) for k in range(4)] == ["rank 1=", "rank 1=", "rank 2", "rank 1="]
    assert _judgement(None, 0) == "not annotated"


def _write_inputs(root: Path, after_names: list[str] = NAMES, before_hash: str = "h") -> dict[str, Path]:
    masks = np.zeros((1, 2, len(THRESHOLDS), SIZE, SIZE), bool)  # nested: the loosest candidate first
    masks[0, 0, 0, 4:16, 14:28] = True
    masks[0, 0, :, 5:15, 16:26] = True
    meta = {
        "dataset": "amos",
        "sample_ids": ["case01_s005"],
        "class_names": NAMES,
        "count": len(THRESHOLDS),
        "size": SIZE,
        "candidates": CandidateSettings(thresholds=THRESHOLDS).describe(),
        "chosen_from": {"thresholds": 2 * len(THRESHOLDS)},
        "model": "m",
        "model_settings_hash": "h",
    }
    write_candidates(root / "candidates", pack_masks(masks), meta)
    rows = [
        {
            "sample_id": "case01_s005",
            "class_index": 0,
            "order": [1, 2, 3, 0],
            "grades": [2, 4, 4, 3],
            "ties": [2, 4, 4, 3],
            "has_preference": True,
            "grade_spread": 2,
        },
        {
            "sample_id": "case01_s005",
            "class_index": 1,
            "order": [0, 1, 2, 3],
            "grades": [4, 4, 4, 4],
            "ties": [4, 4, 4, 4],
            "has_preference": False,
            "grade_spread": 0,
        },
    ]
    write_annotations(root / "annotations_score.parquet", rows, {"mode": "score"})
    for name, names, model_hash, side in (("before", NAMES, before_hash, 8), ("after", after_names, "aligned", 4)):
        probs = np.full((2, 2, SIZE, SIZE), 255, np.uint8)  # row 0 is another image: all foreground
        probs[1] = 0
        probs[1, 0, 6 : 6 + side, 17 : 17 + side] = 255
        pred_meta = {
            "dataset": "amos",
            "sample_ids": ["other", "case01_s005"],
            "class_names": names,
            "sample_splits": ["test", "unlabeled"],
            "model_settings_hash": model_hash,
        }

        def fill(out: np.ndarray, probs: np.ndarray = probs) -> None:
            out[...] = probs

        write_arrays(root / name, PROBS, probs.shape, fill, pred_meta)
    return {
        "candidates": root / "candidates",
        "annotations": root / "annotations_score.parquet",
        "before": root / "before",
        "after": root / "after",
    }


def _command(paths: dict[str, Path], prompts: Path, out: Path) -> list[str]:
    return [
        "overlays", "--prompts", str(prompts), "--candidates", str(paths["candidates"]),
        "--annotations", str(paths["annotations"]),
        "--before", str(paths["before"]), "--after", str(paths["after"]), "--examples", "4", "--out", str(out),
    ]  # fmt: skip


def test_overlays_command_draws_one_row_per_example(tmp_path: Path, prompt_file: Path) -> None:
    out = tmp_path / "report" / "overlays.png"
    assert main(_command(_write_inputs(tmp_path), prompt_file.parent, out)) == 0
    width, height = Image.open(out).size
    assert width == 7 * 220  # prompts, 4 candidates, before, after
    assert height == 250  # one example: the liver (spleen's candidates are all empty)


def test_overlays_of_another_dataset_are_refused_and_nothing_is_written(
    tmp_path: Path,
    prompt_file: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "overlays.png"
    assert main(_command(_write_inputs(tmp_path, ["lungs", "heart"]), prompt_file.parent, out)) == 2
    assert "class names" in capsys.readouterr().err and not out.exists()


def _examples(paths: dict[str, Path], prompts: Path) -> list[dict]:
    candidates = read_candidates(paths["candidates"])
    before, after = read_predictions(paths["before"]), read_predictions(paths["after"])
    return build_examples(candidates, read_annotations(paths["annotations"]), before, after, prompts, 0.5, 4)


def test_examples_hold_the_pair_s_candidates_grades_and_both_predictions(tmp_path: Path, prompt_file: Path) -> None:
    (example,) = _examples(_write_inputs(tmp_path), prompt_file.parent)  # spleen: all candidates empty
    assert example["row"]["class_name"] == "liver" and example["title"] == "case01_s005\nliver"
    assert [int(m.sum()) for m in example["candidates"]] == [12 * 14, 100, 100, 100]  # nested, loosest first
    assert list(example["annotation"].grades) == [2, 4, 4, 3]
    assert example["before"].sum() == 64 and example["after"].sum() == 16  # the image's row, not row 0


def test_a_before_model_other_than_the_candidates_one_is_refused(tmp_path: Path, prompt_file: Path) -> None:
    with pytest.raises(DataError, match="not the candidates' model"):
        _examples(_write_inputs(tmp_path, before_hash="other"), prompt_file.parent)


def test_a_missing_prompt_file_names_the_rule(tmp_path: Path, prompt_file: Path) -> None:
    with pytest.raises(DataError, match="run the prompt_store rule"):
        _examples(_write_inputs(tmp_path), tmp_path / "nowhere")
