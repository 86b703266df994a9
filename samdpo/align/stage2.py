"""Stage 2: align the stage-1 model to the annotator's preferences with DPO (or, for the ablation,
supervise it on the best candidate only).

Policy = the stage-1 model with only the mask decoder trainable; reference = the frozen stage-1
model. Neither the image encoder nor the reference changes, so the image embeddings and the
reference log-likelihoods of the candidates are computed once, before the first epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from samdpo import atomic
from samdpo.align.annotator import Annotation, preference_weights
from samdpo.align.candidates import level_masks
from samdpo.align.dpo import REDUCTIONS, candidate_logp, weighted_dpo_loss
from samdpo.errors import ConfigError, DataError
from samdpo.train.history import plot_history, write_history
from samdpo.train.image_embeddings import EmbeddingRows
from samdpo.train.losses import segmentation_loss
from samdpo.train.model import PromptedSam
from samdpo.train.prompt_data import ImagePrompts
from samdpo.train.stage1 import SETTINGS, WEIGHTS, make_batch, pick_device, set_trainable, spec_hash

OBJECTIVES = ("dpo", "best")
LOG_CSV, LOG_PNG = "train_log.csv", "loss.png"


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
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"stage2.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"stage2.reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.epochs < 1 or self.batch_pairs < 1 or self.lr_step < 1 or not self.lr > 0:
            raise ConfigError("stage2: epochs, batch_pairs and lr_step must be >= 1 and lr > 0")


@dataclass(frozen=True)
class Pairs:
    """The (image, class) pairs stage 2 trains on, in image order.

    Attributes:
        image: (P,) image index; klass: (P,) class index.
        weights: (P, K) preference weight of each candidate; best: (P,) best candidate's index.
        without_preference: pairs skipped because all candidates are tied.
    """

    image: np.ndarray
    klass: np.ndarray
    weights: np.ndarray
    best: np.ndarray
    without_preference: int


def preference_pairs(sample_ids: Sequence[str], class_count: int, annotations: Mapping[tuple[str, int], Annotation], beta1: float, beta2: float) -> Pairs:
    """The pairs that carry a preference (possibly none); every (image, class) must have been annotated."""
    missing = [(s, t) for s in sample_ids for t in range(class_count) if (s, t) not in annotations]
    if missing:
        raise DataError(f"no annotation for {len(missing)} (image, class) pairs, e.g. image {missing[0][0]} class {missing[0][1]}; rerun the annotate rule")
    image, klass, weights, best, skipped = [], [], [], [], 0
    for i, sample in enumerate(sample_ids):
        for t in range(class_count):
            annotation = annotations[(sample, t)]
            if not annotation.has_preference:
                skipped += 1
                continue
            image.append(i)
            klass.append(t)
            weights.append(preference_weights(annotation, beta1, beta2))
            best.append(int(annotation.order[0]))
    weights_array = np.array(weights, np.float32) if weights else np.zeros((0, 4), np.float32)
    return Pairs(np.array(image, np.int64), np.array(klass, np.int64), weights_array, np.array(best, np.int64), skipped)


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

    Returns:
        One row per epoch: loss, mean reward margin, share of pairs whose best candidate's
        log-likelihood rose above the reference's, seconds.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    set_trainable(policy, ["mask_decoder"])
    reference.requires_grad_(False)
    policy.to(device).eval()  # SAM has no dropout or batch norm: eval mode changes nothing but intent
    reference.to(device).eval()
    size = images.shape[-1]
    every = np.arange(len(pairs.image))
    history: list[dict[str, Any]] = []
    if len(every) == 0:  # nothing to learn from: the aligned model is the stage-1 model, said loudly
        print(f"stage 2: no (image, class) pair carries a preference ({pairs.without_preference} tied); the stage-1 weights are kept unchanged")
        _write_outputs(policy, history, out, {**spec, "stage2": asdict(settings), "pairs": 0, "pairs_without_preference": pairs.without_preference})
        return history
    with torch.no_grad():
        needed = sorted(set(pairs.image.tolist()))
        image_embeddings = None
        for start in range(0, len(needed), 8):
            chunk = needed[start : start + 8]
            if embeddings is None:
                embedded = policy.embed_images(torch.from_numpy(np.asarray(images[chunk])).to(device))
            else:
                embedded = embeddings.take(chunk, device)
            if image_embeddings is None:
                image_embeddings = torch.zeros((len(images), *embedded.shape[1:]), device=device)
            image_embeddings[chunk] = embedded
        ref_logp = torch.zeros(len(every), candidate_count, device=device)
        for start in range(0, len(every), settings.batch_pairs):
            chunk_images, chunk_classes, order = _batches(pairs, every[start : start + settings.batch_pairs], prompts)
            logits = _logits(reference, image_embeddings, prompts, texts, chunk_images, chunk_classes, size, point_count, device)
            masks = torch.from_numpy(level_masks(np.asarray(levels[pairs.image[order], pairs.klass[order]]), candidate_count)).to(device)
            ref_logp[torch.from_numpy(order).to(device)] = candidate_logp(logits, masks, settings.reduction)
    weights = torch.from_numpy(pairs.weights).to(device)
    best = torch.from_numpy(pairs.best).to(device)
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_step, gamma=settings.lr_gamma)
    print(f"stage 2 ({settings.objective}): {len(every)} pairs with a preference, {pairs.without_preference} without (all candidates tied)")
    for epoch in range(1, settings.epochs + 1):
        began = time.perf_counter()
        shuffled = np.random.default_rng(settings.seed * 1000 + epoch).permutation(every)
        totals = {"loss": 0.0, "margin": 0.0, "best_up": 0.0}
        for start in tqdm(range(0, len(shuffled), settings.batch_pairs), desc=f"epoch {epoch}/{settings.epochs}", unit="step", disable=not progress):
            chunk_images, chunk_classes, order = _batches(pairs, shuffled[start : start + settings.batch_pairs], prompts)
            index = torch.from_numpy(order).to(device)
            masks = torch.from_numpy(level_masks(np.asarray(levels[pairs.image[order], pairs.klass[order]]), candidate_count)).to(device)
            logits = _logits(policy, image_embeddings, prompts, texts, chunk_images, chunk_classes, size, point_count, device)
            policy_logp = candidate_logp(logits, masks, settings.reduction)
            dpo, margins = weighted_dpo_loss(policy_logp, ref_logp[index], weights[index])
            if settings.objective == "dpo":
                loss = dpo
            else:
                target = masks[torch.arange(len(order), device=device), best[index]]
                loss = segmentation_loss(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rows = best[index]
            rose = (policy_logp.detach().gather(1, rows[:, None]) > ref_logp[index].gather(1, rows[:, None])).float()
            totals["loss"] += loss.item() * len(order)
            totals["margin"] += margins.detach().sum().item()
            totals["best_up"] += rose.sum().item()
        scheduler.step()
        row = {
            "epoch": epoch,
            "loss": totals["loss"] / len(every),
            "mean_margin": totals["margin"] / len(every),
            "best_rose": totals["best_up"] / len(every),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        print(f"epoch {epoch}: loss {row['loss']:.4f}, mean margin {row['mean_margin']:.4f}, best candidate rose in {100 * row['best_rose']:.0f}% of pairs")
    _write_outputs(policy, history, out, {**spec, "stage2": asdict(settings), "pairs": len(every), "pairs_without_preference": pairs.without_preference})
    return history


LOG_FIELDS = ("epoch", "loss", "mean_margin", "best_rose", "lr", "seconds")


def _write_outputs(policy: PromptedSam, history: list[dict[str, Any]], out: Path, full: Mapping[str, Any]) -> None:
    """The aligned weights, the per-epoch log (CSV and PNG) and the spec, each atomically."""
    from samdpo.sam.checkpoints import save_weights

    save_weights(policy, out / WEIGHTS)
    write_history(history, out / LOG_CSV, LOG_FIELDS)
    panels = [("loss", ("loss",), False), ("mean reward margin", ("mean_margin",), False), ("share: best candidate rose", ("best_rose",), False)]
    plot_history(history, panels, out / LOG_PNG, title="stage 2")
    atomic.write_text(out / SETTINGS, json.dumps({**full, "settings_hash": spec_hash(full)}, indent=2, sort_keys=True) + "\n")
