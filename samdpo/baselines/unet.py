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
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo.data.splits import SPLITS
from samdpo.devices import pick_device
from samdpo.errors import ConfigError, DataError
from samdpo.settings import parse_settings
from samdpo.train.loop import Loop, Step, Training, train_epochs
from samdpo.train.losses import dice_loss, focal_loss, segmentation_loss
from samdpo.train.model_folder import SETTINGS, WEIGHTS


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class UnetSettings:
    """Settings of the U-Net baseline.

    Attributes:
        channels: feature channels per level, top to bottom (at least two levels).
        strides: down-sampling stride between consecutive levels (``len(channels) - 1`` values).
        num_res_units: residual units per block (0: plain convolutions).
        epochs: passes over the training images.
        lr: Adam learning rate (constant).
        batch_size: images per step.
        seed: seeds the initialisation and the order of the images.
        device: ``auto`` (a GPU if there is one), ``cpu`` or ``cuda``.
        splits: the splits whose images and labels it trains on (the paper's 20%: labelled + unlabelled).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    epochs: int = 60
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    splits: tuple[str, ...] = ("labeled", "unlabeled")

    def __post_init__(self) -> None:
        for name in ("channels", "strides", "splits"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"unet.{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if len(self.channels) < 2 or not all(_is_int(c) and c >= 1 for c in self.channels):
            raise ConfigError(f"unet.channels must be at least two positive integers, got {list(self.channels)}")
        if len(self.strides) != len(self.channels) - 1 or not all(_is_int(s) and s >= 1 for s in self.strides):
            want = len(self.channels) - 1
            raise ConfigError(
                f"unet.strides must be {want} positive integers (one fewer than unet.channels), got "
                f"{list(self.strides)}"
            )
        for name, least in (("num_res_units", 0), ("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise ConfigError(f"unet.{name} must be an integer >= {least}, got {value!r}")
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise ConfigError(f"unet.lr must be a number > 0, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unet.device must be auto, cpu or cuda, got {self.device!r}")
        unknown = [s for s in self.splits if s not in SPLITS]
        if not self.splits or unknown or len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"unet.splits must be distinct splits among {', '.join(SPLITS)}, got {list(self.splits)}")


def check_image_size(settings: UnetSettings, image_size: int) -> None:
    """The image side must divide by the total stride and leave at least 2 x 2 pixels at the bottom."""
    total = math.prod(settings.strides)
    if image_size % total or image_size // total < 2:
        raise ConfigError(
            f"unet.strides {list(settings.strides)}: {image_size} px images must divide by their product {total} "
            "and leave at least 2 px at the bottom level"
        )


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
        if not (progress or row["epoch"] == settings.epochs):
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
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train the U-Net baseline and write ``out/{model.safetensors, settings.json, loss.csv, loss.png}``.

    Args:
        images: (N, S, S) uint8 training images; labels: (N, S, S) uint8 their label maps
            (0 = background, k = class k - 1).
        class_count: T, the number of classes (output channels).
        settings: training settings.
        out: folder of the checkpoint and the outputs.
        spec: provenance (dataset, class names, ...), written to ``settings.json`` together with the
            settings, T and S. A checkpoint resumes only with the same spec, images, labels and initial weights.
        progress: show progress bars.

    Returns:
        One row per epoch: loss, focal, dice (means over the image-class channels), lr, seconds, images per second.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    _check_training_set(images, labels, class_count)
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
    inputs = {"spec": full_spec, "images": images, "labels": labels, "initial": model.state_dict()}
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"U-Net baseline: {len(images)} training images of {size}x{size}, {class_count} classes, {parameters:,} "
        f"parameters, {device}"
    )
    loop = _unet_loop(out, settings, len(images), full_spec, progress)
    step = _unet_step(model, images, labels, class_count, device)
    training = Training(model, optimizer, device=device, progress=progress)
    return train_epochs(loop, training, step, inputs, begin=lambda rng: model.train())


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
