"""The paper's "nnU-Net (20% labelled)" baseline, run by the real nnU-Net (nnunetv2), 2D configuration, fold 0.

One folder per dataset (``results/baselines/{dataset}/nnunet``) holds nnU-Net's three folders, set for
every step by :func:`nnunet_environment` (whatever the user's environment says is overridden):

- ``nnUNet_raw``: the 20% split's images and labels, and the validation split's, in nnU-Net's raw format
  (:mod:`samdpo.baselines.nnunet_raw`);
- ``nnUNet_preprocessed``: nnU-Net's fingerprint, plans (``nnUNetPlans``, ``2d``), preprocessed cases and
  ``splits_final.json``, whose one fold (0) trains on the 20% split and validates on the validation split;
- ``nnUNet_results``: the trained model (``{trainer}__nnUNetPlans__2d/fold_0/checkpoint_best.pth``, chosen by
  nnU-Net itself on its EMA pseudo Dice of the validation cases, nnU-Net's training log and ``progress.png``),
  samdpo's ``settings.json`` and ``validation_curve.csv`` (nnU-Net's per-epoch losses and pseudo Dice), drawn as
  ``validation_curve.png`` beside the three folders.

Each folder is written to a temporary folder by nnU-Net and renamed when complete, so a crash never leaves a
folder that looks done. Training uses nnU-Net's ``nnUNetTrainer``; with ``epochs`` set,
:class:`~samdpo.baselines.nnunet_trainer.nnUNetTrainerShortSchedule` (the same trainer with a shorter schedule,
for the CPU). Augmentation runs in the main process and numpy, torch and random are seeded, so a run repeats.
Prediction feeds each stored test image to nnU-Net's predictor (no mirroring) and keeps the softmax probability
of every class: nnU-Net's classes are mutually exclusive, unlike the SAM rows' per-class sigmoids.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from samdpo import atomic
from samdpo.baselines.nnunet_raw import DATASET_ID, dataset_name, write_raw_dataset
from samdpo.baselines.nnunet_settings import NnunetSettings
from samdpo.errors import ConfigError, DataError
from samdpo.fingerprint import spec_hash

RAW, PREPROCESSED, RESULTS = "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"
CONFIGURATION, PLANS, FOLD = "2d", "nnUNetPlans", 0
#: The checkpoint predicted with: nnU-Net's best EMA pseudo Dice on the validation cases.
CHECKPOINT = "checkpoint_best.pth"
#: nnU-Net's per-epoch log, as samdpo writes it beside ``settings.json``, and drawn beside the three folders.
CURVE, PLOT = "validation_curve.csv", "validation_curve.png"
#: samdpo's record of a trained nnU-Net, beside nnU-Net's trainer folder in ``nnUNet_results``.
SETTINGS = "settings.json"
#: nnU-Net's spacing of 2D PNG cases (NaturalImage2DIO): every stored image is read with it.
PNG_SPACING = (999.0, 1.0, 1.0)


def nnunet_environment(root: Path, processes: int, augmentation_workers: int, **folders: Path) -> None:
    """Point nnunetv2 at ``root``'s three folders (or the ``folders`` given: raw, preprocessed, results) and set
    its process counts; call before importing nnunetv2 (``nnUNet_def_n_proc`` is read on import)."""
    paths = {RAW: root / RAW, PREPROCESSED: root / PREPROCESSED, RESULTS: root / RESULTS}
    paths |= {
        name: folders[key]
        for name, key in ((RAW, "raw"), (PREPROCESSED, "preprocessed"), (RESULTS, "results"))
        if key in folders
    }
    os.environ.update({name: str(path) for name, path in paths.items()})
    os.environ.update(
        nnUNet_def_n_proc=str(processes),
        nnUNet_n_proc_DA=str(augmentation_workers),
        nnUNet_compile="false",
        nnUNet_wandb_enabled="0",
    )
    os.environ.pop("nnUNet_extTrainer", None)


def _nnunetv2() -> Any:
    """Import nnunetv2, or a ConfigError saying how to install it."""
    try:
        import nnunetv2
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "the nnU-Net baseline needs the package nnunetv2, which is not installed: pip install nnunetv2"
        ) from exc
    return nnunetv2


def prepare(
    images: np.ndarray,
    labels: np.ndarray,
    case_ids: Sequence[str],
    class_names: Sequence[str],
    kind: str,
    root: Path,
    settings: NnunetSettings,
    progress: bool = True,
    validation: int = 0,
) -> dict[str, Any]:
    """Write the raw dataset, then run nnU-Net's fingerprint (with its dataset integrity check), planning and
    ``2d`` preprocessing into ``root/nnUNet_preprocessed``, with a ``splits_final.json`` whose fold 0 trains on
    the first N - ``validation`` cases and validates on the last ``validation``; returns the plans' ``2d``
    configuration.

    Args:
        images, labels: (N, S, S) uint8 images and label maps, training cases then validation cases;
            case_ids: their N ids.
        class_names: the T classes (label k = ``class_names[k - 1]``); kind: the dataset kind (names the dataset).
        root: the dataset's nnU-Net folder; settings: ``processes`` is used.
    """
    name = dataset_name(kind)
    write_raw_dataset(images, labels, case_ids, class_names, root / RAW / name)
    with atomic.atomic_dir(root / PREPROCESSED) as tmp:
        # planning sets torch's threads to the augmentation workers: at least one here
        nnunet_environment(root, settings.processes, 1, preprocessed=tmp)
        _nnunetv2()
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprint_dataset,
            plan_experiment_dataset,
            preprocess_dataset,
        )

        extract_fingerprint_dataset(
            DATASET_ID, num_processes=settings.processes, check_dataset_integrity=True, show_progress_bar=progress
        )
        plans, identifier = plan_experiment_dataset(DATASET_ID)
        if CONFIGURATION not in plans["configurations"]:
            raise DataError(f"nnU-Net planned no {CONFIGURATION} configuration for {name}")
        preprocess_dataset(
            DATASET_ID,
            identifier,
            configurations=(CONFIGURATION,),
            num_processes=(settings.processes,),
            show_progress_bar=progress,
        )
        train = len(case_ids) - validation
        if train < 1 or validation < 1:
            raise DataError(f"nnU-Net needs training and validation cases, got {train} and {validation}")
        fold = {"train": list(case_ids[:train]), "val": list(case_ids[train:])}
        (tmp / name / "splits_final.json").write_text(json.dumps([fold], indent=2) + "\n")
    return plans["configurations"][CONFIGURATION]


def _device(name: str) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("nnunet.device is cuda but no GPU is visible")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(root: Path, kind: str, settings: NnunetSettings, spec: dict[str, Any]) -> Path:
    """Train nnU-Net on ``root``'s preprocessed dataset into ``root/nnUNet_results`` (replaced when complete);
    returns the trainer folder (``{trainer}__nnUNetPlans__2d``).

    Args:
        root: the dataset's nnU-Net folder (after :func:`prepare`); kind: the dataset kind.
        settings: the schedule (``epochs`` null: nnU-Net's own trainer and schedule), device and seed.
        spec: what the model was trained on (written to ``settings.json`` with the settings and their hash).
    """
    name = dataset_name(kind)
    plans_file = root / PREPROCESSED / name / f"{PLANS}.json"
    if not plans_file.is_file():
        raise DataError(f"{plans_file}: missing; run `samdpo nnunet prepare` first")
    device = _device(settings.device)
    with atomic.atomic_dir(root / RESULTS) as tmp:
        nnunet_environment(root, settings.processes, 0, results=tmp)  # augmentation in this process: seedable
        _nnunetv2()
        trainer = _trainer(settings, _read_json(plans_file), _read_json(plans_file.parent / "dataset.json"), device)
        _seed(settings.seed)
        from samdpo.baselines.nnunet_trainer import TrainingEnded

        try:
            trainer.run_training()  # nnU-Net prints its progress and writes its own training log
        except TrainingEnded:
            trainer.on_train_end()  # nnU-Net's own end: checkpoint_final.pth, its data loaders stopped
        folder = Path(trainer.output_folder_base)
        curve = _curve({key: trainer.logger.get_value(key, step=None) for key in _LOGGED})
        atomic.write_text(tmp / CURVE, curve.to_csv(index=False))
        _plot_curve(curve, root / PLOT)
        record = {**spec, "settings": asdict(settings), "schedule": settings.schedule, "trainer": folder.name}
        record["selection"] = _selection(curve, getattr(trainer, "stopped", "schedule"), settings)
        record["settings_hash"] = spec_hash(record)
        (tmp / SETTINGS).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        trainer_folder = folder.name
    return root / RESULTS / name / trainer_folder


#: The keys of nnU-Net's per-epoch log that :func:`_curve` reads.
_LOGGED = (
    "train_losses",
    "val_losses",
    "mean_fg_dice",
    "ema_fg_dice",
    "epoch_start_timestamps",
    "epoch_end_timestamps",
)


def _curve(logged: dict[str, list[Any]]) -> Any:
    """nnU-Net's per-epoch log: epoch (from 1), train and validation loss, pseudo Dice and its EMA (%)."""
    import pandas as pd

    count = len(logged["ema_fg_dice"])
    return pd.DataFrame(
        {
            "epoch": np.arange(1, count + 1),
            "train_loss": np.asarray(logged["train_losses"][:count], float),
            "val_loss": np.asarray(logged["val_losses"][:count], float),
            "pseudo_dice": 100 * np.asarray(logged["mean_fg_dice"][:count], float),
            "ema_pseudo_dice": 100 * np.asarray(logged["ema_fg_dice"][:count], float),
            "seconds": np.subtract(logged["epoch_end_timestamps"][:count], logged["epoch_start_timestamps"][:count]),
        }
    )


def _plot_curve(curve: Any, path: Path) -> None:
    """nnU-Net's losses and validation pseudo Dice per epoch, as the other trainers' curves are drawn."""
    from samdpo.train.history import plot_history

    panels = [("nnU-Net: losses", ["train_loss", "val_loss"], False)]
    panels += [("validation pseudo Dice (%)", ["pseudo_dice", "ema_pseudo_dice"], False)]
    plot_history(curve.to_dict("records"), panels, path, title="nnU-Net baseline")


def _selection(curve: Any, stopped: str, settings: NnunetSettings) -> dict[str, Any]:
    """What settings.json records of nnU-Net's choice: its best EMA pseudo-Dice epoch (``checkpoint_best.pth``),
    epochs run, why training ended and the late gain of the EMA (:func:`samdpo.train.selection.late_gain`)."""
    from samdpo.train.selection import late_gain

    scores = list(zip(curve["epoch"].tolist(), curve["ema_pseudo_dice"].tolist()))
    best = int(curve["ema_pseudo_dice"].idxmax()) if len(curve) else None
    return {
        "chosen_epoch": None if best is None else int(curve["epoch"][best]),
        "validation_score": None if best is None else float(curve["ema_pseudo_dice"][best]),
        "criterion": "nnU-Net's EMA pseudo Dice of the validation cases (checkpoint_best.pth)",
        "epochs_run": len(curve),
        "stopped": stopped,
        "patience": settings.patience,
        "budget_s": settings.budget_s,
        "late_gain": late_gain(scores),
        "split": "validation",
    }


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _trainer(settings: NnunetSettings, plans: dict[str, Any], description: dict[str, Any], device: Any) -> Any:
    """nnU-Net's trainer for ``settings``: its own ``nnUNetTrainer``, or the short schedule."""
    plans["continue_training"] = False  # nnunetv2 >= 2.7 pops it in __init__
    if settings.epochs is None:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        return nnUNetTrainer(plans, CONFIGURATION, FOLD, description, device=device)
    from samdpo.baselines.nnunet_trainer import nnUNetTrainerShortSchedule

    trainer = nnUNetTrainerShortSchedule(plans, CONFIGURATION, FOLD, description, device=device)
    trainer.set_schedule(
        settings.epochs,
        settings.iterations_per_epoch,
        settings.val_iterations_per_epoch,
        settings.patience,
        settings.budget_s,
    )
    return trainer


def read_model(root: Path, kind: str) -> tuple[Path, dict[str, Any]]:
    """The trainer folder in ``root/nnUNet_results`` and samdpo's record of it (``settings.json``)."""
    record_path = root / RESULTS / SETTINGS
    if not record_path.is_file():
        raise DataError(f"{record_path}: missing; run `samdpo nnunet train` first")
    record = _read_json(record_path)
    folder = root / RESULTS / dataset_name(kind) / record["trainer"]
    if not (folder / f"fold_{FOLD}" / CHECKPOINT).is_file():
        raise DataError(f"{folder}: no fold_{FOLD}/{CHECKPOINT}; rerun `samdpo nnunet train`")
    return folder, record


def predictor(folder: Path, device_name: str) -> Any:
    """nnU-Net's predictor of a trained trainer folder (no mirroring), built without looking its trainer up by
    name: the short-schedule trainer keeps ``nnUNetTrainer``'s network, so that class builds it."""
    import torch

    _nnunetv2()
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(_read_json(folder / "plans.json"))
    description = _read_json(folder / "dataset.json")
    configuration = plans.get_configuration(CONFIGURATION)
    checkpoint = torch.load(folder / f"fold_{FOLD}" / CHECKPOINT, map_location="cpu", weights_only=False)
    network = nnUNetTrainer.build_network_architecture(
        plans,
        configuration,
        determine_num_input_channels(plans, configuration, description),
        plans.get_label_manager(description).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    device = _device(device_name)
    model = nnUNetPredictor(
        use_mirroring=False, perform_everything_on_device=device.type == "cuda", device=device, allow_tqdm=False
    )
    model.manual_initialization(
        network,
        plans,
        configuration,
        [checkpoint["network_weights"]],
        description,
        checkpoint["trainer_name"],
        checkpoint["inference_allowed_mirroring_axes"],
    )
    return model


def predict(model: Any, images: np.ndarray, out: np.ndarray, progress: bool = True) -> np.ndarray:
    """Fill ``out`` (N, T, S, S) uint8 with round(softmax probability x 255) of classes 1..T of each (N, S, S)
    uint8 image (nnU-Net's background channel dropped)."""
    if out.shape[0] != len(images) or out.shape[2:] != images.shape[1:]:
        raise DataError(
            f"nnU-Net predict: the output {out.shape} does not fit {images.shape[0]} images of {images.shape[1:]}"
        )
    for i in tqdm(range(len(images)), desc="nnU-Net predict", unit="image", disable=not progress):
        image = np.asarray(images[i], np.float32)[None, None]
        _, probs = model.predict_single_npy_array(image, {"spacing": PNG_SPACING}, None, None, True)
        if probs.shape[0] != out.shape[1] + 1:
            raise DataError(f"nnU-Net predict: the model has {probs.shape[0] - 1} classes, the store {out.shape[1]}")
        out[i] = np.round(np.clip(probs[1:, 0], 0.0, 1.0) * 255).astype(np.uint8)
    return out
