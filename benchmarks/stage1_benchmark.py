"""Benchmark: stage-1 training throughput, with and without the image-embedding cache.

Measured side by side in one run, on random images with three labelled classes each (weights
random: the cost does not depend on them), through the trainer itself (`train_stage1`):

- ``small`` at 128 px: everything trained (no cache possible) vs the image encoder frozen (its
  embeddings computed once, then reused every epoch);
- ``sam_med2d`` at 256 px (ViT-B with adapters, 271 M parameters): adapters + prompt encoder +
  decoder trained (the paper's setting; the encoder runs every step) vs the encoder frozen.

Samples are (image, class) pairs; the rate is that of the last epoch (the cache's one-time cost
is reported apart). Run: ``python benchmarks/stage1_benchmark.py [--threads 2] [--skip-sam-med2d]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch

from samdpo.sam.builders import build_sam
from samdpo.sam.prompted import PromptedSam
from samdpo.sam.settings import SamSettings
from samdpo.train.prompt_data import ImagePrompts
from samdpo.train.stage1 import Stage1Settings, train_stage1

CLASSES = 3


def _data(count: int, size: int) -> tuple[np.ndarray, np.ndarray, list[ImagePrompts], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(count, size, size), dtype=np.uint8)
    labels = np.zeros((count, size, size), np.uint8)
    boxes = np.zeros((CLASSES, 4), np.float32)
    for t in range(CLASSES):
        lo, hi = size * t // CLASSES, size * (t + 1) // CLASSES - 1
        labels[:, lo:hi, lo:hi] = t + 1
        boxes[t] = (lo, lo, hi, hi)
    prompts = [
        ImagePrompts(
            f"s{i}",
            boxes,
            np.ones(CLASSES, bool),
            boxes[:, None, :2] + 4,
            np.ones((CLASSES, 1), np.int64),
            ("vqa",) * CLASSES,
            ("llm",) * CLASSES,
        )
        for i in range(count)
    ]
    return images, labels, prompts, {"vqa": np.ones(128, np.float32), "llm": np.zeros(128, np.float32)}


def _rate(settings: SamSettings, parts: tuple[str, ...], images: int, epochs: int) -> tuple[float, float]:
    """(samples/s of the last epoch, seconds before the first epoch: model build and embedding cache)."""
    data = _data(images, settings.image_size)
    with TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = PromptedSam(build_sam(settings), 128)
        run = Stage1Settings(epochs=epochs, lr=1e-4, batch_images=2, train=parts, device="cpu")
        history = train_stage1(model, *data, run, Path(tmp), {}, point_count=1, progress=False)
        total = time.perf_counter() - start
    return history[-1]["samples_per_s"], total - sum(row["seconds"] for row in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-sam-med2d", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [
        (
            "small 128 px, all trained",
            SamSettings(name="small", image_size=128),
            ("image_encoder", "prompt_encoder", "mask_decoder", "text_proj"),
            16,
            3,
        ),
        (
            "small 128 px, encoder frozen (cache)",
            SamSettings(name="small", image_size=128),
            ("prompt_encoder", "mask_decoder", "text_proj"),
            16,
            3,
        ),
    ]
    if not args.skip_sam_med2d:
        cases += [
            (
                "sam_med2d 256 px, adapters trained",
                SamSettings(name="sam_med2d", image_size=256),
                ("adapters", "prompt_encoder", "mask_decoder", "text_proj"),
                2,
                1,
            ),
            (
                "sam_med2d 256 px, encoder frozen (cache)",
                SamSettings(name="sam_med2d", image_size=256),
                ("prompt_encoder", "mask_decoder", "text_proj"),
                2,
                2,
            ),
        ]
    print(f"stage-1 training on the CPU, {args.threads} threads, {CLASSES} classes per image, batches of 2 images")
    print(f"{'case':42s} {'samples/s':>10} {'setup s':>8}")
    rates = []
    for name, settings, parts, images, epochs in cases:
        rate, setup = _rate(settings, parts, images, epochs)
        rates.append(rate)
        print(f"{name:42s} {rate:>10.2f} {setup:>8.1f}")
    print(f"embedding cache speed-up, small: {rates[1] / rates[0]:.2f}x")
    if len(rates) == 4:
        print(f"embedding cache speed-up, sam_med2d: {rates[3] / rates[2]:.2f}x")


if __name__ == "__main__":
    main()
