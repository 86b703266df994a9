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
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo import atomic
from samdpo.data.splits import SPLITS
from samdpo.errors import ConfigError, DataError
from samdpo.fingerprint import fingerprint
from samdpo.train.history import plot_history, resume, save_epoch, write_history
from samdpo.train.losses import dice_loss, focal_loss, segmentation_loss
from samdpo.fingerprint import spec_hash
from samdpo.devices import pick_device

CHECKPOINT, WEIGHTS, LOSS_CSV, LOSS_PNG, SETTINGS = "checkpoint.pt", "model.safetensors", "loss.csv", "loss.png", "settings.json"


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
            raise ConfigError(f"unet.strides must be {want} positive integers (one fewer than unet.channels), got {list(self.strides)}")
        for name, least in (("num_res_units", 0), ("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise ConfigError(f"unet.{name} must be an integer >= {least}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"unet.lr must be a number > 0, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unet.device must be auto, cpu or cuda, got {self.device!r}")
        unknown = [s for s in self.splits if s not in SPLITS]
        if not self.splits or unknown or len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"unet.splits must be distinct splits among {', '.join(SPLITS)}, got {list(self.splits)}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> UnetSettings:
        """Settings from a JSON object; an unknown key is a :class:`ConfigError` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unet.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        return cls(**values)


def check_image_size(settings: UnetSettings, image_size: int) -> None:
    """The image side must divide by the total stride and leave at least 2 x 2 pixels at the bottom."""
    total = math.prod(settings.strides)
    if image_size % total or image_size // total < 2:
        raise ConfigError(
            f"unet.strides {list(settings.strides)}: {image_size} px images must divide by their product {total} "
            "and leave at least 2 px at the bottom level"
        )


def build_unet(class_count: int, settings: UnetSettings, seed: int | None = None) -> torch.nn.Module:
    """MONAI's 2D U-Net, one input channel, ``class_count`` logit channels; initialised from ``seed`` (default: settings.seed)."""
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
        One row per epoch: loss, focal, dice (means over the image-class channels), seconds, images per second.
    """
    from samdpo.sam.checkpoints import save_weights

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or labels.shape != images.shape:
        raise DataError(f"train_unet: images {images.shape} and labels {labels.shape} must both be (N, S, S)")
    if len(images) == 0:
        raise DataError("no training image: the chosen splits are empty")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"train_unet: images and labels must be uint8, got {images.dtype} and {labels.dtype}")
    if int(labels.max()) > class_count:
        raise DataError(f"a label map holds label {int(labels.max())} but the store has {class_count} classes")
    size = images.shape[-1]
    check_image_size(settings, size)
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("unet.device is cuda but no GPU is visible")
    full_spec = {**spec, "unet": asdict(settings), "class_count": class_count, "image_size": size, "training_images": len(images)}
    settings_hash = spec_hash(full_spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    model = build_unet(class_count, settings).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    checkpoint = out / CHECKPOINT
    states = {"model": model, "optimizer": optimizer}
    # the checkpoint is resumed only by a run of the same settings, image and label bytes and initial weights
    resume_key = fingerprint({"spec": full_spec, "images": images, "labels": labels, "initial": model.state_dict()})
    history, start_epoch = resume(checkpoint, resume_key, states, device)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"U-Net baseline: {len(images)} training images of {size}x{size}, {class_count} classes, {parameters:,} parameters, {device}")
    for epoch in range(start_epoch, settings.epochs + 1):
        model.train()
        order = np.random.default_rng(settings.seed * 1000 + epoch).permutation(len(images))
        sums = {"loss": 0.0, "focal": 0.0, "dice": 0.0}
        count, began = 0, time.perf_counter()
        steps = range(0, len(order), settings.batch_size)
        for step in tqdm(steps, desc=f"epoch {epoch}/{settings.epochs}", unit="step", disable=not progress):
            chosen = np.sort(order[step : step + settings.batch_size])
            logits = model(to_input(images[chosen], device)).flatten(0, 1)  # (B * T, S, S)
            target = to_targets(labels[chosen], class_count, device).flatten(0, 1)
            loss = segmentation_loss(logits, target)  # stage 1's 20 x focal + Dice, over the (B * T) masks
            with torch.no_grad():
                focal, dice = focal_loss(logits, target), dice_loss(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("focal", focal), ("dice", dice)):
                sums[key] += value.item() * len(chosen)
            count += len(chosen)
        seconds = time.perf_counter() - began
        row = {"epoch": epoch, **{key: value / count for key, value in sums.items()}, "lr": settings.lr, "seconds": seconds}
        row["images_per_s"] = count / seconds
        history.append(row)
        if progress or epoch == settings.epochs:
            losses = f"loss {row['loss']:.4f} (focal {row['focal']:.4f}, dice {row['dice']:.4f})"
            print(f"epoch {epoch}: {losses}, {row['images_per_s']:.1f} images/s")
        save_epoch(checkpoint, epoch, resume_key, history, states)
    save_weights(model, out / WEIGHTS)
    write_history(history, out / LOSS_CSV)
    plot_history(history, [("U-Net baseline: training loss", ("loss", "focal", "dice"), True)], out / LOSS_PNG)
    atomic.write_text(out / SETTINGS, json.dumps({**full_spec, "settings_hash": settings_hash}, indent=2, sort_keys=True) + "\n")
    checkpoint.unlink()
    return history


def load_unet(folder: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained U-Net of a ``train_unet`` folder (on the CPU) and its ``settings.json``."""
    from samdpo.sam.checkpoints import load_checkpoint

    folder = Path(folder)
    path = folder / SETTINGS
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        raise DataError(f"{folder}: no trained U-Net ({SETTINGS} and {WEIGHTS}); run `samdpo unet train` first")
    try:
        spec = json.loads(path.read_text())
        settings = UnetSettings.from_dict(spec["unet"])
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
            raise DataError(f"predict_unet: the output {out.shape} {out.dtype} does not fit {count} images of {size}x{size}")
        for start in tqdm(range(0, count, batch_size), desc="predict", unit="batch", disable=not progress):
            stop = min(start + batch_size, count)
            probs = torch.sigmoid(model(to_input(images[start:stop], device)).float())
            if probs.shape[1] != out.shape[1]:
                raise DataError(f"predict_unet: the model has {probs.shape[1]} classes, the output {out.shape[1]}")
            out[start:stop] = torch.round(probs * 255).to(torch.uint8).cpu().numpy()
    return out
