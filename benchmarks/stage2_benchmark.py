"""Benchmark: one stage-2 (DPO) epoch with the image embeddings and the reference log-likelihoods
cached (what the trainer does) against recomputing both every step, side by side in one run.

Random weights and images (the cost does not depend on them), 3 classes per image, 4 candidates,
batches of 16 (image, class) pairs; best of two epochs after a warm-up one. For ``small`` at 128 px,
``lite_medsam`` (the embedded default's SAM, 256 px) and ``sam_med2d`` at 256 px (the latter two on
few pairs: their encoders dominate). Run: ``python benchmarks/stage2_benchmark.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from samdpo.align.candidates import candidate_levels, level_masks
from samdpo.align.dpo import candidate_logp, weighted_dpo_loss
from samdpo.align.pairs import Pairs
from samdpo.align.stage2 import pair_batches, pair_logits
from samdpo.sam.builders import build_sam
from samdpo.sam.prompted import PromptedSam
from samdpo.sam.settings import SamSettings
from samdpo.sam.trainable import set_trainable
from samdpo.train.prompt_data import ImagePrompts

CLASSES, BATCH = 3, 16


def _inputs(count: int, size: int):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(count, size, size), dtype=np.uint8)
    boxes = np.tile(np.array([[size // 4, size // 4, size // 2, size // 2]], np.float32), (CLASSES, 1))
    prompts = [
        ImagePrompts(
            f"s{i}",
            boxes,
            np.ones(CLASSES, bool),
            boxes[:, None, :2] + 2,
            np.ones((CLASSES, 1), np.int64),
            ("v",) * CLASSES,
            ("l",) * CLASSES,
        )
        for i in range(count)
    ]
    probs = rng.integers(0, 255, size=(count, CLASSES, size, size), dtype=np.uint8)
    levels = candidate_levels(probs, [0.3, 0.4, 0.5, 0.6])
    image, klass = np.divmod(np.arange(count * CLASSES), CLASSES)
    weights = np.tile(np.array([1.0, 0.5, -0.5, -1.0], np.float32), (len(image), 1))
    pairs = Pairs(image, klass, weights, np.zeros(len(image), np.int64), 0)
    texts = {"v": np.ones(128, np.float32), "l": np.zeros(128, np.float32)}
    return images, prompts, levels, pairs, texts


def _epoch(policy: PromptedSam, reference: PromptedSam, images, prompts, levels, pairs, texts, cached: bool) -> float:
    """Seconds of one epoch; ``cached``: embeddings and reference log-likelihoods computed beforehand (not timed)."""
    size, every = images.shape[-1], np.arange(len(pairs.image))
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    weights = torch.from_numpy(pairs.weights)
    with torch.no_grad():
        embeddings = policy.embed_images(torch.from_numpy(images)) if cached else None
        ref_cache = {}
        if cached:
            for start in range(0, len(every), BATCH):
                imgs, classes, order = pair_batches(pairs, every[start : start + BATCH], prompts)
                masks = torch.from_numpy(level_masks(levels[pairs.image[order], pairs.klass[order]], 4))
                ref_cache[start] = candidate_logp(
                    pair_logits(reference, embeddings, prompts, texts, imgs, classes, size, 1, torch.device("cpu")),
                    masks,
                )
    began = time.perf_counter()
    for start in range(0, len(every), BATCH):
        imgs, classes, order = pair_batches(pairs, every[start : start + BATCH], prompts)
        masks = torch.from_numpy(level_masks(levels[pairs.image[order], pairs.klass[order]], 4))
        if cached:
            step_embeddings, ref_logp = embeddings, ref_cache[start]
        else:
            step_embeddings = torch.zeros(len(images), *policy.embed_images(torch.from_numpy(images[:1])).shape[1:])
            with torch.no_grad():
                step_embeddings[imgs] = policy.embed_images(torch.from_numpy(images[imgs]))
                ref_logp = candidate_logp(
                    pair_logits(
                        reference, step_embeddings, prompts, texts, imgs, classes, size, 1, torch.device("cpu")
                    ),
                    masks,
                )
        policy_logp = candidate_logp(
            pair_logits(policy, step_embeddings, prompts, texts, imgs, classes, size, 1, torch.device("cpu")), masks
        )
        loss, _ = weighted_dpo_loss(policy_logp, ref_logp, weights[torch.from_numpy(order)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-sam-med2d", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [
        ("small 128 px", SamSettings(name="small", image_size=128), 32),
        ("lite_medsam 256 px", SamSettings(name="lite_medsam", image_size=256), 4),
    ]
    if not args.skip_sam_med2d:
        cases.append(("sam_med2d 256 px", SamSettings(name="sam_med2d", image_size=256), 4))
    print(f"stage-2 epoch, CPU, {args.threads} threads, {CLASSES} classes per image, batches of {BATCH} pairs")
    print(f"{'model':18s} {'images':>6} {'cached s':>9} {'recomputed s':>13} {'speed-up':>9}")
    for name, settings, count in cases:
        torch.manual_seed(0)
        policy, reference = PromptedSam(build_sam(settings), 128), PromptedSam(build_sam(settings), 128)
        reference.load_state_dict(policy.state_dict())
        set_trainable(policy, ["mask_decoder"])
        reference.requires_grad_(False)
        data = _inputs(count, settings.image_size)
        _epoch(policy, reference, *data, cached=True)  # warm-up (first allocations)
        cached = min(_epoch(policy, reference, *data, cached=True) for _ in range(2))
        recomputed = min(_epoch(policy, reference, *data, cached=False) for _ in range(2))
        print(f"{name:18s} {count:>6} {cached:>9.2f} {recomputed:>13.2f} {recomputed / cached:>8.1f}x")


if __name__ == "__main__":
    main()
