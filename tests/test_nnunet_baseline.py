"""The nnU-Net baseline: the raw dataset nnunetv2 reads (checked by nnU-Net's own integrity check), its settings,
and one short run of the real nnUNetTrainer through the commands (prepare, train, predict) on a tiny store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from samdpo.baselines import nnunet
from samdpo.baselines.nnunet_raw import dataset_json, dataset_name, write_raw_dataset
from samdpo.baselines.nnunet_settings import NnunetSettings
from samdpo.cli import main
from samdpo.errors import ConfigError, DataError
from samdpo.settings import parse_settings
from tests.unet_data import CASES, CLASSES, SIZE, SPLIT
from tests.unet_data import data as data  # noqa: F401  (the module-scoped store fixture)

#: One epoch of three batches: the real trainer, as short as nnU-Net allows.
TINY = {"epochs": 1, "iterations_per_epoch": 3, "val_iterations_per_epoch": 1, "device": "cpu"}


def _arrays(count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 16, 16), dtype=np.uint8)
    labels = np.zeros((count, 16, 16), np.uint8)
    labels[:, 2:8, 2:8], labels[:, 9:14, 9:14] = 1, 2
    return images, labels


def test_raw_dataset_is_what_nnunet_reads_and_passes_its_integrity_check(tmp_path: Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    images, labels = _arrays()
    folder = tmp_path / dataset_name("busi")
    description = write_raw_dataset(images, labels, ["a_1", "b.2", "c-3"], ["liver", "spleen"], folder)
    assert folder.name == "Dataset001_BUSI"
    assert description == json.loads((folder / "dataset.json").read_text())
    assert description == {
        "channel_names": {"0": "zscore"},
        "labels": {"background": 0, "liver": 1, "spleen": 2},
        "numTraining": 3,
        "file_ending": ".png",
    }
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["a_1_0000.png", "b.2_0000.png", "c-3_0000.png"]
    assert np.array_equal(np.asarray(Image.open(folder / "imagesTr" / "b.2_0000.png")), images[1])
    assert np.array_equal(np.asarray(Image.open(folder / "labelsTr" / "c-3.png")), labels[2])
    verify_dataset_integrity(str(folder), num_processes=1)  # nnU-Net's own check raises on anything it refuses


@pytest.mark.parametrize(
    "ids, labels_max, classes, message",
    [
        (["a", "a", "b"], 2, ["x", "y"], "3 distinct case ids"),
        (["a", "b/c", "d"], 2, ["x", "y"], "not usable as file names"),
        (["a", "b", "c"], 3, ["x", "y"], "label value 3 but only 2 classes"),
        (["a", "b", "c"], 2, ["x", "x"], "class names must be distinct"),
        (["a", "b", "c"], 2, ["background", "y"], "none may be 'background'"),
    ],
)
def test_raw_dataset_refuses_what_nnunet_would_misread(
    tmp_path: Path, ids: list[str], labels_max: int, classes: list[str], message: str
) -> None:
    images, labels = _arrays()
    labels[0, 0, 0] = labels_max
    with pytest.raises(DataError, match=message):
        write_raw_dataset(images, labels, ids, classes, tmp_path / "Dataset001_X")
    assert not (tmp_path / "Dataset001_X").exists()  # nothing half-written


def test_dataset_json_numbers_the_classes_after_background() -> None:
    assert dataset_json(["a", "b", "c"], 7)["labels"] == {"background": 0, "a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(
    "values, field",
    [
        ({"epochs": 0}, "nnunet.epochs"),
        ({"iterations_per_epoch": 0}, "nnunet.iterations_per_epoch"),
        ({"device": "tpu"}, "nnunet.device"),
        ({"splits": ["test", "test"]}, "nnunet.splits"),
        ({"epoch": 3}, "epoch"),
    ],
)
def test_bad_settings_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_settings(NnunetSettings, values, "nnunet")


def test_the_schedule_is_named_for_the_tables() -> None:
    assert NnunetSettings(epochs=None).schedule.startswith("nnU-Net's default schedule (nnUNetTrainer")
    assert NnunetSettings(epochs=3, iterations_per_epoch=7).schedule == "short schedule (3 epochs x 7 iterations)"


def _run(action: str, store: Path, splits: Path, root: Path, *extra: str) -> None:
    args = ["nnunet", action, "--store", str(store), "--splits", str(splits), "--root", str(root), "--no-progress"]
    assert main([*args, *extra]) == 0


def _weights(root: Path) -> dict[str, torch.Tensor]:
    folder, _ = nnunet.read_model(root, "synthetic")
    checkpoint = torch.load(folder / "fold_0" / nnunet.CHECKPOINT, map_location="cpu", weights_only=False)
    return checkpoint["network_weights"]


def test_prepare_train_predict_with_the_real_trainer(
    data: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One epoch of nnUNetTrainerShortSchedule on the 10 training images, validated on the 2 validation images
    (nnU-Net's fold 0); the test split's labels hold an impossible class, so reading them anywhere here would fail;
    nnU-Net's folders are the root's whatever the environment says; the run repeats exactly; the probabilities are
    in the pipeline's format."""
    store, splits = data
    elsewhere = tmp_path / "users_nnunet"
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(elsewhere / name))
    root, settings = tmp_path / "nnunet", json.dumps(TINY)
    _run("prepare", store, splits, root, "--settings", settings)
    _run("train", store, splits, root, "--settings", settings)
    assert not elsewhere.exists()
    trained = sorted(p.name for p in (root / "nnUNet_raw" / "Dataset001_SYNTHETIC" / "imagesTr").iterdir())
    assert len(trained) == sum(split != "test" for split in SPLIT.values())
    fold = json.loads((root / "nnUNet_preprocessed" / "Dataset001_SYNTHETIC" / "splits_final.json").read_text())
    ids = {split: {f"s{i:02d}" for i in range(CASES) if SPLIT[f"case{i:02d}"] == split} for split in SPLIT.values()}
    assert set(fold[0]["val"]) == ids["validation"] and set(fold[0]["train"]) == ids["labeled"] | ids["unlabeled"]
    folder, record = nnunet.read_model(root, "synthetic")
    assert folder.name == "nnUNetTrainerShortSchedule__nnUNetPlans__2d"
    assert record["schedule"] == "short schedule (1 epochs x 3 iterations)" and record["class_names"] == list(CLASSES)
    assert list((folder / "fold_0").glob("training_log_*.txt")) and (folder / "fold_0" / "progress.png").is_file()
    assert record["selection"]["chosen_epoch"] == 1 and record["selection"]["split"] == "validation"
    curve = pd.read_csv(root / "nnUNet_results" / nnunet.CURVE)
    assert list(curve.columns) == ["epoch", "train_loss", "val_loss", "pseudo_dice", "ema_pseudo_dice", "seconds"]

    (store / "labels.npy").rename(store / "labels.hidden")  # prediction reads no label at all
    try:
        _run("predict", store, splits, root, "--out", str(tmp_path / "pred"), "--device", "cpu")
    finally:
        (store / "labels.hidden").rename(store / "labels.npy")
    probs = np.load(tmp_path / "pred" / "probs.npy")
    meta = json.loads((tmp_path / "pred" / "probs.json").read_text())
    assert probs.shape == (sum(split == "test" for split in SPLIT.values()), len(CLASSES), SIZE, SIZE)
    assert (
        probs.dtype == np.uint8
        and meta["splits"] == ["test"]
        and meta["model_settings_hash"] == record["settings_hash"]
    )
    assert (probs.astype(int).sum(axis=1) <= 255 + len(CLASSES)).all()  # softmax: the classes share each pixel

    again = tmp_path / "again"
    _run("prepare", store, splits, again, "--settings", settings)
    _run("train", store, splits, again, "--settings", settings)
    first, second = _weights(root), _weights(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_budget_ends_training_with_nnunets_own_end(data: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    """A spent budget ends nnU-Net's training after the epoch that spent it, through nnU-Net's own end of
    training (checkpoint_final.pth beside checkpoint_best.pth), and settings.json says why."""
    store, splits = data
    root, settings = tmp_path / "nnunet", json.dumps({**TINY, "epochs": 5, "budget_s": 0.001})
    _run("prepare", store, splits, root, "--settings", settings)
    _run("train", store, splits, root, "--settings", settings)
    folder, record = nnunet.read_model(root, "synthetic")
    assert record["selection"]["stopped"] == "budget" and record["selection"]["epochs_run"] == 1
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file() and (folder / "fold_0" / nnunet.CHECKPOINT).is_file()


def test_a_failed_training_leaves_no_results_folder(
    data: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, splits = data
    root = tmp_path / "nnunet"
    _run("prepare", store, splits, root, "--settings", json.dumps(TINY))

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(nnunet, "_trainer", fail)
    with pytest.raises(RuntimeError, match="killed mid-training"):
        main(["nnunet", "train", "--store", str(store), "--splits", str(splits), "--root", str(root)])
    assert not (root / "nnUNet_results").exists() and not list(root.glob(".nnUNet_results.*"))
    assert (
        main(
            [
                "nnunet",
                "predict",
                "--store",
                str(store),
                "--splits",
                str(splits),
                "--root",
                str(root),
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 2
    )


def test_train_before_prepare_is_one_line(data: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # noqa: F811
    store, splits = data
    assert main(["nnunet", "train", "--store", str(store), "--splits", str(splits), "--root", str(tmp_path)]) == 2
    assert "nnUNetPlans.json: missing; run `samdpo nnunet prepare` first" in capsys.readouterr().err
    assert not (tmp_path / "nnUNet_results").exists()
