"""The prepared sample store and the case-level splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samdpo.data import readers
from samdpo.data.splits import SPLITS, TRAINING_SPLITS, check_training_splits, make_splits, read_splits, write_splits
from samdpo.data.store import IMAGES, LABELS, TABLE, SampleStore, write_store
from samdpo.errors import ConfigError, DataError


def test_store_round_trip(amos_root: Path, tmp_path: Path) -> None:
    samples = list(readers.iter_samples("amos", amos_root, 32))
    count = write_store(iter(samples), tmp_path / "store", "amos", 32, progress=False)
    store = SampleStore(tmp_path / "store")
    assert count == len(store) == len(samples)
    assert store.kind == "amos" and store.image_size == 32 and len(store.class_names) == 15
    assert store.images().shape == (count, 32, 32) and store.images().dtype == np.uint8
    np.testing.assert_allclose(store.image(3), samples[3].image, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(store.labels()[3], samples[3].label)
    assert list(store.samples["sample_id"]) == [s.sample_id for s in samples]
    # the table carries no ground truth: prompts and candidates never need to open labels.npy
    assert not any("label" in column or "class" in column for column in store.samples.columns)


def test_a_failing_reader_leaves_no_store_files(amos_root: Path, tmp_path: Path) -> None:
    def broken():
        yield from readers.iter_samples("amos", amos_root, 32)
        raise DataError("disk went away")

    with pytest.raises(DataError, match="disk went away"):
        write_store(broken(), tmp_path / "store", "amos", 32, progress=False)
    assert not (tmp_path / "store").exists()  # a failed first write leaves no folder
    with pytest.raises(DataError, match="no prepared sample table"):
        SampleStore(tmp_path / "store")


def test_store_rejects_empty_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no samples"):
        write_store(iter([]), tmp_path / "s", "busi", 32, progress=False)
    assert not any((tmp_path / "s" / name).exists() for name in (IMAGES, LABELS, TABLE))


CASES = [f"case_{i:03d}" for i in range(50)]


def test_split_fractions_and_disjointness() -> None:
    assignment = make_splits(CASES, 0.1, 0.1, seed=0, validation=0.1)
    assert sorted(assignment) == CASES  # every case exactly once
    counts = {s: sum(v == s for v in assignment.values()) for s in SPLITS}
    assert counts == {"labeled": 5, "unlabeled": 5, "validation": 5, "test": 35}
    assert sum(v == "unlabeled" for v in make_splits(CASES, 0.2, 0.3, seed=0, validation=0.1).values()) == 15


def test_validation_is_taken_from_test_and_never_moves_with_the_unlabelled_fraction() -> None:
    before = make_splits(CASES, 0.1, 0.1, seed=3, validation=0.1)
    # the alignment study's larger unlabelled fractions take test cases, never validation ones
    for fraction in (0.2, 0.4):
        grown = make_splits(CASES, 0.1, fraction, seed=3, validation=0.1)
        for name in ("labeled", "validation"):
            assert {c for c, s in grown.items() if s == name} == {c for c, s in before.items() if s == name}
    # at least two validation cases, even where the fraction rounds to fewer
    assert sum(v == "validation" for v in make_splits(CASES[:8], 0.1, 0.1, 0, validation=0.01).values()) == 2


def test_split_seed_stability() -> None:
    split = {"validation": 0.1}
    assert make_splits(CASES, 0.1, 0.1, 4, **split) == make_splits(list(reversed(CASES)), 0.1, 0.1, 4, **split)
    assert make_splits(CASES, 0.1, 0.1, 4, **split) != make_splits(CASES, 0.1, 0.1, 5, **split)
    # adding cases moves none of the others out of the held-out splits into training
    grown = make_splits(CASES + [f"extra_{i}" for i in range(5)], 0.1, 0.1, 4, **split)
    before = make_splits(CASES, 0.1, 0.1, 4, **split)
    into_training = [c for c in CASES if before[c] in ("validation", "test") and grown[c] in TRAINING_SPLITS]
    assert len(into_training) <= 2


def test_split_small_datasets_get_their_least_cases() -> None:
    five = make_splits(["a", "b", "c", "d", "e"], 0.1, 0.1, 0, validation=0.1)
    assert sorted(five.values()) == ["labeled", "test", "unlabeled", "validation", "validation"]
    with pytest.raises(ConfigError, match="4 cases cannot give .* validation 2 .* need 5 cases"):
        make_splits(["a", "b", "c", "d"], 0.1, 0.1, 0, validation=0.1)
    with pytest.raises(ConfigError, match="splits.labeled must be in"):
        make_splits(CASES, 1.5, 0.1, 0, validation=0.1)
    with pytest.raises(ConfigError, match="splits.validation must be in"):
        make_splits(CASES, 0.1, 0.1, 0, validation=0.0)
    with pytest.raises(ConfigError, match="0.5 \\+ validation 0.1 = 1.1 leaves no test cases"):
        make_splits(CASES, 0.5, 0.5, 0, validation=0.1)


def test_trainers_never_take_held_out_labels() -> None:
    assert check_training_splits("unet.splits", ["labeled", "unlabeled"]) == ("labeled", "unlabeled")
    for held_out in ("test", "validation"):
        with pytest.raises(ConfigError, match=f"nnunet.splits: .* names {held_out}, whose labels are held out"):
            check_training_splits("nnunet.splits", ["labeled", held_out])
    with pytest.raises(ConfigError, match="unet.splits must be distinct splits among labeled, unlabeled"):
        check_training_splits("unet.splits", ["labeled", "labeled"])


def test_split_is_per_case_not_per_slice(amos_root: Path, tmp_path: Path) -> None:
    write_store(readers.iter_samples("amos", amos_root, 32), tmp_path / "store", "amos", 32, progress=False)
    store = SampleStore(tmp_path / "store")
    write_splits(make_splits(store.samples["case_id"], 0.1, 0.1, 0, validation=0.1), tmp_path / "splits.csv")
    splits = read_splits(tmp_path / "splits.csv")
    per_case = store.samples.assign(split=store.samples["case_id"].map(splits)).groupby("case_id")["split"].nunique()
    assert (per_case == 1).all() and set(splits.values()) == set(SPLITS)
    (tmp_path / "bad.csv").write_text("case,fold\na,1\n")
    with pytest.raises(DataError, match="bad.csv: expected columns"):
        read_splits(tmp_path / "bad.csv")


def test_nan_pixels_are_named_and_nothing_is_written(amos_root: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    def with_nan():
        for k, sample in enumerate(readers.iter_samples("amos", amos_root, 32)):
            if k == 3:
                image = sample.image.copy()
                image[4, 4] = np.nan
                sample = replace(sample, image=image)
            yield sample

    with pytest.raises(DataError, match="NaN or infinite pixels"):
        write_store(with_nan(), tmp_path / "store", "amos", 32, progress=False)
    assert not (tmp_path / "store").exists()  # a failed first write leaves no folder
