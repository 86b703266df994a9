"""Passes of a frozen (stage-1) model over images with their human-free prompts: what the uncertainty
annotator's consensus and the candidates' model sources share."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from samdpo.sam.image_embeddings import EmbeddingRows
from samdpo.sam.prompted import PromptBatch, PromptedSam
from samdpo.train.batches import make_batch
from samdpo.train.prompt_data import ImagePrompts


def each_image(
    model: PromptedSam,
    embeddings: EmbeddingRows | None,
    images: np.ndarray | None,
    prompts: Sequence[ImagePrompts],
    texts: Mapping[str, np.ndarray],
    class_count: int,
    size: int,
    point_count: int,
    device: torch.device,
    desc: str,
    progress: bool,
) -> Iterator[tuple[int, torch.Tensor, PromptBatch]]:
    """(n, (1, C, h, w) embedding, the batch of its ``class_count`` prompts) per image, in inference mode.

    Args:
        embeddings: the frozen encoder's embeddings in ``prompts``' order, or None to encode the
            (N, S, S) uint8 ``images`` here (a model whose encoder trained).
        desc, progress: the progress bar's label, and whether to show it.
    """
    if embeddings is None and images is None:
        raise ValueError(f"{desc}: needs the images' embeddings or the images")
    model.eval().to(device)
    with torch.inference_mode():
        for n in tqdm(range(len(prompts)), desc=desc, unit="image", disable=not progress):
            batch = make_batch([prompts[n]], [range(class_count)], texts, size, point_count)
            if embeddings is None:
                embedded = model.embed_images(torch.from_numpy(np.asarray(images[n : n + 1])).to(device))
            else:
                embedded = embeddings.take([n], device)
            yield n, embedded, batch
