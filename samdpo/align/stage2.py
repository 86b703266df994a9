"""Stage 2: align the stage-1 model to the annotator's preferences with DPO (or, for the ablation,
supervise it on the best candidate only).

Policy = the stage-1 model with only the mask decoder trainable; reference = the frozen stage-1
model. Neither the image encoder nor the reference changes, so the image embeddings and the
reference log-likelihoods of the candidates are computed once, before the first epoch.

An optional supervised anchor (``anchor_weight`` > 0) adds ``anchor_weight`` x (focal + Dice) on
the best candidate of each pair (``anchor_on: best_candidate``) or on labelled (image, class)
pairs with their ground truth (``labeled``, the stage-1 recipe's prompts). Every run reports what
DPO had to work with: pairs with a preference and why the others have none, the median number of
pixels where a pair's candidates disagree, and per epoch the share of pairs whose loss stayed at
ln 2 (margin within 0.02 of 0), the mean reward margin, and the share whose best candidate rose.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo import atomic
from samdpo.align.annotator import EQUAL, Annotation, preference_weights
from samdpo.align.candidates import level_masks
from samdpo.align.dpo import REDUCTIONS, candidate_logp, weighted_dpo_loss
from samdpo.errors import ConfigError, DataError
from samdpo.train.history import plot_history, write_history
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.train.losses import segmentation_loss
from samdpo.sam.prompted import PromptedSam
from samdpo.train.prompt_data import ImagePrompts
from samdpo.train.model_folder import SETTINGS, WEIGHTS
from samdpo.train.batches import jittered_truth_boxes, labelled_pairs, make_batch
from samdpo.fingerprint import spec_hash
from samdpo.devices import pick_device
from samdpo.sam.trainable import set_trainable

OBJECTIVES = ("dpo", "best")
ANCHORS = ("best_candidate", "labeled")
LOG_CSV, LOG_PNG = "train_log.csv", "loss.png"
#: A pair's loss counts as stuck at ln 2 while its reward margin is within this of 0 (loss within 0.01 of ln 2).
AT_LN2_MARGIN = 0.02


@dataclass(frozen=True)
class Stage2Settings:
    """Alignment settings (defaults: the paper's).

    Attributes:
        objective: ``dpo`` (the paper) or ``best`` (supervised on the best candidate: the ablation).
        epochs: passes over the (image, class) pairs that carry a preference.
        lr, lr_step, lr_gamma: Adam learning rate, halved every ``lr_step`` epochs.
        batch_pairs: (image, class) pairs per step.
        beta1, beta2: DPO weights of the outer and inner positions.
        reduction: per-candidate log-likelihood reduction (``sum``, ``disagreement_mean``, ``mean``).
        anchor_weight: weight of the supervised anchor term (0: none).
        anchor_on: ``best_candidate`` (of each unlabelled pair) or ``labeled`` (the labelled split's ground truth).
        seed: order of the pairs.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    objective: str = "dpo"
    epochs: int = 30
    lr: float = 1e-4
    lr_step: int = 10
    lr_gamma: float = 0.5
    batch_pairs: int = 16
    beta1: float = 1.0
    beta2: float = 0.5
    reduction: str = "sum"
    anchor_weight: float = 0.0
    anchor_on: str = "best_candidate"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"stage2.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"stage2.reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.epochs < 1 or self.batch_pairs < 1 or self.lr_step < 1 or not self.lr > 0:
            raise ConfigError("stage2: epochs, batch_pairs and lr_step must be >= 1 and lr > 0")
        if self.anchor_on not in ANCHORS or not self.anchor_weight >= 0:
            raise ConfigError(f"stage2.anchor_on must be one of {ANCHORS} and anchor_weight >= 0, got {self.anchor_on!r}, {self.anchor_weight}")


@dataclass(frozen=True)
class Pairs:
    """The (image, class) pairs stage 2 trains on, in image order.

    Attributes:
        image: (P,) image index; klass: (P,) class index.
        weights: (P, K) preference weight of each candidate; best: (P,) best candidate's index.
        without_preference: pairs skipped because all candidates are tied.
        reasons: why they carry no preference -> how many (see :mod:`samdpo.align.annotator`).
    """

    image: np.ndarray
    klass: np.ndarray
    weights: np.ndarray
    best: np.ndarray
    without_preference: int
    reasons: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelledSet:
    """The labelled split, for the ``labeled`` anchor: its images' embeddings, labels and prompts.

    Attributes:
        images: (N, S, S) uint8; labels: (N, S, S) uint8 label maps (class k = label k + 1).
        prompts: N image prompts; embeddings: the frozen encoder's embeddings (None: run the encoder).
        gt_box_fraction, gt_box_jitter: the stage-1 recipe's ground-truth boxes (see ``Stage1Settings``).
    """

    images: np.ndarray
    labels: np.ndarray
    prompts: Sequence[ImagePrompts]
    embeddings: EmbeddingRows | None
    gt_box_fraction: float
    gt_box_jitter: float


def preference_pairs(sample_ids: Sequence[str], class_count: int, annotations: Mapping[tuple[str, int], Annotation], beta1: float, beta2: float) -> Pairs:
    """The pairs that carry a preference (possibly none); every (image, class) must have been annotated."""
    missing = [(s, t) for s in sample_ids for t in range(class_count) if (s, t) not in annotations]
    if missing:
        raise DataError(f"no annotation for {len(missing)} (image, class) pairs, e.g. image {missing[0][0]} class {missing[0][1]}; rerun the annotate rule")
    image, klass, weights, best, skipped = [], [], [], [], 0
    reasons: dict[str, int] = {}
    for i, sample in enumerate(sample_ids):
        for t in range(class_count):
            annotation = annotations[(sample, t)]
            if not annotation.has_preference:
                skipped += 1
                reason = annotation.reason or EQUAL
                reasons[reason] = reasons.get(reason, 0) + 1
                continue
            image.append(i)
            klass.append(t)
            weights.append(preference_weights(annotation, beta1, beta2))
            best.append(int(annotation.order[0]))
    weights_array = np.array(weights, np.float32) if weights else np.zeros((0, 4), np.float32)
    return Pairs(np.array(image, np.int64), np.array(klass, np.int64), weights_array, np.array(best, np.int64), skipped, reasons)


def disagreement_pixels(levels: np.ndarray, count: int) -> np.ndarray:
    """(P,) pixels where a pair's K nested candidates do not all agree, from (P, S, S) levels."""
    levels = np.asarray(levels)
    return ((levels > 0) & (levels < count)).reshape(len(levels), -1).sum(1)


def _batches(pairs: Pairs, chosen: np.ndarray, prompts: Sequence[ImagePrompts]) -> tuple[list[int], list[list[int]], np.ndarray]:
    """Images, their classes, and the pair indices in the order the model returns masks (image-major)."""
    chosen = chosen[np.lexsort((pairs.klass[chosen], pairs.image[chosen]))]
    images = sorted(set(pairs.image[chosen].tolist()))
    classes = [pairs.klass[chosen][pairs.image[chosen] == i].tolist() for i in images]
    return images, classes, chosen


def _logits(
    model: PromptedSam, embeddings: torch.Tensor, prompts: Sequence[ImagePrompts], texts: Mapping[str, np.ndarray],
    images: list[int], classes: list[list[int]], size: int, points: int, device: torch.device,
) -> torch.Tensor:
    batch = make_batch([prompts[i] for i in images], classes, texts, size, points).to(device)
    return model(embeddings[images], batch)[0].float()


def _embed(policy: PromptedSam, images: np.ndarray, embeddings: EmbeddingRows | None, needed: Sequence[int], device: torch.device) -> torch.Tensor | None:
    """(N, C, h, w) image embeddings with the ``needed`` rows filled (read from ``embeddings`` or encoded)."""
    out = None
    with torch.no_grad():
        for start in range(0, len(needed), 8):
            chunk = list(needed[start : start + 8])
            embedded = policy.embed_images(torch.from_numpy(np.asarray(images[chunk])).to(device)) if embeddings is None else embeddings.take(chunk, device)
            if out is None:
                out = torch.zeros((len(images), *embedded.shape[1:]), device=device)
            out[chunk] = embedded
    return out


class _LabelledAnchor:
    """Draws batches of labelled (image, class) pairs and returns their supervised loss."""

    def __init__(self, policy: PromptedSam, labelled: LabelledSet, texts: Mapping[str, np.ndarray], point_count: int, seed: int, device: torch.device) -> None:
        present = labelled_pairs(labelled.labels, len(labelled.prompts[0].vqa) if labelled.prompts else 0)
        self.pairs = [(i, t) for i, classes in enumerate(present) for t in classes]
        if not self.pairs:
            raise DataError("stage2.anchor_on labeled: no labelled image contains any class")
        self.labelled, self.texts, self.point_count, self.device = labelled, texts, point_count, device
        self.embeddings = _embed(policy, labelled.images, labelled.embeddings, sorted({i for i, _ in self.pairs}), device)
        self.rng = np.random.default_rng(seed)

    def loss(self, policy: PromptedSam, count: int) -> torch.Tensor:
        """Focal + Dice of ``count`` labelled pairs drawn with replacement."""
        drawn = sorted(self.pairs[k] for k in self.rng.integers(0, len(self.pairs), size=count))
        images = sorted({i for i, _ in drawn})
        classes = [[t for i, t in drawn if i == image] for image in images]
        labelled = self.labelled
        batch = make_batch([labelled.prompts[i] for i in images], classes, self.texts, labelled.images.shape[-1], self.point_count)
        masks = np.concatenate([np.stack([labelled.labels[i] == t + 1 for t in chosen]) for i, chosen in zip(images, classes)])
        batch = jittered_truth_boxes(batch, masks, labelled.gt_box_fraction, labelled.gt_box_jitter, self.rng).to(self.device)
        logits = policy(self.embeddings[images], batch)[0].float()
        return segmentation_loss(logits, torch.from_numpy(masks.astype(np.float32)).to(self.device))


def train_stage2(
    policy: PromptedSam,
    reference: PromptedSam,
    images: np.ndarray,
    levels: np.ndarray,
    candidate_count: int,
    pairs: Pairs,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    settings: Stage2Settings,
    out: Path,
    spec: Mapping[str, Any],
    point_count: int,
    progress: bool = True,
    embeddings: EmbeddingRows | None = None,
    labelled: LabelledSet | None = None,
) -> list[dict[str, Any]]:
    """Align ``policy`` in place; write ``out/{model.safetensors, settings.json, train_log.csv, loss.png}``.

    Args:
        policy: the stage-1 model to train; reference: the same weights, kept frozen.
        images: (N, S, S) uint8 unlabelled images; levels: (N, T, S, S) uint8 candidate levels.
        candidate_count: K candidates per (image, class).
        pairs: from :func:`preference_pairs`.
        prompts: N image prompts; texts: text -> CLIP embedding.
        settings: stage-2 settings; spec: the model spec written to ``settings.json``.
        point_count: point tokens per prompt (the stage-1 run's).
        progress: show progress bars.
        embeddings: the frozen encoder's embeddings of ``images`` (read instead of running the encoder).
        labelled: the labelled split, required by ``anchor_on: labeled`` with ``anchor_weight`` > 0.

    Returns:
        One row per epoch: loss (and its DPO and anchor parts), share of pairs at ln 2, mean
        reward margin, share of pairs whose best candidate's log-likelihood rose above the
        reference's, learning rate, seconds. ``settings.json`` also records the run's diagnostics.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    anchored = settings.anchor_weight > 0
    if anchored and settings.anchor_on == "labeled" and labelled is None:
        raise ConfigError("stage2.anchor_on labeled needs the labelled split (align train --splits)")
    set_trainable(policy, ["mask_decoder"])
    reference.requires_grad_(False)
    policy.to(device).eval()  # SAM has no dropout or batch norm: eval mode changes nothing but intent
    reference.to(device).eval()
    size = images.shape[-1]
    every = np.arange(len(pairs.image))
    history: list[dict[str, Any]] = []
    disagreement = disagreement_pixels(np.asarray(levels[pairs.image, pairs.klass]), candidate_count) if len(every) else np.zeros(0)
    diagnostics: dict[str, Any] = {
        "pairs": len(every),
        "pairs_without_preference": pairs.without_preference,
        "why_no_preference": dict(sorted(pairs.reasons.items())),
        "median_disagreement_px": float(np.median(disagreement)) if len(every) else None,
    }
    print(
        f"stage 2 ({settings.objective}): {len(every)} pairs with a preference, {pairs.without_preference} without"
        + (" (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(pairs.reasons.items())) + ")" if pairs.reasons else "")
        + (f"; median {diagnostics['median_disagreement_px']:.0f} px where a pair's candidates disagree" if len(every) else "")
    )
    if len(every) == 0:  # nothing to learn from: the aligned model is the stage-1 model, said loudly
        print("stage 2: no (image, class) pair carries a preference; the stage-1 weights are kept unchanged")
        _write_outputs(policy, history, out, {**spec, "stage2": asdict(settings), **diagnostics})
        return history
    image_embeddings = _embed(policy, images, embeddings, sorted(set(pairs.image.tolist())), device)
    with torch.no_grad():
        ref_logp = torch.zeros(len(every), candidate_count, device=device)
        for start in range(0, len(every), settings.batch_pairs):
            chunk_images, chunk_classes, order = _batches(pairs, every[start : start + settings.batch_pairs], prompts)
            logits = _logits(reference, image_embeddings, prompts, texts, chunk_images, chunk_classes, size, point_count, device)
            masks = torch.from_numpy(level_masks(np.asarray(levels[pairs.image[order], pairs.klass[order]]), candidate_count)).to(device)
            ref_logp[torch.from_numpy(order).to(device)] = candidate_logp(logits, masks, settings.reduction)
    anchor = _LabelledAnchor(policy, labelled, texts, point_count, settings.seed, device) if anchored and settings.anchor_on == "labeled" else None
    weights = torch.from_numpy(pairs.weights).to(device)
    best = torch.from_numpy(pairs.best).to(device)
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma)
    for epoch in range(1, settings.epochs + 1):
        began = time.perf_counter()
        shuffled = np.random.default_rng(settings.seed * 1000 + epoch).permutation(every)
        totals = dict.fromkeys(("loss", "dpo_loss", "anchor_loss", "at_ln2", "margin", "best_up"), 0.0)
        for start in tqdm(range(0, len(shuffled), settings.batch_pairs), desc=f"epoch {epoch}/{settings.epochs}", unit="step", disable=not progress):
            chunk_images, chunk_classes, order = _batches(pairs, shuffled[start : start + settings.batch_pairs], prompts)
            index = torch.from_numpy(order).to(device)
            masks = torch.from_numpy(level_masks(np.asarray(levels[pairs.image[order], pairs.klass[order]]), candidate_count)).to(device)
            logits = _logits(policy, image_embeddings, prompts, texts, chunk_images, chunk_classes, size, point_count, device)
            policy_logp = candidate_logp(logits, masks, settings.reduction)
            dpo, margins = weighted_dpo_loss(policy_logp, ref_logp[index], weights[index])
            best_masks = masks[torch.arange(len(order), device=device), best[index]]
            loss = dpo if settings.objective == "dpo" else segmentation_loss(logits, best_masks)
            anchor_loss = torch.zeros((), device=device)
            if anchored:
                anchor_loss = anchor.loss(policy, len(order)) if anchor is not None else segmentation_loss(logits, best_masks)
                loss = loss + settings.anchor_weight * anchor_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rows = best[index]
            rose = (policy_logp.detach().gather(1, rows[:, None]) > ref_logp[index].gather(1, rows[:, None])).float()
            for key, value in (("loss", loss), ("dpo_loss", dpo), ("anchor_loss", anchor_loss)):
                totals[key] += value.item() * len(order)
            totals["at_ln2"] += (margins.detach().abs() < AT_LN2_MARGIN).sum().item()
            totals["margin"] += margins.detach().sum().item()
            totals["best_up"] += rose.sum().item()
        scheduler.step()
        row = {
            "epoch": epoch,
            "loss": totals["loss"] / len(every),
            "dpo_loss": totals["dpo_loss"] / len(every),
            "anchor_loss": totals["anchor_loss"] / len(every),
            "at_ln2": totals["at_ln2"] / len(every),
            "mean_margin": totals["margin"] / len(every),
            "best_rose": totals["best_up"] / len(every),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        print(
            f"epoch {epoch}: loss {row['loss']:.4f} (DPO {row['dpo_loss']:.4f}, anchor {row['anchor_loss']:.4f}), {100 * row['at_ln2']:.0f}% of pairs at ln 2, "
            f"mean margin {row['mean_margin']:.4f}, best candidate rose in {100 * row['best_rose']:.0f}% of pairs"
        )
    last = history[-1]
    diagnostics |= {key: last[key] for key in ("dpo_loss", "at_ln2", "mean_margin", "best_rose")}
    _write_outputs(policy, history, out, {**spec, "stage2": asdict(settings), **diagnostics})
    return history


LOG_FIELDS = ("epoch", "loss", "dpo_loss", "anchor_loss", "at_ln2", "mean_margin", "best_rose", "lr", "seconds")


def _write_outputs(policy: PromptedSam, history: list[dict[str, Any]], out: Path, full: Mapping[str, Any]) -> None:
    """The aligned weights, the per-epoch log (CSV and PNG) and the spec, each atomically."""
    from samdpo.sam.checkpoints import save_weights

    save_weights(policy, out / WEIGHTS)
    write_history(history, out / LOG_CSV, LOG_FIELDS)
    panels = [
        ("loss", ("loss", "dpo_loss", "anchor_loss"), False),
        ("mean reward margin", ("mean_margin",), False),
        ("share of pairs", ("best_rose", "at_ln2"), False),
    ]
    plot_history(history, panels, out / LOG_PNG, title="stage 2")
    atomic.write_text(out / SETTINGS, json.dumps({**full, "settings_hash": spec_hash(full)}, indent=2, sort_keys=True) + "\n")
