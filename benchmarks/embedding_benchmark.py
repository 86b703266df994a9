"""Benchmark: the embed_images rule's writer (``write_image_embeddings``: batches of 4, float16 memory
map, key hash) against the bare cost it cannot beat, N single-image forwards of LiteMedSAM's
encoder, side by side in one run; and the decoder, the unit every prediction pays per (image,
class) prompt: segment_anything's ``MaskDecoder`` (the image embedding repeated per prompt) against
:func:`samdpo.sam.decoding.decode_single_mask` (shared), 15 prompts on one image (AMOS's classes).

LiteMedSAM with its shipped weights, random 128 px images (the cost does not depend on them).
Run: ``python benchmarks/embedding_benchmark.py [--images 12] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samdpo.sam.decoding import decode_single_mask
from samdpo.sam.image_embeddings import write_image_embeddings
from samdpo.sam.prompted import box_batch
from samdpo.sam.specs import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(
        {"name": "lite_medsam", "image_size": 256}, 1, {"box": True, "points": False, "vqa": False, "llm": False}, 0
    ).eval()
    images = np.random.default_rng(0).integers(0, 255, size=(args.images, 128, 128), dtype=np.uint8)
    with torch.inference_mode():
        model.embed_images(torch.from_numpy(images[:1]))  # warm-up
        began = time.perf_counter()
        for i in range(args.images):
            embedding = model.embed_images(torch.from_numpy(images[i : i + 1]))
        bare = time.perf_counter() - began
        decoder, prompts = model.sam.mask_decoder, 15
        sparse = model.sparse_tokens(
            box_batch(np.tile(np.array([[20.0, 20.0, 80.0, 90.0]], np.float32), (prompts, 1)), 128)
        )
        pe = model.sam.prompt_encoder.get_dense_pe()
        dense = model.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            prompts, -1, *embedding.shape[-2:]
        )
        repeated = shared = 0.0
        for _ in range(3):  # alternated, so both see the same machine state
            began = time.perf_counter()
            decoder(embedding, pe, sparse, dense, multimask_output=False)
            repeated += time.perf_counter() - began
            began = time.perf_counter()
            decode_single_mask(decoder, embedding, pe, sparse, dense[:1])
            shared += time.perf_counter() - began
        repeated, shared = repeated / 3 / prompts, shared / 3 / prompts
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        write_image_embeddings(Path(folder), model, images, [f"s{i}" for i in range(args.images)], {}, progress=False)
        rule = time.perf_counter() - began
    print(f"{args.images} images, {args.threads} thread(s)")
    print(f"bare encoder forwards: {bare / args.images:.2f} s per image")
    print(f"write_image_embeddings: {rule / args.images:.2f} s per image ({rule / bare:.2f}x the bare forwards)")
    print(f"decoder, segment_anything (image repeated per prompt): {repeated:.3f} s per prompt")
    print(f"decoder, decode_single_mask (image shared): {shared:.3f} s per prompt ({repeated / shared:.2f}x faster)")


if __name__ == "__main__":
    main()
