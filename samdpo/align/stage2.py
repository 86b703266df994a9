"""Stage 2: align the stage-1 model to the annotator's preferences with DPO (or, for the ablation,
supervise it on the best candidate only).

Policy = the stage-1 model with only the mask decoder trainable; reference = the frozen stage-1
model. Neither the image encoder nor the reference changes, so the image embeddings and the
reference log-likelihoods of the candidates are computed once, before the first epoch.

An optional supervised anchor (``anchor_weight`` > 0) adds ``anchor_weight`` x (focal + Dice) on
the best candidate of each pair (``anchor_on: best_candidate``) or on labelled (image, class)
pairs with their ground truth (``labeled``, the stage-1 recipe's prompts). Every run reports what
DPO had to work with: pairs with a preference and why the others have none, the median number of
pixels where a pair's candidates disagree (and their share of the largest candidate's area), and per
epoch the share of pairs whose loss stayed at
ln 2 (margin within 0.02 of 0), the mean reward margin, and the share whose best candidate rose.
Like stage 1, it writes a checkpoint after every epoch and a rerun with the same inputs resumes from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samdpo.align.candidates import CandidateSet
from samdpo.align.dpo import candidate_logp, weighted_dpo_loss
from samdpo.align.pairs import Pairs
from samdpo.align.stage2_settings import Stage2Settings
from samdpo.devices import pick_device
from samdpo.errors import ConfigError, DataError
from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptedSam
from samdpo.sam.trainable import set_trainable
from samdpo.train.batches import jittered_truth_boxes, labelled_pairs, make_batch
from samdpo.train.loop import (
    GeneratorState,
    Loop,
    Training,
    adam_with_step_lr,
    train_epochs,
    write_outputs,
)
from samdpo.train.losses import segmentation_loss
from samdpo.train.prompt_data import ImagePrompts

LOG_CSV = "train_log.csv"
#: A pair's loss counts as stuck at ln 2 while its reward margin is within this of 0 (loss within 0.01 of ln 2).
AT_LN2_MARGIN = 0.02


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


def disagreement_pixels(masks: np.ndarray) -> np.ndarray:
    """(P,) pixels where a pair's K candidates do not all agree, from (P, K, S, S) bool masks."""
    masks = np.asarray(masks, bool)
    return (masks.any(1) & ~masks.all(1)).reshape(len(masks), -1).sum(1)


def disagreement_share(masks: np.ndarray) -> np.ndarray:
    """(P,) disagreement pixels as a share of the pair's largest candidate's area (0 where all are empty)."""
    largest = np.asarray(masks, bool).reshape(*np.shape(masks)[:2], -1).sum(2).max(1)
    return disagreement_pixels(masks) / np.maximum(largest, 1)


def pair_batches(
    pairs: Pairs, chosen: np.ndarray, prompts: Sequence[ImagePrompts]
) -> tuple[list[int], list[list[int]], np.ndarray]:
    """Images, their classes, and the pair indices in the order the model returns masks (image-major)."""
    chosen = chosen[np.lexsort((pairs.klass[chosen], pairs.image[chosen]))]
    images = sorted(set(pairs.image[chosen].tolist()))
    classes = [pairs.klass[chosen][pairs.image[chosen] == i].tolist() for i in images]
    return images, classes, chosen


def pair_logits(
    model: PromptedSam,
    embeddings: torch.Tensor,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    images: list[int],
    classes: list[list[int]],
    size: int,
    points: int,
    device: torch.device,
) -> torch.Tensor:
    batch = make_batch([prompts[i] for i in images], classes, texts, size, points).to(device)
    return model(embeddings[images], batch)[0].float()


def _embed(
    policy: PromptedSam,
    images: np.ndarray,
    embeddings: EmbeddingRows | None,
    needed: Sequence[int],
    device: torch.device,
) -> torch.Tensor | None:
    """(N, C, h, w) image embeddings with the ``needed`` rows filled (read from ``embeddings`` or encoded)."""
    out = None
    with torch.no_grad():
        for start in range(0, len(needed), 8):
            chunk = list(needed[start : start + 8])
            embedded = (
                policy.embed_images(torch.from_numpy(np.asarray(images[chunk])).to(device))
                if embeddings is None
                else embeddings.take(chunk, device)
            )
            if out is None:
                out = torch.zeros((len(images), *embedded.shape[1:]), device=device)
            out[chunk] = embedded
    return out


class _LabelledAnchor:
    """Draws batches of labelled (image, class) pairs and returns their supervised loss."""

    def __init__(
        self,
        policy: PromptedSam,
        labelled: LabelledSet,
        texts: Mapping[str, np.ndarray],
        point_count: int,
        seed: int,
        device: torch.device,
    ) -> None:
        present = labelled_pairs(labelled.labels, len(labelled.prompts[0].vqa) if labelled.prompts else 0)
        self.pairs = [(i, t) for i, classes in enumerate(present) for t in classes]
        if not self.pairs:
            raise DataError("stage2.anchor_on labeled: no labelled image contains any class")
        self.labelled, self.texts, self.point_count, self.device = labelled, texts, point_count, device
        self.embeddings = _embed(
            policy, labelled.images, labelled.embeddings, sorted({i for i, _ in self.pairs}), device
        )
        self.rng = np.random.default_rng(seed)

    def loss(self, policy: PromptedSam, count: int) -> torch.Tensor:
        """Focal + Dice of ``count`` labelled pairs drawn with replacement."""
        drawn = sorted(self.pairs[k] for k in self.rng.integers(0, len(self.pairs), size=count))
        images = sorted({i for i, _ in drawn})
        classes = [[t for i, t in drawn if i == image] for image in images]
        labelled = self.labelled
        batch = make_batch(
            [labelled.prompts[i] for i in images], classes, self.texts, labelled.images.shape[-1], self.point_count
        )
        masks = np.concatenate(
            [np.stack([labelled.labels[i] == t + 1 for t in chosen]) for i, chosen in zip(images, classes)]
        )
        batch = jittered_truth_boxes(batch, masks, labelled.gt_box_fraction, labelled.gt_box_jitter, self.rng).to(
            self.device
        )
        logits = policy(self.embeddings[images], batch)[0].float()
        return segmentation_loss(logits, torch.from_numpy(masks.astype(np.float32)).to(self.device))


#: What stage 2 logs per epoch: the loss and its DPO and anchor parts (means over the pairs), the share of
#: pairs at ln 2, the mean reward margin and the share of pairs whose best candidate rose above the reference.
STAGE2_COLUMNS = ("loss", "dpo_loss", "anchor_loss", "at_ln2", "mean_margin", "best_rose")
LOG_FIELDS = ("epoch", *STAGE2_COLUMNS, "lr", "seconds")
#: The last epoch's values that ``settings.json`` records among the run's diagnostics.
FINAL_DIAGNOSTICS = ("dpo_loss", "at_ln2", "mean_margin", "best_rose")


@dataclass
class _PairData:
    """What scoring a batch of pairs needs, on ``device``: the pairs, their candidates (K per pair),
    the N images' prompts, the texts' embeddings and the (N, C, h, w) image embeddings."""

    pairs: Pairs
    candidates: CandidateSet
    prompts: Sequence[ImagePrompts]
    texts: Mapping[str, np.ndarray]
    embeddings: torch.Tensor
    size: int
    point_count: int
    device: torch.device

    def score(self, model: PromptedSam, chosen: np.ndarray) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The chosen pairs in the model's order, their (P, K, S, S) candidate masks and (P, S, S) logits."""
        images, classes, order = pair_batches(self.pairs, chosen, self.prompts)
        masks = torch.from_numpy(self.candidates.masks(self.pairs.image[order], self.pairs.klass[order]))
        masks = masks.to(self.device)
        logits = pair_logits(
            model, self.embeddings, self.prompts, self.texts, images, classes, self.size, self.point_count, self.device
        )
        return order, masks, logits


def _reference_logp(reference: PromptedSam, data: _PairData, batch_pairs: int, reduction: str) -> torch.Tensor:
    """(P, K) log-likelihoods of every pair's candidates under the frozen reference."""
    every = np.arange(len(data.pairs.image))
    logp = torch.zeros(len(every), data.candidates.count, device=data.device)
    with torch.no_grad():
        for start in range(0, len(every), batch_pairs):
            order, masks, logits = data.score(reference, every[start : start + batch_pairs])
            logp[torch.from_numpy(order).to(data.device)] = candidate_logp(logits, masks, reduction)
    return logp


@dataclass
class _DpoStep:
    """Stage 2's :data:`~samdpo.train.loop.Step`: a batch of pairs -> the DPO (or best-candidate) loss plus
    the weighted anchor, with the sums of :data:`STAGE2_COLUMNS`."""

    policy: PromptedSam
    data: _PairData
    ref_logp: torch.Tensor
    settings: Stage2Settings
    anchor: _LabelledAnchor | None

    def __post_init__(self) -> None:
        self.weights = torch.from_numpy(self.data.pairs.weights).to(self.data.device)
        self.best = torch.from_numpy(self.data.pairs.best).to(self.data.device)

    def __call__(self, chosen: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float], int]:
        settings, device = self.settings, self.data.device
        order, masks, logits = self.data.score(self.policy, chosen)
        index = torch.from_numpy(order).to(device)
        policy_logp = candidate_logp(logits, masks, settings.reduction)
        dpo, margins = weighted_dpo_loss(policy_logp, self.ref_logp[index], self.weights[index])
        best = self.best[index]
        best_masks = masks[torch.arange(len(order), device=device), best]
        loss = dpo if settings.objective == "dpo" else segmentation_loss(logits, best_masks)
        anchor_loss = torch.zeros((), device=device)
        if settings.anchor_weight > 0:
            if self.anchor is not None:
                anchor_loss = self.anchor.loss(self.policy, len(order))
            else:
                anchor_loss = segmentation_loss(logits, best_masks)
            loss = loss + settings.anchor_weight * anchor_loss
        rose = (policy_logp.detach().gather(1, best[:, None]) > self.ref_logp[index].gather(1, best[:, None])).float()
        n, margins = len(order), margins.detach()
        sums = {"loss": loss.item() * n, "dpo_loss": dpo.item() * n, "anchor_loss": anchor_loss.item() * n}
        sums["at_ln2"] = (margins.abs() < AT_LN2_MARGIN).sum().item()
        sums |= {"mean_margin": margins.sum().item(), "best_rose": rose.sum().item()}
        return loss, sums, n


def _diagnostics(objective: str, pairs: Pairs, candidates: CandidateSet) -> dict[str, Any]:
    """What DPO has to work with (pairs with a preference, why the others have none, the median pixels
    where a pair's candidates disagree and their share of the largest candidate), said on stdout and
    returned for ``settings.json``."""
    count, median, share = len(pairs.image), None, None
    if count:
        masks = candidates.masks(pairs.image, pairs.klass)
        median = float(np.median(disagreement_pixels(masks)))
        share = float(np.median(disagreement_share(masks)))
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(pairs.reasons.items()))
    print(
        f"stage 2 ({objective}): {count} pairs with a preference, {pairs.without_preference} without"
        + (f" ({reasons})" if reasons else "")
        + (
            f"; median {median:.0f} px where a pair's candidates disagree ({100 * share:.0f}% of the largest)"
            if count
            else ""
        )
    )
    return {
        "pairs": count,
        "pairs_without_preference": pairs.without_preference,
        "why_no_preference": dict(sorted(pairs.reasons.items())),
        "median_disagreement_px": median,
        "median_disagreement_share": share,
    }


def _stage2_loop(out: Path, settings: Stage2Settings, pair_count: int, written: Mapping[str, Any]) -> Loop:
    """Stage 2's epochs over the pairs, its log, and its ``settings.json`` (``written``, last epoch's diagnostics)."""

    def describe(row: dict[str, Any]) -> str:
        return (
            f"epoch {row['epoch']}: loss {row['loss']:.4f} "
            f"(DPO {row['dpo_loss']:.4f}, anchor {row['anchor_loss']:.4f}), "
            f"{100 * row['at_ln2']:.0f}% of pairs at ln 2, mean margin {row['mean_margin']:.4f}, "
            f"best candidate rose in {100 * row['best_rose']:.0f}% of pairs"
        )

    def settings_json(history: list[dict[str, Any]]) -> Mapping[str, Any]:
        return {**written, **({key: history[-1][key] for key in FINAL_DIAGNOSTICS} if history else {})}

    panels = [
        ("loss", ("loss", "dpo_loss", "anchor_loss"), False),
        ("mean reward margin", ("mean_margin",), False),
        ("share of pairs", ("best_rose", "at_ln2"), False),
    ]
    return Loop(
        Path(out),
        settings.epochs,
        settings.seed,
        np.arange(pair_count),
        settings.batch_pairs,
        STAGE2_COLUMNS,
        panels,
        settings_json,
        describe,
        plot_title="stage 2",
        log_csv=LOG_CSV,
        log_fields=LOG_FIELDS,
    )


def _stage2_inputs(
    spec: Mapping[str, Any],
    settings: Stage2Settings,
    point_count: int,
    images: np.ndarray,
    data: _PairData,
    anchor: _LabelledAnchor | None,
    policy: PromptedSam,
    reference: PromptedSam,
) -> dict[str, Any]:
    """Everything a stage-2 result depends on, for the checkpoint's key: spec and settings, the pairs' data
    (images, candidates, preferences, prompts, texts, the image embeddings in use), the labelled anchor's
    data when it is used, and the initial policy and reference weights."""
    pairs = {
        "images": images,
        "candidates": np.asarray(data.candidates.packed),
        "pairs": data.pairs,
        "prompts": list(data.prompts),
        "texts": data.texts,
        "embeddings": data.embeddings,
    }
    labelled = None
    if anchor is not None:
        given = anchor.labelled
        labelled = {
            "images": given.images,
            "labels": given.labels,
            "prompts": list(given.prompts),
            "embeddings": anchor.embeddings,
            "gt_box": (given.gt_box_fraction, given.gt_box_jitter),
        }
    return {
        "spec": spec,
        "settings": settings,
        "point_count": point_count,
        "data": pairs,
        "labelled": labelled,
        "initial": policy.state_dict(),
        "reference": reference.state_dict(),
    }


def _place_models(policy: PromptedSam, reference: PromptedSam, device: torch.device) -> None:
    """Only the policy's mask decoder trains; both models go to ``device`` in eval mode (SAM has no dropout
    or batch norm: the mode changes nothing but intent)."""
    set_trainable(policy, ["mask_decoder"])
    reference.requires_grad_(False)
    policy.to(device).eval()
    reference.to(device).eval()


def train_stage2(
    policy: PromptedSam,
    reference: PromptedSam,
    images: np.ndarray,
    candidates: CandidateSet,
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

    A checkpoint is written after every epoch; a rerun with the same spec, settings, point count, pair data
    (images, candidates, preferences, prompts, texts, embeddings; the labelled anchor's) and initial policy and
    reference weights resumes from it (see :mod:`samdpo.train.loop`).

    Args:
        policy: the stage-1 model to train; reference: the same weights, kept frozen.
        images: (N, S, S) uint8 unlabelled images; candidates: their K candidates per (image, class).
        pairs: from :func:`preference_pairs`.
        prompts: N image prompts; texts: text -> CLIP embedding.
        settings: stage-2 settings; spec: the model spec written to ``settings.json``.
        point_count: point tokens per prompt (the stage-1 run's); progress: show progress bars.
        embeddings: the frozen encoder's embeddings of ``images`` (read instead of running the encoder).
        labelled: the labelled split, required by ``anchor_on: labeled`` with ``anchor_weight`` > 0.

    Returns:
        One row per epoch: :data:`STAGE2_COLUMNS`, the epoch's learning rate and seconds (:data:`LOG_FIELDS`).
        ``settings.json`` also records the run's diagnostics.
    """
    device = pick_device(settings.device)
    labeled_anchor = settings.anchor_weight > 0 and settings.anchor_on == "labeled"
    if labeled_anchor and labelled is None:
        raise ConfigError("stage2.anchor_on labeled needs the labelled split (align train --splits)")
    _place_models(policy, reference, device)
    diagnostics = _diagnostics(settings.objective, pairs, candidates)
    loop = _stage2_loop(out, settings, len(pairs.image), {**spec, "stage2": asdict(settings), **diagnostics})
    if len(pairs.image) == 0:  # nothing to learn from: the aligned model is the stage-1 model, said loudly
        print("stage 2: no (image, class) pair carries a preference; the stage-1 weights are kept unchanged")
        write_outputs(loop, policy, [])
        return []
    embedded = _embed(policy, images, embeddings, sorted(set(pairs.image.tolist())), device)
    data = _PairData(pairs, candidates, prompts, texts, embedded, images.shape[-1], point_count, device)
    anchor = _LabelledAnchor(policy, labelled, texts, point_count, settings.seed, device) if labeled_anchor else None
    inputs = _stage2_inputs(spec, settings, point_count, images, data, anchor, policy, reference)
    optimizer, scheduler = adam_with_step_lr(policy, settings.lr, settings.lr_step, settings.lr_gamma)
    ref_logp = _reference_logp(reference, data, settings.batch_pairs, settings.reduction)
    step = _DpoStep(policy, data, ref_logp, settings, anchor)
    extra = {"anchor_rng": GeneratorState(anchor.rng)} if anchor is not None else {}
    return train_epochs(loop, Training(policy, optimizer, scheduler, extra, device, progress=progress), step, inputs)
