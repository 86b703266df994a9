"""The paper's "U-Net (20% labelled)" baseline: MONAI's 2D U-Net trained on the labelled splits' labels.

The network has one sigmoid output channel per class (multi-label, like the SAM pipeline's masks)
and trains with the stage-1 loss (20 x focal + Dice) over every (image, class) channel, background-only
images included. Images are the store's uint8 pixels scaled to [0, 1]; there is no augmentation (a
horizontal flip would swap left and right organs). A checkpoint is written atomically after every
epoch and a rerun with the same spec resumes from it; the outputs are those of stage 1:
``model.safetensors``, ``settings.json``, ``loss.csv`` and ``loss.png``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo.baselines.unet_settings import UnetSettings, check_image_size
from samdpo.devices import pick_device
from samdpo.errors import ConfigError, DataError
from samdpo.evaluation.metrics import mean_dice
from samdpo.settings import parse_settings
from samdpo.train.loop import Loop, Step, Training, train_epochs
from samdpo.train.losses import dice_loss, focal_loss, segmentation_loss
from samdpo.train.model_folder import SETTINGS, WEIGHTS
from samdpo.train.selection import Selection


def build_unet(class_count: int, settings: UnetSettings, seed: int | None = None) -> torch.nn.Module:
    """MONAI's 2D U-Net, one input channel, ``class_count`` logit channels; initialised from ``seed`` (default:
    settings.seed)."""
    from monai.networks.nets import UNet

    if class_count < 1:
        raise DataError("the store has no class to segment")
    torch.manual_seed(settings.seed if seed is None else seed)
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=class_count,
        channels=settings.channels,
        strides=settings.strides,
        num_res_units=settings.num_res_units,
    )


def to_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, S, S) uint8 -> (B, 1, S, S) float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).unsqueeze(1).to(device)


def to_targets(labels: np.ndarray, class_count: int, device: torch.device) -> torch.Tensor:
    """(B, S, S) uint8 label maps -> (B, T, S, S) float32 binary masks (label k = channel k - 1)."""
    classes = np.arange(1, class_count + 1, dtype=np.uint8)[None, :, None, None]
    return torch.from_numpy((np.asarray(labels)[:, None] == classes).astype(np.float32)).to(device)


def _check_training_set(images: np.ndarray, labels: np.ndarray, class_count: int) -> None:
    """(N, S, S) uint8 images and label maps, N >= 1, no label above ``class_count``; else a :class:`DataError`."""
    if images.ndim != 3 or images.shape[1] != images.shape[2] or labels.shape != images.shape:
        raise DataError(f"train_unet: images {images.shape} and labels {labels.shape} must both be (N, S, S)")
    if len(images) == 0:
        raise DataError("no training image: the chosen splits are empty")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"train_unet: images and labels must be uint8, got {images.dtype} and {labels.dtype}")
    if int(labels.max()) > class_count:
        raise DataError(f"a label map holds label {int(labels.max())} but the store has {class_count} classes")


#: What the U-Net logs per epoch (means over the image-class channels).
UNET_COLUMNS = ("loss", "focal", "dice")


def _unet_step(
    model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, class_count: int, device: torch.device
) -> Step:
    """The U-Net's :data:`~samdpo.train.loop.Step`: stage 1's 20 x focal + Dice over the chosen images' B x T masks."""

    def step(chosen: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float], int]:
        chosen = np.sort(chosen)
        logits = model(to_input(images[chosen], device)).flatten(0, 1)  # (B * T, S, S)
        target = to_targets(labels[chosen], class_count, device).flatten(0, 1)
        loss = segmentation_loss(logits, target)
        with torch.no_grad():
            focal, dice = focal_loss(logits, target), dice_loss(logits, target)
        n = len(chosen)
        return loss, {name: value.item() * n for name, value in zip(UNET_COLUMNS, (loss, focal, dice))}, n

    return step


def _unet_loop(out: Path, settings: UnetSettings, count: int, written: Mapping[str, Any], progress: bool) -> Loop:
    """The U-Net's epochs over its ``count`` images (the epoch line printed with progress, else the last only)."""

    def describe(row: dict[str, Any]) -> str | None:
        if not progress:
            return None
        losses = f"loss {row['loss']:.4f} (focal {row['focal']:.4f}, dice {row['dice']:.4f})"
        return f"epoch {row['epoch']}: {losses}, {row['images_per_s']:.1f} images/s"

    panels = [("U-Net baseline: training loss", UNET_COLUMNS, True)]
    return Loop(
        Path(out),
        settings.epochs,
        settings.seed,
        np.arange(count),
        settings.batch_size,
        UNET_COLUMNS,
        panels,
        lambda history: written,
        describe,
        rate="images_per_s",
    )


def train_unet(
    images: np.ndarray,
    labels: np.ndarray,
    class_count: int,
    settings: UnetSettings,
    out: Path,
    spec: Mapping[str, Any],
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train the U-Net baseline and write ``out/{model.safetensors, settings.json, loss.csv, loss.png}``: with a
    ``validation`` set, the weights of the epoch with the best validation mDice, training stopped by the settings'
    patience or budget (else the last of ``epochs``).

    Args:
        images: (N, S, S) uint8 training images; labels: (N, S, S) uint8 their label maps
            (0 = background, k = class k - 1).
        class_count: T, the number of classes (output channels).
        settings: training settings.
        out: folder of the checkpoint and the outputs.
        spec: provenance (dataset, class names, ...), written to ``settings.json`` together with the
            settings, T and S. A checkpoint resumes only with the same spec, images, labels and initial weights.
        validation: (M, S, S) uint8 images and label maps of the validation split (selection only; None: none).
        progress: show progress bars.

    Returns:
        One row per epoch: loss, focal, dice (means over the image-class channels), lr, seconds, images per second,
        and ``val_dice`` (validation mDice, %) on the scored epochs.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    _check_training_set(images, labels, class_count)
    if validation is not None:
        validation = tuple(np.asarray(a) for a in validation)
        if (
            not len(validation[0])
            or validation[0].shape[1:] != images.shape[1:]
            or validation[1].shape != validation[0].shape
        ):
            shapes = f"{validation[0].shape} and {validation[1].shape}"
            raise DataError(
                f"train_unet: validation images and labels {shapes} must both be (M, S, S) like the training set"
            )
    size = images.shape[-1]
    check_image_size(settings, size)
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("unet.device is cuda but no GPU is visible")
    full_spec = {
        **spec,
        "unet": asdict(settings),
        "class_count": class_count,
        "image_size": size,
        "training_images": len(images),
    }
    device = pick_device(settings.device)
    model = build_unet(class_count, settings).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    # the checkpoint is resumed only by a run of the same settings, image and label bytes and initial weights
    inputs = {
        "spec": full_spec,
        "images": images,
        "labels": labels,
        "validation": list(validation or ()),
        "initial": model.state_dict(),
    }
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"U-Net baseline: {len(images)} training images of {size}x{size}, {class_count} classes, {parameters:,} "
        f"parameters, {device}"
    )
    loop = _unet_loop(out, settings, len(images), full_spec, progress)
    step = _unet_step(model, images, labels, class_count, device)
    training = Training(model, optimizer, device=device, progress=progress)

    selection = None
    if validation is not None:

        def score() -> float:
            return mean_dice(predict_unet(model, validation[0], device, progress=False), validation[1], class_count)

        selection = Selection(score, settings.validate_every, settings.patience, settings.budget_s)
    return train_epochs(loop, training, step, inputs, begin=lambda rng: model.train(), selection=selection)


def load_unet(folder: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained U-Net of a ``train_unet`` folder (on the CPU) and its ``settings.json``."""
    from samdpo.sam.checkpoints import load_checkpoint

    folder = Path(folder)
    path = folder / SETTINGS
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        raise DataError(f"{folder}: no trained U-Net ({SETTINGS} and {WEIGHTS}); run `samdpo unet train` first")
    try:
        spec = json.loads(path.read_text())
        settings = parse_settings(UnetSettings, spec["unet"], "unet")
        class_count = int(spec["class_count"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a U-Net settings file ({exc})") from exc
    model = build_unet(class_count, settings)
    load_checkpoint(model, folder / WEIGHTS)
    return model.eval(), spec


def predict_unet(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    batch_size: int = 8,
    out: np.ndarray | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(N, T, S, S) uint8 probabilities of every class of every image: round(sigmoid(logit) x 255).

    Args:
        model: a U-Net of :func:`build_unet` (or :func:`load_unet`).
        images: (N, S, S) uint8 images (a memory map is read batch by batch).
        device: where to run.
        batch_size: images per forward pass.
        out: (N, T, S, S) uint8 array to fill in place (e.g. the memory map of
            :func:`samdpo.train.predict.write_predictions`); allocated when None.
        progress: show a progress bar.

    Returns:
        ``out`` (filled).
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    model.eval().to(device)
    count, size = len(images), images.shape[-1]
    with torch.inference_mode():
        if out is None:
            classes = model(torch.zeros((1, 1, size, size), device=device)).shape[1]
            out = np.zeros((count, classes, size, size), np.uint8)
        if out.shape[0] != count or out.shape[2:] != (size, size) or out.dtype != np.uint8:
            raise DataError(
                f"predict_unet: the output {out.shape} {out.dtype} does not fit {count} images of {size}x{size}"
            )
        for start in tqdm(range(0, count, batch_size), desc="predict", unit="batch", disable=not progress):
            stop = min(start + batch_size, count)
            probs = torch.sigmoid(model(to_input(images[start:stop], device)).float())
            if probs.shape[1] != out.shape[1]:
                raise DataError(f"predict_unet: the model has {probs.shape[1]} classes, the output {out.shape[1]}")
            out[start:stop] = torch.round(probs * 255).to(torch.uint8).cpu().numpy()
    return out
