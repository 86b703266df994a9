"""Stage 1: fine-tune SAM with fused prompts on the labelled split (Focal + Dice, 20 : 1).

One training example is an (image, class) pair of a labelled image whose ground truth contains the
class; an image's classes share one image embedding per step. Which parts train is a setting; when
the image encoder is frozen its embeddings are computed once and reused every epoch. A checkpoint
is written atomically after every epoch and a rerun with the same settings, data and initial weights
resumes from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samdpo.devices import pick_device
from samdpo.errors import ConfigError, DataError
from samdpo.evaluation.metrics import mean_dice
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptBatch, PromptedSam
from samdpo.sam.trainable import PARTS, encoder_frozen, set_trainable
from samdpo.train import distributed
from samdpo.train.batches import jittered_truth_boxes, labelled_pairs, make_batch, sample_classes
from samdpo.train.loop import Loop, Training, adam_with_step_lr, train_epochs
from samdpo.train.losses import dice_loss, focal_loss
from samdpo.train.predict import predict_probabilities, present_classes
from samdpo.train.prompt_data import ImagePrompts
from samdpo.train.selection import Selection, check_selection_settings


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
        validate_every, patience, budget_s: the epoch is chosen on the validation split
            (:mod:`samdpo.train.selection`): scored every ``validate_every`` epochs, stopped after ``patience``
            epochs without a better score or after ``budget_s`` CPU seconds (None: neither).
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
    validate_every: int = 1
    patience: int | None = None
    budget_s: float | None = None
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
            raise ConfigError(
                f"stage1.gt_box_fraction must be in [0, 1] and gt_box_jitter >= 0, got {self.gt_box_fraction}, "
                f"{self.gt_box_jitter}"
            )
        if self.classes_per_image < 0:
            raise ConfigError(f"stage1.classes_per_image must be >= 0 (0 = all), got {self.classes_per_image}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"stage1.device must be auto, cpu or cuda, got {self.device!r}")
        check_selection_settings("stage1", self.validate_every, self.patience, self.budget_s)


@dataclass(frozen=True)
class ValidationSet:
    """The validation split as stage 1 scores it: the images as the test split sees them (human-free prompts).

    Attributes:
        images: (M, S, S) uint8; labels: (M, S, S) uint8 their label maps (selection only); prompts: M prompts.
        embeddings: the frozen encoder's embeddings of ``images`` (None: run the encoder).
    """

    images: np.ndarray
    labels: np.ndarray
    prompts: Sequence[ImagePrompts]
    embeddings: EmbeddingRows | None = None

    def scorer(
        self, model: PromptedSam, texts: Mapping[str, np.ndarray], point_count: int, device: torch.device
    ) -> Callable[[], float]:
        """() -> the model's validation mDice (%): each image's present classes predicted, as evaluation scores them."""
        classes = len(self.prompts[0].vqa) if self.prompts else 0
        present = present_classes(self.labels, classes)

        def score() -> float:
            out = np.zeros((len(self.images), classes, *self.images.shape[1:]), np.uint8)
            predict_probabilities(
                model,
                self.images,
                self.prompts,
                texts,
                device,
                out,
                point_count,
                progress=False,
                embeddings=self.embeddings,
                classes=present,
            )
            return mean_dice(out, np.asarray(self.labels), classes)

        return score


class _TrainingStep(nn.Module):
    """One training forward (image encoder unless embeddings are cached, prompts, decoder) as one
    module, so that DistributedDataParallel sees every trained parameter used."""

    def __init__(self, model: PromptedSam) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor | None, embeddings: torch.Tensor | None, batch: PromptBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, S) uint8 images or their (B, C, h, w) embeddings -> (P, S, S) mask logits, (P,) IoU predictions."""
        if embeddings is None:
            embeddings = self.model.embed_images(images)
        return self.model(embeddings, batch)


def _hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(P,) IoU of the (P, S, S) logits thresholded at 0 with the (P, S, S) binary targets (no gradient)."""
    with torch.no_grad():
        hard = logits > 0
        inter = (hard & (target > 0)).flatten(1).sum(1).float()
        union = (hard | (target > 0)).flatten(1).sum(1).float()
        return inter / union.clamp(min=1)


#: What stage 1 logs per epoch (means over the epoch's image-class pairs).
STAGE1_COLUMNS = ("loss", "focal", "dice", "iou_mse")


@dataclass
class _Stage1Step:
    """Stage 1's :data:`~samdpo.train.loop.Step`: the chosen images' drawn classes -> Focal + Dice + IoU-head loss.

    Attributes:
        network: the (distributed) :class:`_TrainingStep`; images, labels, prompts, texts: the training data.
        pairs: the classes present in each image; keep: the images with any.
        cached: (len(keep), C, h, w) embeddings of the kept images when the encoder is frozen (None: run it).
    """

    network: nn.Module
    images: np.ndarray
    labels: np.ndarray
    prompts: Sequence[ImagePrompts]
    texts: Mapping[str, np.ndarray]
    pairs: list[list[int]]
    keep: list[int]
    settings: Stage1Settings
    point_count: int
    device: torch.device
    cached: torch.Tensor | None = None
    drawn: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row = {sample: row for row, sample in enumerate(self.keep)}  # of a kept image in ``cached``

    def begin(self, rng: np.random.Generator) -> None:
        """An epoch starts: train mode, and each kept image's classes drawn (the same on every process)."""
        self.network.train()
        self.drawn = {i: sample_classes(self.pairs[i], self.settings.classes_per_image, rng) for i in self.keep}

    def __call__(self, chosen: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float], int]:
        chosen, settings = [int(i) for i in chosen], self.settings
        drawn, size = [self.drawn[i] for i in chosen], self.images.shape[-1]
        batch = make_batch([self.prompts[i] for i in chosen], drawn, self.texts, size, self.point_count)
        masks = np.concatenate([np.stack([self.labels[i] == t + 1 for t in self.drawn[i]]) for i in chosen])
        if settings.gt_box_fraction > 0:
            batch = jittered_truth_boxes(batch, masks, settings.gt_box_fraction, settings.gt_box_jitter, rng)
        target = torch.from_numpy(masks.astype(np.float32)).to(self.device)
        logits, iou_pred = self._forward(chosen, batch.to(self.device))
        focal = focal_loss(logits, target, settings.focal_gamma, settings.focal_alpha)
        dice = dice_loss(logits, target)
        iou_mse = F.mse_loss(iou_pred.float(), _hard_iou(logits, target))
        loss = settings.focal_weight * focal + settings.dice_weight * dice + settings.iou_weight * iou_mse
        k = len(target)
        return loss, {name: value.item() * k for name, value in zip(STAGE1_COLUMNS, (loss, focal, dice, iou_mse))}, k

    def _forward(self, chosen: list[int], batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, S, S) float32 mask logits and (P,) IoU predictions of the chosen images' prompts."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.settings.amp and self.device.type == "cuda"):
            if self.cached is not None:
                logits, iou_pred = self.network(None, self.cached[[self.row[i] for i in chosen]], batch)
            else:
                images = torch.from_numpy(np.asarray(self.images[chosen])).to(self.device)
                logits, iou_pred = self.network(images, None, batch)
        return logits.float(), iou_pred


def _cached_embeddings(
    model: PromptedSam, images: np.ndarray, keep: list[int], embeddings: EmbeddingRows | None, device: torch.device
) -> torch.Tensor | None:
    """(len(keep), C, h, w) embeddings of the kept images when the encoder is frozen (read, else encoded
    once); None when it trains."""
    if embeddings is not None:
        if not encoder_frozen(model):
            raise ConfigError(
                "stage1: precomputed image embeddings were given, but the image encoder trains (stage1.train)"
            )
        return embeddings.take(keep, device)
    if not encoder_frozen(model):
        return None
    with torch.no_grad():
        chunks = [np.asarray(images[keep[i : i + 8]]) for i in range(0, len(keep), 8)]
        return torch.cat([model.embed_images(torch.from_numpy(chunk).to(device)) for chunk in chunks])


def _run_summary(
    pairs: list[list[int]],
    keep: list[int],
    settings: Stage1Settings,
    trainable: int,
    device: torch.device,
    place: distributed.Place,
) -> str:
    """What stage 1 trains on, how much of the model trains, and where."""
    return (
        f"stage 1: {len(keep)} labelled images, {sum(len(pairs[i]) for i in keep)} image-class pairs"
        + (f" ({settings.classes_per_image} class(es) per image per step)" if settings.classes_per_image else "")
        + f", {trainable:,} trainable parameters, {device}"
        + (f" x {place.world} processes" if place.world > 1 else "")
    )


def _stage1_loop(out: Path, settings: Stage1Settings, keep: list[int], spec: Mapping[str, Any]) -> Loop:
    """Stage 1's epochs over the kept images, its log and its ``settings.json`` (the spec)."""

    def describe(row: dict[str, Any]) -> str:
        losses = f"loss {row['loss']:.4f} (focal {row['focal']:.4f}, dice {row['dice']:.4f})"
        return f"epoch {row['epoch']}: {losses}, {row['samples_per_s']:.1f} samples/s"

    panels = [("stage 1: training loss", STAGE1_COLUMNS, True)]
    return Loop(
        Path(out),
        settings.epochs,
        settings.seed,
        keep,
        settings.batch_images,
        STAGE1_COLUMNS,
        panels,
        lambda history: spec,
        describe,
        rate="samples_per_s",
    )


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
    validation: ValidationSet | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place and write ``out/{model.safetensors, loss.csv, loss.png, settings.json}``: with a
    ``validation`` set, the weights of the epoch with the best validation mDice (else the last epoch's).

    Under ``torchrun`` (one process per GPU) the processes share each epoch's images and average
    their gradients (DistributedDataParallel); the main process alone writes files.

    Args:
        model: the prompted SAM (initialised, and loaded from a checkpoint where the config says so).
        images: (N, S, S) uint8 labelled images; labels: (N, S, S) uint8 their label maps.
        prompts: N :class:`ImagePrompts` of those images; texts: text -> CLIP text embedding.
        settings: training settings; point_count: point tokens per prompt (see :func:`make_batch`).
        out: folder of the checkpoint and the outputs.
        spec: everything needed to rebuild the model, written to ``settings.json``. A checkpoint resumes only
            with the same spec, settings, point count, data (images, labels, prompts, texts) and initial weights.
        progress: show progress bars.
        embeddings: the frozen encoder's embeddings of ``images`` (the embed_images rule), read
            instead of running the encoder; only for a model whose encoder does not train.
        validation: the validation split (selection only), scored as the settings say.

    Returns:
        One row per epoch: losses, learning rate, seconds, samples (image-class pairs) per second, and
        ``val_dice`` on the scored epochs.
    """
    place, device = distributed.start(pick_device(settings.device))
    # N processes take N x batch_images images per step: another recipe, recorded and never resumed across
    spec = {**spec, "processes": place.world}
    trainable = set_trainable(model, settings.train)
    model.to(device)
    network = distributed.wrap(_TrainingStep(model), place, device)
    pairs = labelled_pairs(labels, len(prompts[0].vqa) if prompts else 0)
    keep = [i for i, chosen in enumerate(pairs) if chosen]
    if not keep:
        raise DataError("no labelled image contains any class: nothing to train on")
    optimizer, scheduler = adam_with_step_lr(model, settings.lr, settings.lr_step, settings.lr_gamma)
    # the checkpoint is resumed only by a run of the same inputs (a label fixed on disk or another split starts over)
    data = {"images": images, "labels": labels, "prompts": list(prompts), "texts": texts}
    if validation is not None:
        data["validation"] = [validation.images, validation.labels, list(validation.prompts)]
    inputs = {
        "spec": spec,
        "settings": settings,
        "point_count": point_count,
        "data": data,
        "initial": model.state_dict(),
    }
    cached = _cached_embeddings(model, images, keep, embeddings, device)
    step = _Stage1Step(network, images, labels, prompts, texts, pairs, keep, settings, point_count, device, cached)
    if place.main:
        print(_run_summary(pairs, keep, settings, trainable, device, place))
    training = Training(model, optimizer, scheduler, device=device, place=place, progress=progress)
    selection = None
    if validation is not None:
        score = validation.scorer(model, texts, point_count, device)
        selection = Selection(score, settings.validate_every, settings.patience, settings.budget_s)
    loop = _stage1_loop(out, settings, keep, spec)
    return train_epochs(loop, training, step, inputs, begin=step.begin, selection=selection)
