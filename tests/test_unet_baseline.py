"""The U-Net (20% labelled) baseline: settings, reproducible training, resume, learning an easy task,
and probability maps in the pipeline's probs.npy / probs.json format without reading labels."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.baselines import unet as unet_module
from samdpo.baselines.commands import add_commands
from samdpo.baselines.unet import WEIGHTS, build_unet, load_unet, predict_unet, train_unet
from samdpo.baselines.unet_settings import UnetSettings
from samdpo.data.store import IMAGES, LABELS, TABLE, SampleStore
from samdpo.errors import ConfigError, DataError
from samdpo.predictions import PROBS
from samdpo.settings import parse_settings
from tests.unet_data import CASES, CLASSES, FAST, SIZE, SPLIT, case_arrays, train_images
from tests.unet_data import data as data  # noqa: F401  (the module-scoped store fixture)
from tests.unet_data import one_thread as one_thread  # noqa: F401  (autouse: one torch thread per test)


def _run(*argv: str) -> None:
    parser = argparse.ArgumentParser(prog="samdpo")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    args.func(args)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"epochs": 0}, "unet.epochs"),
        ({"lr": -1}, "unet.lr"),
        ({"lr": "fast"}, "unet.lr"),
        ({"batch_size": 1.5}, "unet.batch_size"),
        ({"channels": [16]}, "unet.channels"),
        ({"strides": [2, 2]}, "unet.strides"),
        ({"num_res_units": -1}, "unet.num_res_units"),
        ({"device": "tpu"}, "unet.device"),
        ({"splits": ["labeled", "validation"]}, "unet.splits"),
        ({"splits": []}, "unet.splits"),
        ({"epoch": 3}, "unet.epoch: unknown"),
    ],
)
def test_bad_settings_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_settings(UnetSettings, values, "unet")


def test_bad_settings_on_the_command_line_and_sizes(data: tuple[Path, Path], tmp_path: Path) -> None:
    store, splits = data
    with pytest.raises(ConfigError, match="unet.epochs"):
        _run(
            "unet",
            "train",
            "--store",
            str(store),
            "--splits",
            str(splits),
            "--out",
            str(tmp_path),
            "--settings",
            '{"epochs": 0}',
        )
    with pytest.raises(ConfigError, match="--settings is not valid JSON"):
        _run(
            "unet",
            "train",
            "--store",
            str(store),
            "--splits",
            str(splits),
            "--out",
            str(tmp_path),
            "--settings",
            "{epochs",
        )
    images, labels = train_images(store)
    with pytest.raises(ConfigError, match="unet.strides"):  # 32 px cannot go down 5 times by 2 and keep 2 px
        train_unet(
            images,
            labels,
            2,
            replace(FAST, channels=(4, 4, 4, 4, 4, 4), strides=(2,) * 5),
            tmp_path,
            {},
            progress=False,
        )
    with pytest.raises(DataError, match="label 9"):
        train_unet(*train_images(store, ("test",)), 2, FAST, tmp_path, {}, progress=False)
    assert not (tmp_path / WEIGHTS).exists()


def test_training_is_reproducible(data: tuple[Path, Path], tmp_path: Path) -> None:
    images, labels = train_images(data[0])
    first = train_unet(images, labels, 2, FAST, tmp_path / "a", {"test": 1}, progress=False)
    second = train_unet(images, labels, 2, FAST, tmp_path / "b", {"test": 1}, progress=False)
    assert [row["loss"] for row in first] == [row["loss"] for row in second]
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    for name in ("loss.csv", "loss.png", "settings.json"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    saved = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert (
        saved["test"] == 1
        and saved["unet"]["channels"] == [8, 16, 32]
        and saved["class_count"] == 2
        and saved["image_size"] == SIZE
    )
    model, spec = load_unet(tmp_path / "a")
    assert spec["settings_hash"] == saved["settings_hash"]
    reference = build_unet(2, FAST)
    reference.load_state_dict(model.state_dict())
    cpu = torch.device("cpu")
    again = predict_unet(reference, images, cpu, 5, progress=False)
    np.testing.assert_array_equal(predict_unet(model, images, cpu, 3, progress=False), again)


def test_an_interrupted_run_resumes_to_the_same_weights(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = train_images(data[0])
    settings = replace(FAST, epochs=3)
    train_unet(images, labels, 2, settings, tmp_path / "whole", {}, progress=False)
    real, calls = unet_module.segmentation_loss, {"n": 0}

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # the first step of epoch 3 (3 steps of 4, 4 and 2 images per epoch)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(unet_module, "segmentation_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_unet(images, labels, 2, settings, tmp_path / "cut", {}, progress=False)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / WEIGHTS).exists()
    monkeypatch.setattr(unet_module, "segmentation_loss", real)
    history = train_unet(images, labels, 2, settings, tmp_path / "cut", {}, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "cut" / WEIGHTS).read_bytes() == (tmp_path / "whole" / WEIGHTS).read_bytes()


def test_the_command_line_learns_and_predicts_without_labels(data: tuple[Path, Path], tmp_path: Path) -> None:
    store, splits = data
    settings = {
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 1,
        "epochs": 30,
        "lr": 0.01,
        "batch_size": 2,
        "device": "cpu",
        "validate_every": 30,  # the last epoch alone is scored (two validation images make a noisy choice)
    }
    model = tmp_path / "model"
    # the test split's labels are poisoned (label 9): training must read only the labelled + unlabelled ones
    _run(
        "unet",
        "train",
        "--store",
        str(store),
        "--splits",
        str(splits),
        "--out",
        str(model),
        "--settings",
        json.dumps(settings),
    )
    losses = [float(line.split(",")[1]) for line in (model / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 30 and losses[-1] < 0.3 * losses[0]
    saved = json.loads((model / "settings.json").read_text())
    assert saved["training_images"] == 10 and saved["class_names"] == list(CLASSES) and saved["model"] == "unet"
    assert saved["selection"]["chosen_epoch"] == 30 and saved["selection"]["split"] == "validation"

    blind = tmp_path / "blind"  # the store without labels.npy
    blind.mkdir()
    for name in (IMAGES, TABLE):
        shutil.copy(store / name, blind / name)
    assert not (blind / LABELS).exists()
    out = tmp_path / "probs"
    _run(
        "unet",
        "predict",
        "--store",
        str(blind),
        "--splits",
        str(splits),
        "--model",
        str(model),
        "--out",
        str(out),
        "--no-progress",
    )
    probs = np.load(out / f"{PROBS}.npy")
    meta = json.loads((out / f"{PROBS}.json").read_text())
    chosen = [i for i in range(CASES) if SPLIT[f"case{i:02d}"] in ("unlabeled", "test")]
    assert probs.dtype == np.uint8 and probs.shape == (len(chosen), len(CLASSES), SIZE, SIZE)
    assert set(meta) == {
        "dataset",
        "sample_ids",
        "sample_splits",
        "splits",
        "class_names",
        "model",
        "model_settings_hash",
    }
    assert meta["sample_ids"] == [f"s{i:02d}" for i in chosen] and meta["splits"] == ["unlabeled", "test"]
    assert meta["sample_splits"] == [SPLIT[f"case{i:02d}"] for i in chosen]
    assert meta["class_names"] == list(CLASSES) and meta["dataset"] == "synthetic"
    assert meta["model"] == str(model) and meta["model_settings_hash"] == saved["settings_hash"]
    for row, i in enumerate(chosen):
        if SPLIT[f"case{i:02d}"] != "test":
            continue  # held-out images: never trained on
        _, _, square = case_arrays(i)
        assert probs[row, 0][square].mean() > 0.7 * 255, i  # measured: >= 0.9
        assert probs[row, 0][~square].mean() < 0.1 * 255, i  # measured: <= 0.06
    # the format the pipeline's own prediction writes: round(p * 255) of the same network
    loaded, _ = load_unet(model)
    images = np.asarray(SampleStore(blind).images()[chosen])
    np.testing.assert_array_equal(probs, predict_unet(loaded, images, torch.device("cpu"), 5, progress=False))
    empty = predict_unet(loaded, np.zeros((0, SIZE, SIZE), np.uint8), torch.device("cpu"), 8, progress=False)
    assert empty.shape == (0, 2, SIZE, SIZE) and empty.dtype == np.uint8
