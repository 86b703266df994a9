"""Stage 1: fine-tune SAM with fused prompts on the labelled split (Focal + Dice, 20 : 1).

One training example is an (image, class) pair of a labelled image whose ground truth contains the
class; an image's classes share one image embedding per step. Which parts train is a setting; when
the image encoder is frozen its embeddings are computed once and reused every epoch. A checkpoint
is written atomically after every epoch and a rerun with the same settings, data and initial weights
resumes from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from samdpo import atomic
from samdpo.devices import pick_device
from samdpo.errors import ConfigError, DataError
from samdpo.fingerprint import fingerprint, spec_hash
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptBatch, PromptedSam
from samdpo.sam.trainable import PARTS, encoder_frozen, set_trainable
from samdpo.train import distributed
from samdpo.train.batches import jittered_truth_boxes, labelled_pairs, make_batch, sample_classes
from samdpo.train.history import plot_history, resume, save_epoch, write_history
from samdpo.train.losses import dice_loss, focal_loss
from samdpo.train.model_folder import CHECKPOINT, LOSS_CSV, LOSS_PNG, SETTINGS, WEIGHTS
from samdpo.train.prompt_data import ImagePrompts


@dataclass(frozen=True)
class Stage1Settings:
    """Training settings (defaults: the paper's, i.e. SAM-Med2D's recipe).

    Attributes:
        epochs: passes over the labelled (image, class) pairs.
        lr: Adam learning rate; halved (``lr_gamma``) every ``lr_step`` epochs.
        batch_images: images per step and process.
        classes_per_image: labelled classes an image contributes to one step, drawn at random
            (seeded) from those present each epoch; 0 = all (LiteMedSAM trains one label per image per step).
        gt_box_fraction: share of training prompts whose box is replaced by the labelled image's
            ground-truth box, jittered by up to ``gt_box_jitter`` pixels per side (LiteMedSAM's own
            recipe); 0 = the human-free boxes only (the paper). Reads labelled-split labels only.
        gt_box_jitter: the jitter's bound, store pixels.
        focal_weight, dice_weight: loss = focal_weight * focal + dice_weight * dice (+ iou_weight * IoU-head MSE).
        focal_gamma, focal_alpha: focal loss parameters.
        iou_weight: weight of the MSE between SAM's predicted IoU and the mask's IoU (SAM-Med2D: 1).
        train: parts that train, among ``image_encoder``, ``adapters``, ``prompt_encoder``,
            ``mask_decoder``, ``text_proj``.
        seed: seeds the initialisation and the order of the examples.
        amp: bfloat16 autocast on a GPU (ignored on the CPU).
        device: ``auto`` (a GPU if there is one), ``cpu`` or ``cuda``.
    """

    epochs: int = 15
    lr: float = 1e-4
    lr_step: int = 10
    lr_gamma: float = 0.5
    batch_images: int = 4
    classes_per_image: int = 0
    gt_box_fraction: float = 0.0
    gt_box_jitter: float = 2.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    iou_weight: float = 1.0
    train: tuple[str, ...] = field(default=("adapters", "prompt_encoder", "mask_decoder", "text_proj"))
    seed: int = 0
    amp: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(self.train))
        unknown = sorted(set(self.train) - set(PARTS))
        if unknown or not self.train:
            raise ConfigError(f"stage1.train: {unknown or 'nothing'} is not a list of parts among {', '.join(PARTS)}")
        if self.epochs < 1 or self.batch_images < 1 or self.lr_step < 1 or not self.lr > 0:
            raise ConfigError("stage1: epochs, batch_images and lr_step must be >= 1 and lr > 0")
        if not 0.0 <= self.gt_box_fraction <= 1.0 or self.gt_box_jitter < 0:
            raise ConfigError(f"stage1.gt_box_fraction must be in [0, 1] and gt_box_jitter >= 0, got {self.gt_box_fraction}, {self.gt_box_jitter}")
        if self.classes_per_image < 0:
            raise ConfigError(f"stage1.classes_per_image must be >= 0 (0 = all), got {self.classes_per_image}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"stage1.device must be auto, cpu or cuda, got {self.device!r}")


class _TrainingStep(nn.Module):
    """One training forward (image encoder unless embeddings are cached, prompts, decoder) as one
    module, so that DistributedDataParallel sees every trained parameter used."""

    def __init__(self, model: PromptedSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor | None, embeddings: torch.Tensor | None, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, S) uint8 images or their (B, C, h, w) embeddings -> (P, S, S) mask logits, (P,) IoU predictions."""
        if embeddings is None:
            embeddings = self.model.embed_images(images)
        return self.model(embeddings, batch)


def train_stage1(
    model: PromptedSam,
    images: np.ndarray,
    labels: np.ndarray,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    settings: Stage1Settings,
    out: Path,
    spec: Mapping[str, Any],
    point_count: int,
    progress: bool = True,
    embeddings: EmbeddingRows | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place and write ``out/{model.safetensors, loss.csv, loss.png, settings.json}``.

    Under ``torchrun`` (one process per GPU) the processes share each epoch's images and average
    their gradients (DistributedDataParallel); the main process alone writes files.

    Args:
        model: the prompted SAM (initialised, and loaded from a checkpoint where the config says so).
        images: (N, S, S) uint8 labelled images; labels: (N, S, S) uint8 their label maps.
        prompts: N :class:`ImagePrompts` of those images.
        texts: text -> CLIP text embedding.
        settings: training settings.
        point_count: point tokens per prompt (see :func:`make_batch`).
        out: folder of the checkpoint and the outputs.
        spec: everything needed to rebuild the model (SAM settings, text width, switches, CLIP, stage-1
            settings), written to ``settings.json``. A checkpoint resumes only with the same spec, data
            (images, labels, prompts, texts) and initial weights.
        progress: show progress bars.
        embeddings: the frozen encoder's embeddings of ``images`` (the embed_images rule), read
            instead of running the encoder; only for a model whose encoder does not train.

    Returns:
        One row per epoch: losses, learning rate, seconds, samples (image-class pairs) per second.
    """
    from samdpo.sam.checkpoints import save_weights

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    place, device = distributed.start(pick_device(settings.device))
    # N processes take N x batch_images images per step: another recipe, recorded and never resumed across
    spec = {**spec, "processes": place.world}
    settings_hash = spec_hash(spec)
    progress = progress and place.main
    trainable = set_trainable(model, settings.train)
    model.to(device)
    step_model = distributed.wrap(_TrainingStep(model), place, device)
    pairs = labelled_pairs(labels, len(prompts[0].vqa) if prompts else 0)
    keep = [i for i, chosen in enumerate(pairs) if chosen]
    if not keep:
        raise DataError("no labelled image contains any class: nothing to train on")
    size = images.shape[-1]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma)
    checkpoint = out / CHECKPOINT
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    # the checkpoint is resumed only by a run of the same spec and settings, image, label and prompt contents, text
    # embeddings and initial weights (a label fixed on disk or another split starts over)
    data = {"images": images, "labels": labels, "prompts": list(prompts), "texts": texts}
    resume_key = fingerprint({"spec": spec, "settings": settings, "data": data, "initial": model.state_dict()})
    history, start_epoch = resume(checkpoint, resume_key, states, device, verbose=place.main)
    cached = None
    if embeddings is not None:
        if not encoder_frozen(model):
            raise ConfigError("stage1: precomputed image embeddings were given, but the image encoder trains (stage1.train)")
        cached = embeddings.take(keep, device)
        position = {sample: row for row, sample in enumerate(keep)}
    elif encoder_frozen(model):  # embeddings do not change: compute them once
        with torch.no_grad():
            cached = torch.cat([model.embed_images(torch.from_numpy(np.asarray(images[keep[i : i + 8]])).to(device)) for i in range(0, len(keep), 8)])
        position = {sample: row for row, sample in enumerate(keep)}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=settings.amp and device.type == "cuda")
    if place.main:
        print(
            f"stage 1: {len(keep)} labelled images, {sum(len(pairs[i]) for i in keep)} image-class pairs"
            + (f" ({settings.classes_per_image} class(es) per image per step)" if settings.classes_per_image else "")
            + f", {trainable:,} trainable parameters, "
            f"{device}" + (f" x {place.world} processes" if place.world > 1 else "")
        )
    for epoch in range(start_epoch, settings.epochs + 1):
        model.train()
        rng = np.random.default_rng(settings.seed * 1000 + epoch)
        order = distributed.shard(rng.permutation(keep), place)
        drawn = {i: sample_classes(pairs[i], settings.classes_per_image, rng) for i in keep}  # the same on every process
        sums = {"loss": 0.0, "focal": 0.0, "dice": 0.0, "iou_mse": 0.0}
        count, began = 0, time.perf_counter()
        steps = range(0, len(order), settings.batch_images)
        for step in tqdm(steps, desc=f"epoch {epoch}/{settings.epochs}", unit="step", disable=not progress):
            chosen = [int(i) for i in order[step : step + settings.batch_images]]
            batch = make_batch([prompts[i] for i in chosen], [drawn[i] for i in chosen], texts, size, point_count)
            masks = np.concatenate([np.stack([labels[i] == t + 1 for t in drawn[i]]) for i in chosen])
            if settings.gt_box_fraction > 0:
                batch = jittered_truth_boxes(batch, masks, settings.gt_box_fraction, settings.gt_box_jitter, rng)
            batch = batch.to(device)
            target = torch.from_numpy(masks.astype(np.float32)).to(device)
            with autocast:
                if cached is not None:
                    logits, iou_pred = step_model(None, cached[[position[i] for i in chosen]], batch)
                else:
                    logits, iou_pred = step_model(torch.from_numpy(np.asarray(images[chosen])).to(device), None, batch)
            logits = logits.float()
            focal = focal_loss(logits, target, settings.focal_gamma, settings.focal_alpha)
            dice = dice_loss(logits, target)
            with torch.no_grad():
                hard = logits > 0
                inter = (hard & (target > 0)).flatten(1).sum(1).float()
                union = (hard | (target > 0)).flatten(1).sum(1).float()
                iou_true = inter / union.clamp(min=1)
            iou_mse = F.mse_loss(iou_pred.float(), iou_true)
            loss = settings.focal_weight * focal + settings.dice_weight * dice + settings.iou_weight * iou_mse
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            k = len(target)
            for key, value in (("loss", loss), ("focal", focal), ("dice", dice), ("iou_mse", iou_mse)):
                sums[key] += value.item() * k
            count += k
        *summed, count = distributed.total([*sums.values(), count], place, device)  # over all processes
        seconds = time.perf_counter() - began
        row = {"epoch": epoch, **dict(zip(sums, (value / count for value in summed))), "lr": optimizer.param_groups[0]["lr"], "seconds": seconds, "samples_per_s": count / seconds}
        history.append(row)
        scheduler.step()
        if place.main:
            print(f"epoch {epoch}: loss {row['loss']:.4f} (focal {row['focal']:.4f}, dice {row['dice']:.4f}), {row['samples_per_s']:.1f} samples/s")
            save_epoch(checkpoint, epoch, resume_key, history, states)
    if place.main:
        save_weights(model, out / WEIGHTS)
        write_history(history, out / LOSS_CSV)
        plot_history(history, [("stage 1: training loss", ("loss", "focal", "dice", "iou_mse"), True)], out / LOSS_PNG)
        atomic.write_text(out / SETTINGS, json.dumps({**spec, "settings_hash": settings_hash}, indent=2, sort_keys=True) + "\n")
        checkpoint.unlink()
    distributed.barrier(place)
    distributed.finish(place)
    return history
