"""SAM's mask decoder for K prompts on one image, without copying the image K times.

segment_anything's ``MaskDecoder.predict_masks`` repeats the image embedding and its positional
encoding once per prompt (``repeat_interleave``) before the two-way transformer. Its attention
layers broadcast over the batch dimension, so the same computation runs on the un-repeated (1, C,
h, w) embedding: in the first block the image-side projections (token-to-image keys and values,
image-to-token queries) are then computed once per image instead of once per prompt, and no
(K, C, h, w) copies are made. The result equals ``MaskDecoder(..., multimask_output=False)`` up to
float rounding (``tests/test_image_embeddings.py`` compares them, with gradients).
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder


def decode_single_mask(
    decoder: MaskDecoder,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's first (single-mask) output for K prompts on one image.

    Args:
        decoder: segment_anything's ``MaskDecoder``.
        image_embedding: (1, C, h, w) embedding of the image.
        image_pe: (1, C, h, w) dense positional encoding.
        sparse: (K, n, C) sparse prompt tokens.
        dense: (1, C, h, w) dense prompt embedding shared by all prompts, or (K, C, h, w).

    Returns:
        (K, 1, 4h, 4w) mask logits and (K, 1) predicted IoU, as ``decoder(..., multimask_output=False)``.
    """
    count = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(count, -1, -1), sparse), dim=1)
    _, channels, height, width = image_embedding.shape
    hs, src = decoder.transformer(
        image_embedding + dense, image_pe, tokens
    )  # attention broadcasts the image over prompts
    src = src.expand(count, -1, -1).transpose(1, 2).reshape(count, channels, height, width)
    upscaled = decoder.output_upscaling(src)
    hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1, :]).unsqueeze(1)  # the first mask token: single-mask output
    b, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.view(b, c, h * w)).view(b, 1, h, w)
    iou = decoder.iou_prediction_head(hs[:, 0, :])[:, :1]
    return masks, iou
