"""The presence signal (where along the scan each class occurs), its gate on the prompt store and on
prediction, and volume propagation at prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.cli import main
from samdpo.errors import ConfigError, DataError
from samdpo.prompts.visual.presence import (
    PresenceSettings,
    fit_presence,
    read_presence,
    slice_heights,
    write_presence,
)
from samdpo.sam.builders import build_sam
from samdpo.sam.prompted import PromptedSam
from samdpo.sam.settings import SamSettings
from samdpo.train.predict import predict_probabilities, predict_volumes, propagated_box
from samdpo.train.predict_settings import PredictSettings
from samdpo.train.prompt_data import ImagePrompts
from tests.prepared_store import prepare_store


def _labels(present: list[list[int]], size: int = 8) -> np.ndarray:
    """(M, size, size) label maps showing the listed labels (each a 2x2 square of its own)."""
    labels = np.zeros((len(present), size, size), np.uint8)
    for m, values in enumerate(present):
        for value in values:
            labels[m, 2 * (value - 1) : 2 * value, :2] = value
    return labels


def test_slice_heights_and_bad_slices() -> None:
    assert slice_heights(np.array([0, 4]), np.array([5, 5])).tolist() == pytest.approx([0.1, 0.9])
    with pytest.raises(DataError, match="outside its scan"):
        slice_heights(np.array([5]), np.array([5]))


def test_fit_follows_the_labelled_heights_and_falls_to_absent_far_from_them() -> None:
    """Class 1 on the low slices, class 2 on the high ones; class 3 never: each answer follows the labelled
    slices near the height, and far from every labelled slice (a height none was seen at) the class is absent."""
    heights = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    labels = _labels([[1], [1], [1], [2], [2], [2]])
    prior, _ = fit_presence(heights, labels, ("low", "high", "never"), PresenceSettings(bandwidth=0.05, threshold=0.5))
    probability, present = prior.decide(np.array([0.2, 0.7, 0.45, 0.99]))
    assert present.tolist() == [
        [True, False, False],
        [False, True, False],
        [False, False, False],
        [False, False, False],
    ]
    assert probability.shape == (4, 3) and probability.dtype == np.float32
    assert (probability >= 0).all() and (probability < 1).all() and (probability[:, 2] == 0).all()


def test_two_dimensional_datasets_keep_every_common_class() -> None:
    """Every slice_count 1 (BUSI, CXR): one height, P is about the class's rate; a class on every labelled
    image stays present on every image."""
    heights = slice_heights(np.zeros(10, int), np.ones(10, int))
    prior, _ = fit_presence(heights, _labels([[1]] * 10), ("lesion",), PresenceSettings(threshold=0.5))
    assert prior.decide(heights)[1].all()


def test_a_validation_threshold_is_the_grid_value_of_best_presence_f1() -> None:
    """Fitted on three labelled slices (pseudo-count 2), class 1 reaches P ~0.2-0.3 near them: a fixed 0.5
    calls it absent everywhere; the validation slices (where it is on the low half) choose a threshold that keeps it
    there and not on the high half, and the F1 of every grid value is recorded."""
    heights = np.array([0.1, 0.2, 0.9])
    labels = _labels([[1], [], []])
    fixed, choice = fit_presence(heights, labels, ("a",), PresenceSettings(pseudo_count=2.0, threshold=0.5))
    assert choice == {} and not fixed.decide(np.array([0.1, 0.15]))[1].any()
    validation = (np.array([0.1, 0.15, 0.85, 0.9]), _labels([[1], [1], [], []]))
    chosen, choice = fit_presence(heights, labels, ("a",), PresenceSettings(pseudo_count=2.0), validation)
    assert chosen.decide(validation[0])[1][:, 0].tolist() == [True, True, False, False]
    assert choice["threshold_chosen"] == chosen.threshold < 0.5 and choice["validation_slices"] == 4
    assert max(choice["validation_f1"].values()) == 1.0 and len(choice["validation_f1"]) == 19
    with pytest.raises(DataError, match="validation split is empty"):
        fit_presence(heights, labels, ("a",), PresenceSettings())


def test_round_trip_and_bad_files(tmp_path: Path) -> None:
    settings = PresenceSettings(threshold=0.4)
    prior, _ = fit_presence(np.array([0.2, 0.8]), _labels([[1], [2]]), ("a", "b"), settings)
    write_presence(prior, tmp_path / "p.json", {"dataset": "amos"})
    back, info = read_presence(tmp_path / "p.json")
    assert np.allclose(back.probability(np.linspace(0, 1, 7)), prior.probability(np.linspace(0, 1, 7)))
    assert back.threshold == 0.4 and info["dataset"] == "amos" and len(info["curves"]["a"]) == 101
    with pytest.raises(DataError, match="run the presence_prior rule first"):
        read_presence(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="bad.json: not a presence signal file"):
        read_presence(tmp_path / "bad.json")
    with pytest.raises(DataError, match="labelled split is empty"):
        fit_presence(np.zeros(0), np.zeros((0, 4, 4), np.uint8), ("a",), settings)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bandwidth": 0}, "presence.bandwidth"),
        ({"pseudo_count": -1}, "presence.pseudo_count"),
        ({"threshold": 1.0}, "presence.threshold"),
        ({"threshold": "test"}, "presence.threshold"),
        ({"enabled": "yes"}, "presence.enabled"),
    ],
)
def test_bad_presence_settings_are_named(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PresenceSettings(**values)


def test_bad_predict_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="predict.volume"):
        PredictSettings(volume="3d")
    with pytest.raises(ConfigError, match="predict.margin"):
        PredictSettings(margin=-1)


def test_amos_store_records_slice_counts_and_the_fit_reads_labelled_labels_only(
    amos_root: Path, tmp_path: Path
) -> None:
    """The AMOS store keeps each slice's place in its scan; the presence signal fitted on the labelled split
    (its threshold chosen on the validation split) is the same bytes whatever the unlabelled and test labels
    hold (scrambled)."""
    import pyarrow.parquet as pq

    from samdpo.data.splits import read_splits

    store = prepare_store("amos", amos_root, tmp_path / "store", 32)
    table = pq.read_table(store / "samples.parquet").to_pandas()
    assert (table["slice_count"] > table["slice_index"]).all() and (table["slice_count"] > 1).all()
    split = ["data", "split", "--store", str(store), "--out", str(tmp_path / "splits.csv")]
    assert main([*split, "--labeled", "0.2", "--unlabeled", "0.2"]) == 0
    fit = ["prompts", "presence-prior", "--store", str(store), "--splits", str(tmp_path / "splits.csv")]
    assert main([*fit, "--out", str(tmp_path / "a.json")]) == 0
    splits = read_splits(tmp_path / "splits.csv")
    hidden = np.array([splits[case] in ("unlabeled", "test") for case in table["case_id"]])
    assert hidden.any() and not hidden.all()
    labels = np.load(store / "labels.npy")
    labels[hidden] = np.random.default_rng(1).integers(0, 16, size=labels[hidden].shape, dtype=np.uint8)
    np.save(store / "labels.npy", labels)
    assert main([*fit, "--out", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    info = read_presence(tmp_path / "a.json")[1]
    labelled = sum(splits[case] == "labeled" for case in table["case_id"])
    assert info["labelled_slices"] == labelled and 0 < info["threshold_chosen"] < 1


def _model_and_prompts(count: int, size: int = 32) -> tuple[PromptedSam, list[ImagePrompts], dict]:
    torch.manual_seed(0)
    sam = SamSettings(
        name="small", image_size=size, encoder_width=16, encoder_depth=1, encoder_heads=2, patch_size=8, prompt_dim=16
    )
    model = PromptedSam(build_sam(sam), 8)
    box = np.array([[8, 8, 19, 19], [2, 2, 9, 9]], np.float32)
    points, point_labels = box[:, None, :2] + 2, np.ones((2, 1), np.int64)
    prompts = [
        ImagePrompts(
            f"s{i}", box, np.ones(2, bool), points, point_labels, ("v", "v"), ("l", "l"), np.array([True, i != 1])
        )
        for i in range(count)
    ]
    return model, prompts, {"v": np.ones(8, np.float32), "l": np.zeros(8, np.float32)}


def test_a_class_absent_by_presence_is_never_predicted() -> None:
    model, prompts, texts = _model_and_prompts(3)
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    out = np.full((3, 2, 32, 32), 7, np.uint8)  # untouched rows keep what they held
    predict_probabilities(model, images, prompts, texts, torch.device("cpu"), out, 1, progress=False)
    assert (out[1, 1] == 7).all() and not (out[0, 1] == 7).all() and not (out[1, 0] == 7).all()


def test_propagation_gives_the_next_slice_the_found_mask_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices run in order within each case: a class found on slice z is prompted on slice z + 1 by its mask's
    box (grown by the margin); a gap in the slices, a new case or a vanished mask starts again from the
    human-free box. With one slice per case it is exactly the independent prediction."""
    from samdpo.train import predict as module

    seen: list[tuple[int, list]] = []
    real = module._predict_rows

    def spy(model, chosen, prompts, wanted, *rest):
        seen.append((chosen[0], [prompts[0].boxes[t].tolist() for t in wanted[0]]))
        return real(model, chosen, prompts, wanted, *rest)

    model, prompts, texts = _model_and_prompts(4)
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    out = np.zeros((4, 2, 32, 32), np.uint8)
    independent = np.zeros_like(out)
    predict_probabilities(model, images, prompts, texts, torch.device("cpu"), independent, 1, progress=False)
    monkeypatch.setattr(module, "_predict_rows", spy)
    cases, slices = ["b", "a", "a", "a"], [0, 2, 0, 1]
    predict_volumes(model, images, prompts, texts, torch.device("cpu"), out, 1, cases, slices, 2, progress=False)
    assert [i for i, _ in seen] == [2, 3, 1, 0]  # case a slices 0, 1, 2, then case b
    human = prompts[0].boxes.tolist()
    assert seen[0][1] == human and seen[3][1] == human  # first slice of a volume: the human-free boxes
    for t, box in enumerate(seen[1][1]):  # slice 1 of case a: the boxes of slice 0's masks, grown by 2
        found = propagated_box(independent[2, t] >= 128, 2)
        assert box == (human[t] if found is None else found.tolist())
    assert np.array_equal(out[0], independent[0]) and np.array_equal(out[2], independent[2])
    assert (out[1, 1] == 0).all()  # absent by presence: not predicted, propagated or not


def test_propagated_box_is_grown_and_clipped() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0:3, 7:9] = True
    assert propagated_box(mask, 2).tolist() == [5, 0, 9, 4]
    assert propagated_box(np.zeros((4, 4), bool), 2) is None


def test_a_prompt_file_without_presence_decisions_is_refused(tmp_path: Path) -> None:
    """A prompt file written before presence existed (its ``present`` null) would read as "absent" everywhere
    and predict nothing: loading it is one error naming the file and the rule to rerun."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from samdpo.prompts.store import SCHEMA
    from samdpo.train.prompt_data import load_image_prompts
    from tests.prompt_rows import prompt_row

    row = {**prompt_row(0, "liver", np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8), None, [], []), "present": None}
    table = pa.Table.from_pylist([row], schema=SCHEMA).replace_schema_metadata(
        {"samdpo": json.dumps({"format_version": 2})}
    )
    pq.write_table(table, tmp_path / "case01_s005.parquet")
    with pytest.raises(DataError, match="case01_s005.parquet: no presence decision.*rerun the prompt_store rule"):
        load_image_prompts(tmp_path, "case01_s005", ["liver"])
