"""Evaluation metrics (2D Dice / NSD / HD95, 3D Dice), summaries, results tables and the eval/table commands."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from samdpo.data.sample import Sample
from samdpo.data.splits import write_splits
from samdpo.data.store import write_store
from samdpo.errors import ConfigError, DataError
from samdpo.evaluation import commands, metrics, tables
from samdpo.predictions import align_predictions

S = 32


def _samples(
    ids: list[str], cases: list[str] | None = None, slices: list[int] | None = None, spacing=(1.0, 1.0)
) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "sample_id": ids,
            "case_id": cases or ids,
            "slice_index": slices or [0] * n,
            "spacing_row": [spacing[0]] * n,
            "spacing_col": [spacing[1]] * n,
        }
    )


def _square(r0: int, c0: int, size: int = 10) -> np.ndarray:
    mask = np.zeros((S, S), bool)
    mask[r0 : r0 + size, c0 : c0 + size] = True
    return mask


def _probs(*masks: np.ndarray) -> np.ndarray:
    """(1, T, S, S) uint8 probabilities: 255 inside each class mask, 0 outside."""
    return (np.stack(masks)[None] * 255).astype(np.uint8)


def _label(*masks: np.ndarray) -> np.ndarray:
    """(1, S, S) label map, class k+1 where masks[k]."""
    label = np.zeros((S, S), np.uint8)
    for k, mask in enumerate(masks):
        label[mask] = k + 1
    return label[None]


def test_perfect_prediction() -> None:
    gt = _square(5, 5)
    frame = metrics.evaluate(_probs(gt), _label(gt), _samples(["a"]), ["liver"])
    assert frame.to_dict("records") == [
        {
            "sample_id": "a",
            "case_id": "a",
            "class_name": "liver",
            "dice": 100.0,
            "nsd": 100.0,
            "hd95": 0.0,
            "pred_empty": False,
        }
    ]


@pytest.mark.parametrize("shift", [1, 3, 5])
def test_shifted_square_hd95_is_shift_times_spacing(shift: int) -> None:
    gt, pred = _square(8, 8, 12), _square(8, 8 + shift, 12)
    frame = metrics.evaluate(_probs(pred), _label(gt), _samples(["a"], spacing=(2.0, 0.5)), ["x"])
    row = frame.iloc[0]
    assert row["hd95"] == pytest.approx(shift * 0.5)
    assert row["dice"] == pytest.approx(100.0 * (12 - shift) / 12)
    # the shift moves surfaces by shift * 0.5 mm: within the default 2 mm tolerance up to 4 pixels
    assert (row["nsd"] == pytest.approx(100.0)) == (shift * 0.5 <= 2.0)


def test_shift_along_rows_uses_row_spacing() -> None:
    frame = metrics.evaluate(_probs(_square(11, 8)), _label(_square(8, 8)), _samples(["a"], spacing=(0.5, 2.0)), ["x"])
    assert frame.loc[0, "hd95"] == pytest.approx(1.5)


def test_nsd_of_a_shifted_line() -> None:
    gt = np.zeros((S, S), bool)
    gt[5:25, 10] = True
    pred = np.roll(gt, 3, axis=1)  # every surface point 3 px = 3 mm away
    for tolerance, expected in ((2.0, 0.0), (3.0, 100.0)):
        frame = metrics.evaluate(_probs(pred), _label(gt), _samples(["a"]), ["x"], tolerance_mm=tolerance)
        assert frame.loc[0, "nsd"] == pytest.approx(expected)
        assert frame.loc[0, "hd95"] == pytest.approx(3.0)


def _blobs(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, S, S) bool random shapes: thresholded smoothed noise, some touching the image border, some in pieces."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal((count, S, S)), sigma=(0, 3, 3))
    return noise > rng.uniform(0.0, 0.3, size=(count, 1, 1))


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")
def test_dice_nsd_and_hd95_equal_monais_on_random_masks() -> None:
    """The numpy metrics are MONAI's (compute_dice, compute_surface_dice, compute_hausdorff_distance at the 95th
    percentile) on random shapes, anisotropic spacings and several tolerances."""
    rng = np.random.default_rng(0)
    checked = 0
    for spacing, tolerance in (((1.0, 1.0), 2.0), ((2.0, 0.5), 1.0), ((0.7, 1.3), 3.0)):
        pred, target = _blobs(rng, 24), _blobs(rng, 24)
        keep = pred.any(axis=(1, 2)) & target.any(axis=(1, 2))
        pred, target = pred[keep], target[keep]
        dice, nsd, hd95, _ = metrics._image_scores(pred, target, spacing, tolerance)
        y_pred, y = torch.from_numpy(pred.astype(np.float32))[None], torch.from_numpy(target.astype(np.float32))[None]
        np.testing.assert_allclose(dice, 100 * compute_dice(y_pred, y, include_background=True)[0].numpy(), rtol=1e-5)
        expected_nsd = compute_surface_dice(
            y_pred, y, [tolerance] * len(pred), include_background=True, spacing=spacing
        )
        np.testing.assert_allclose(nsd, 100 * expected_nsd[0].numpy(), rtol=1e-5)
        expected_hd = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
        np.testing.assert_allclose(hd95, expected_hd[0].numpy(), rtol=1e-5, atol=1e-5)
        checked += len(pred)
    assert checked >= 40


def test_empty_prediction_of_a_present_class() -> None:
    gt = _square(5, 5)
    frame = metrics.evaluate(_probs(np.zeros_like(gt)), _label(gt), _samples(["a"]), ["x"])
    row = frame.iloc[0]
    assert row["dice"] == 0.0 and row["nsd"] == 0.0 and math.isnan(row["hd95"]) and bool(row["pred_empty"])


def test_threshold_applies_to_uint8_probabilities() -> None:
    gt = _square(5, 5)
    probs = (np.stack([gt])[None] * 128).astype(np.uint8)  # 128 / 255 = 0.502
    assert metrics.evaluate(probs, _label(gt), _samples(["a"]), ["x"], threshold=0.5).loc[0, "dice"] == 100.0
    assert metrics.evaluate(probs, _label(gt), _samples(["a"]), ["x"], threshold=0.6).loc[0, "pred_empty"]
    assert metrics.probability_cut(0.5) == 128 and metrics.probability_cut(0.2) == 51
    with pytest.raises(ConfigError, match="threshold"):
        metrics.probability_cut(1.0)


def test_absent_classes_are_skipped_and_counted_as_false_positives() -> None:
    liver, spleen = _square(2, 2, 8), _square(20, 20, 8)
    # image a: liver only, spleen predicted anyway; image b: liver only, nothing else predicted
    probs = np.concatenate([_probs(liver, spleen), _probs(liver, np.zeros_like(spleen))])
    labels = np.concatenate([_label(liver), _label(liver)])
    frame = metrics.evaluate(probs, labels, _samples(["a", "b"]), ["liver", "spleen"])
    assert list(frame["class_name"]) == ["liver", "liver"]
    fp = metrics.absent_class_false_positives(probs, labels, ["liver", "spleen"])
    assert fp.to_dict("list") == {
        "class_name": ["liver", "spleen"],
        "absent_images": [0, 2],
        "false_positives": [0, 1],
        "false_positive_rate": pytest.approx([math.nan, 0.5], nan_ok=True),
    }
    summary = metrics.summarize(frame, None, ["liver", "spleen"], fp)
    assert summary["false_positive_rate"] == 0.5
    assert summary["classes_without_images"] == ["spleen"] and summary["mdice"] == 100.0


def test_volume_dice_pools_the_slices_of_a_case() -> None:
    gt = _square(4, 4, 10)
    half = np.zeros_like(gt)
    half[4:9, 4:14] = True  # the top half of the square: 2D Dice 2*50/(50+100) = 66.67
    probs = np.concatenate([_probs(half), _probs(gt), _probs(gt), _probs(gt)])
    labels = np.concatenate([_label(gt)] * 4)
    samples = _samples(["c1_z2", "c1_z1", "c2_z0", "c2_z5"], ["c1", "c1", "c2", "c2"], [2, 1, 0, 5])
    volumes = metrics.volume_dice(probs, labels, samples, ["x"])
    assert list(volumes["case_id"]) == ["c1", "c2"] and list(volumes["slices"]) == [2, 2]
    # c1: |P n G| = 50 + 100, |P| + |G| = 150 + 200 -> 85.71 %, not the mean of the 2D Dice values
    assert volumes.loc[0, "dice"] == pytest.approx(100 * 300 / 350)
    assert volumes.loc[1, "dice"] == pytest.approx(100.0)
    # same as MONAI's Dice on the volume stacked in slice order
    volume_pred = torch.from_numpy(np.stack([gt, half]).astype(np.float32))[None, None]
    volume_gt = torch.from_numpy(np.stack([gt, gt]).astype(np.float32))[None, None]
    assert volumes.loc[0, "dice"] == pytest.approx(
        100 * float(compute_dice(volume_pred, volume_gt, include_background=True))
    )
    per_image = metrics.evaluate(probs, labels, samples, ["x"])
    summary = metrics.summarize(per_image, volumes, ["x"])
    assert summary["mdice_3d"] == pytest.approx((100 * 300 / 350 + 100) / 2)
    with pytest.raises(DataError, match="more than once"):
        metrics.volume_dice(probs, labels, _samples(["a", "b", "c", "d"], ["c1"] * 4, [0, 0, 1, 2]), ["x"])


def test_mdice_averages_per_class_means() -> None:
    per_image = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "a"],
            "case_id": ["a", "b", "c", "a"],
            "class_name": ["liver", "liver", "liver", "spleen"],
            "dice": [90.0, 80.0, 70.0, 20.0],
            "nsd": [100.0, 100.0, 100.0, 40.0],
            "hd95": [1.0, 2.0, math.nan, 5.0],
            "pred_empty": [False, False, True, False],
        }
    )
    summary = metrics.summarize(per_image, None, ["liver", "spleen", "kidney"])
    assert summary["dice_per_class"] == {"liver": 80.0, "spleen": 20.0, "kidney": None}
    assert summary["mdice"] == 50.0  # (80 + 20) / 2, not the pooled (90+80+70+20)/4
    assert summary["nsd"] == 70.0 and summary["hd95"] == pytest.approx((1.5 + 5.0) / 2)
    assert summary["classes_without_images"] == ["kidney"] and summary["hd95_empty_predictions"] == 1
    assert summary["images"] == 3 and summary["images_per_class"] == {"liver": 3, "spleen": 1, "kidney": 0}
    json.dumps(summary, allow_nan=False)  # JSON-ready


def test_mismatched_inputs_raise_data_errors() -> None:
    gt = _square(5, 5)
    with pytest.raises(DataError, match="2 class names"):
        metrics.evaluate(_probs(gt), _label(gt), _samples(["a"]), ["x", "y"])
    meta = {"sample_ids": ["a"], "class_names": ["liver"], "dataset": "amos"}
    with pytest.raises(DataError, match="class names"):
        align_predictions(meta, ["a"], ["spleen"])
    with pytest.raises(DataError, match="not in the store"):
        align_predictions({**meta, "sample_ids": ["a", "zz"]}, ["a"], ["liver"])
    with pytest.raises(DataError, match="dataset"):
        align_predictions(meta, ["a"], ["liver"], "busi")
    assert list(align_predictions({**meta, "sample_ids": ["b", "a"]}, ["a", "b"], ["liver"])) == [1, 0]


AMOS_NAMES = [f"organ{i}" for i in range(1, 16)]


def _summary(names: list[str], offset: float) -> dict:
    dice = {n: 50.0 + offset + i for i, n in enumerate(names)}
    mdice = float(np.mean(list(dice.values())))
    return {
        "class_names": names,
        "dice_per_class": dice,
        "mdice": mdice,
        "mdice_3d": 61.234,
        "false_positive_rate": 0.25,
        "nsd": 70.0,
        "hd95": 3.456,
    }


def test_table_columns_of_a_15_class_dataset(tmp_path: Path) -> None:
    rows = [
        {"method": m, "summary": _summary(AMOS_NAMES, k), "provenance": "amos test split; stage1"}
        for k, m in enumerate(["a", "b"])
    ]
    table = tables.build_table(rows, AMOS_NAMES, "amos")
    assert list(table.columns) == [
        "method",
        "mdice",
        "mdice_sd",
        *AMOS_NAMES,
        "mdice_3d",
        "fp_absent",
        "nsd",
        "hd95",
        "seeds",
        "data_models",
    ]
    assert table.loc[0, "mdice"] == 57.0 and table.loc[1, "organ15"] == 65.0
    assert table.loc[0, "seeds"] == 1 and math.isnan(table.loc[0, "mdice_sd"])
    assert table.loc[0, "mdice_3d"] == 61.23 and table.loc[0, "hd95"] == 3.46
    assert table.loc[0, "fp_absent"] == 25.0  # per cent of the absent (image, organ) pairs given a mask
    written = tables.write_table(table, tmp_path / "amos_table.csv")
    assert [p.name for p in written] == ["amos_table.csv", "amos_table.md", "amos_table.png"]
    assert pd.read_csv(written[0]).shape == (2, 24)
    markdown = written[1].read_text()
    assert markdown.startswith("| method") and "organ15" in markdown and markdown.count("\n") == 4
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_label_volume_summaries_give_the_3d_columns(tmp_path: Path) -> None:
    """`samdpo table --volumes`: 3D Dice, NSD and HD95 read off the label volumes follow the per-class 3D Dice;
    a volume summary of another model than its row's is refused."""
    paths, volumes = [], []
    for k, method in enumerate(["a", "b"]):
        summary = {**_summary(AMOS_NAMES, k), "model": f"models/{method}", "dataset": "amos"}
        paths.append(tmp_path / f"{method}.json")
        paths[-1].write_text(json.dumps(summary))
        volumes.append(tmp_path / f"{method}_volumes.json")
        volumes[-1].write_text(
            json.dumps({"model": f"models/{method}", "mdice_3d": 70.0 + k, "nsd_3d": 80.0, "hd95_3d": 4.5})
        )
    rows = tables.table_rows(paths, ["a", "b"], "amos", volumes)
    table = tables.build_table(rows, AMOS_NAMES, "amos")
    columns = list(table.columns)
    assert columns[columns.index("mdice_3d") : columns.index("fp_absent")] == [
        "mdice_3d",
        "mdice_3d_nii",
        "nsd_3d_nii",
        "hd95_3d_nii",
    ]
    assert table["mdice_3d_nii"].tolist() == [70.0, 71.0] and table.loc[0, "hd95_3d_nii"] == 4.5
    assert table.loc[0, "mdice_3d"] == 61.23  # the per-class masks' 3D Dice, from the evaluation summary
    with pytest.raises(DataError, match="label volumes of models/b, not models/a"):
        tables.table_rows(paths, ["a", "b"], "amos", volumes[::-1])
    with pytest.raises(ConfigError, match="--volumes gives 1 files for 2 summaries"):
        tables.table_rows(paths, ["a", "b"], "amos", volumes[:1])


def test_table_columns_of_a_one_class_dataset(tmp_path: Path) -> None:
    summary = {**_summary(["tumor"], 0), "mdice_3d": None, "hd95": None}
    table = tables.build_table([{"method": "ours", "summary": summary, "provenance": "busi"}], ["tumor"], "busi")
    assert list(table.columns) == ["method", "dice", "dice_sd", "nsd", "hd95", "seeds", "data_models"]
    assert table.loc[0, "dice"] == 50.0 and math.isnan(table.loc[0, "hd95"])
    tables.write_table(table, tmp_path / "busi_table.csv")
    assert (tmp_path / "busi_table.png").stat().st_size > 0
    markdown = (tmp_path / "busi_table.md").read_text()
    assert "| ours" in markdown and "nan" not in markdown  # missing values are empty cells


def test_a_method_trained_with_several_seeds_shows_their_mean_and_spread() -> None:
    rows = [
        {"method": m, "summary": _summary(["tumor"], offset), "provenance": f"seed {offset}"}
        for m, offset in (("ours", 0.0), ("ours", 2.0), ("ours", 4.0), ("unet", 1.0))
    ]
    table = tables.build_table(rows, ["tumor"], "busi")
    assert list(table["method"]) == ["ours", "unet"] and list(table["seeds"]) == [3, 1]
    assert table.loc[0, "dice"] == 52.0 and table.loc[0, "dice_sd"] == 2.0 and math.isnan(table.loc[1, "dice_sd"])
    assert table.loc[0, "data_models"] == "seed 0.0; seed 2.0; seed 4.0"
    with pytest.raises(ConfigError, match="next to each other"):
        tables.build_table([rows[0], rows[3], rows[1]], ["tumor"], "busi")


def test_table_refuses_summaries_of_other_classes() -> None:
    rows = [{"method": "a", "summary": _summary(["tumor"], 0), "provenance": ""}]
    with pytest.raises(DataError, match="classes"):
        tables.build_table(rows, ["lung"], "cxr")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samdpo")
    commands.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    args.func(args)


@pytest.fixture()
def evaluated(tmp_path: Path) -> Path:
    """A 3-case, 2-class store, its splits, predictions of all images and ``samdpo eval`` on them."""
    names = ("liver", "spleen")
    samples, probs, ids = [], [], []
    for case in ("c0", "c1", "c2"):
        for z in range(2):
            label = np.zeros((S, S), np.uint8)
            label[4:14, 4:14] = 1
            if z == 1:
                label[20:28, 20:28] = 2
            sample_id = f"{case}_z{z}"
            image = np.zeros((S, S), np.float32)
            samples.append(Sample(sample_id, case, z, image, label, (1.5, 1.5), "mm", names, "Tr", sample_id, (S, S)))
            probs.append(np.stack([label == 1, label == 2]) * 255)
            ids.append(sample_id)
    write_store(iter(samples), tmp_path / "store", "amos", S, progress=False)
    write_splits({"c0": "labeled", "c1": "test", "c2": "test"}, tmp_path / "splits.csv")
    (tmp_path / "probs").mkdir()
    np.save(tmp_path / "probs" / "probs.npy", np.stack(probs).astype(np.uint8))
    meta = {"dataset": "amos", "sample_ids": ids, "splits": ["unlabeled", "test"], "class_names": list(names)}
    meta.update({"model": "results/stage1/m", "model_settings_hash": "abc"})
    (tmp_path / "probs" / "probs.json").write_text(json.dumps(meta))
    base = [
        "eval",
        "--store",
        str(tmp_path / "store"),
        "--splits",
        str(tmp_path / "splits.csv"),
        "--probs",
        str(tmp_path / "probs"),
    ]
    _run([*base, "--out", str(tmp_path / "eval" / "m.csv"), "--method", "ours"])
    return tmp_path


def test_eval_command_writes_per_image_csv_and_summary(evaluated: Path) -> None:
    per_image = pd.read_csv(evaluated / "eval" / "m.csv")
    assert set(per_image["case_id"]) == {"c1", "c2"}  # test split only
    assert len(per_image) == 6 and (per_image["dice"] == 100.0).all()
    summary = json.loads((evaluated / "eval" / "m.json").read_text())
    assert summary["method"] == "ours" and summary["model"] == "results/stage1/m" and summary["threshold"] == 0.5
    assert summary["mdice"] == 100.0 and summary["mdice_3d"] == 100.0 and summary["hd95"] == 0.0
    assert summary["test_images"] == 4 and summary["volumes"] == 2 and summary["false_positive_rate"] == 0.0


def test_eval_of_several_models_writes_what_each_alone_writes(evaluated: Path) -> None:
    import shutil

    shutil.copytree(evaluated / "probs", evaluated / "other")
    base = ["eval", "--store", str(evaluated / "store"), "--splits", str(evaluated / "splits.csv")]
    both = [str(evaluated / "both" / "m.csv"), str(evaluated / "both" / "other.csv")]
    probs = [str(evaluated / "probs"), str(evaluated / "other")]
    _run([*base, "--probs", *probs, "--out", *both, "--method", "ours", "theirs"])
    for suffix in (".csv", ".json"):  # the first model as `samdpo eval` of it alone wrote it (the fixture)
        assert (evaluated / "both" / f"m{suffix}").read_bytes() == (evaluated / "eval" / f"m{suffix}").read_bytes()
    other = json.loads((evaluated / "both" / "other.json").read_text())
    assert other["method"] == "theirs" and other["probs"] == str(evaluated / "other") and other["mdice"] == 100.0
    with pytest.raises(ConfigError, match="give one each"):
        _run([*base, "--probs", str(evaluated / "probs"), str(evaluated / "other"), "--out", str(evaluated / "x.csv")])
    with pytest.raises(ConfigError, match="give one each"):
        _run([*base, "--probs", str(evaluated / "probs"), "--out", str(evaluated / "x.csv"), "--method", "a", "b"])
    assert not (evaluated / "x.csv").exists()


def test_table_command(evaluated: Path) -> None:
    summary = evaluated / "eval" / "m.json"
    out = evaluated / "results" / "amos_table.csv"
    _run(
        ["table", "--dataset", "amos", "--summaries", str(summary), str(summary), "--methods", "a", "b"]
        + ["--provenance", "synthetic AMOS", "--out", str(out)]
    )
    table = pd.read_csv(out)
    assert list(table.columns) == [
        "method",
        "mdice",
        "mdice_sd",
        "liver",
        "spleen",
        "mdice_3d",
        "fp_absent",
        "nsd",
        "hd95",
        "seeds",
        "data_models",
    ]
    assert table["data_models"][0].startswith("synthetic AMOS; model results/stage1/m")
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    with pytest.raises(ConfigError, match="one name per summary"):
        _run(
            [
                "table",
                "--dataset",
                "amos",
                "--summaries",
                str(summary),
                "--methods",
                "a",
                "b",
                "--provenance",
                "x",
                "--out",
                str(out),
            ]
        )
    spaced = ["--methods", "ours (2D, 10%)", "--provenance", "x", "--out", str(out)]
    _run(["table", "--dataset", "amos", "--summaries", str(summary), *spaced])
    assert list(pd.read_csv(out)["method"]) == ["ours (2D, 10%)"]  # a name with spaces is one method


def test_eval_command_refuses_predictions_of_other_classes_or_without_test_images(evaluated: Path) -> None:
    meta_path = evaluated / "probs" / "probs.json"
    meta = json.loads(meta_path.read_text())
    base = [
        "eval",
        "--store",
        str(evaluated / "store"),
        "--splits",
        str(evaluated / "splits.csv"),
        "--probs",
        str(evaluated / "probs"),
    ]
    meta_path.write_text(json.dumps({**meta, "class_names": ["liver", "kidney"]}))
    with pytest.raises(DataError, match="class names"):
        _run([*base, "--out", str(evaluated / "x.csv")])
    write_splits({"c0": "labeled", "c1": "unlabeled", "c2": "unlabeled"}, evaluated / "splits.csv")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="test split"):
        _run([*base, "--out", str(evaluated / "x.csv")])
    assert not (evaluated / "x.csv").exists()


def _per_image(rng: np.random.Generator, cases: int = 6, shift: float = 0.0) -> pd.DataFrame:
    rows = [
        {"sample_id": f"c{c}_z{z}", "case_id": f"c{c}", "class_name": name, "dice": float(rng.uniform(20, 90)) + shift}
        for c in range(cases)
        for z in range(3)
        for name in ("liver", "spleen")
        if not (name == "spleen" and z == 0)
    ]
    return pd.DataFrame(rows)


def test_paired_difference_is_the_table_metric_with_a_case_bootstrap() -> None:
    from samdpo.evaluation.paired import paired_difference

    reference = _per_image(np.random.default_rng(0))
    same = paired_difference(reference, reference.copy(), draws=200)
    assert same.difference == 0.0 and same.low == 0.0 and same.high == 0.0 and (same.cases, same.images) == (6, 18)
    shifted = reference.assign(dice=reference["dice"] + 5.0).sample(
        frac=1.0, random_state=1
    )  # row order does not matter
    result = paired_difference(reference, shifted, draws=200)
    expected = reference.groupby("class_name")["dice"].mean().mean()
    assert result.reference == pytest.approx(expected) and result.model == pytest.approx(expected + 5.0)
    assert (
        result.difference == pytest.approx(5.0)
        and result.low == pytest.approx(5.0)
        and result.high == pytest.approx(5.0)
    )
    noisy = reference.assign(dice=reference["dice"] + np.random.default_rng(2).normal(2.0, 10.0, len(reference)))
    spread = paired_difference(reference, noisy, draws=500, seed=3)
    assert spread.low < spread.difference < spread.high and spread.high - spread.low > 1.0
    assert paired_difference(reference, noisy, draws=500, seed=3) == spread  # seeded
    with pytest.raises(DataError, match="different \\(image, class\\) rows"):
        paired_difference(reference, reference.iloc[1:], draws=10)
    with pytest.raises(DataError, match="lacks the columns"):
        paired_difference(reference, reference.drop(columns="case_id"), draws=10)


def test_dpo_effect_command_writes_csv_and_markdown(tmp_path: Path) -> None:
    from samdpo.cli import main

    rng = np.random.default_rng(0)
    reference = _per_image(rng)
    reference.to_csv(tmp_path / "prompt_10.csv", index=False)
    reference.assign(dice=reference["dice"] - 1.0).to_csv(tmp_path / "dpo_score.csv", index=False)
    out = tmp_path / "amos_dpo_effect.csv"
    assert (
        main(
            [
                "dpo-effect",
                "--eval",
                str(tmp_path),
                "--reference",
                "prompt_10",
                "--models",
                "dpo_score",
                "--out",
                str(out),
                "--draws",
                "50",
            ]
        )
        == 0
    )
    effect = pd.read_csv(out)
    assert list(effect["model"]) == ["dpo_score"] and effect["difference"].iloc[0] == pytest.approx(-1.0)
    assert "| dpo_score |" in out.with_suffix(".md").read_text()
    assert (
        main(
            [
                "dpo-effect",
                "--eval",
                str(tmp_path),
                "--reference",
                "prompt_10",
                "--models",
                "dpo_rank",
                "--out",
                str(tmp_path / "x.csv"),
            ]
        )
        != 0
    )
    assert not (tmp_path / "x.csv").exists()


def test_the_papers_numbers_stand_beside_the_rows_of_their_models() -> None:
    """paper_row / paper_{metric}: the seed paper's row for each row's model on that dataset, empty elsewhere."""
    table = pd.DataFrame(
        {"method": ["U-Net", "mine", "ours"], "dice": [1.0, 2.0, 3.0], "nsd": [1.0] * 3, "data_models": ["x"] * 3}
    )
    models = {"U-Net": "unet", "mine": "zero_shot_cam_box", "ours": "prompt_10"}
    busi = tables.with_paper_numbers(table, models, "busi")
    assert list(busi.columns) == ["method", "dice", "nsd", "paper_row", "paper_dice", "data_models"]
    assert busi["paper_row"].tolist() == ["U-Net (20%)", "", ""]  # the paper's prompt_10 number is CXR's only
    assert busi["paper_dice"].iloc[0] == 57.35 and busi["paper_dice"].iloc[1:].isna().all()
    cxr = tables.with_paper_numbers(table, models, "cxr")
    assert cxr["paper_dice"].tolist()[::2] == [58.66, 75.60]
    amos = tables.with_paper_numbers(table.rename(columns={"dice": "mdice"}), {"U-Net": "nnunet"}, "amos")
    assert amos["paper_mdice"].iloc[0] == 65.21 and amos["paper_row"].iloc[0] == "nnU-Net (20%)"
    for entry in tables.paper_numbers()["rows"].values():  # a row name and Dice values only
        assert set(entry) - {"row"} <= {"cxr", "busi", "amos"} and all(0 < entry[d] < 100 for d in set(entry) - {"row"})
