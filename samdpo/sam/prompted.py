"""SAM with fused prompts: CAM box and points through SAM's prompt encoder, VQA and LLM texts as
extra sparse tokens (CLIP text embedding -> learned linear projection), as MedSAM's text prompts.

Sparse tokens per (image, class), in this order, each kind present only when switched on:
P point tokens (padding points are SAM's "not a point"; P is fixed for a whole run, so a prompt's
tokens never depend on its batch), 2 box-corner tokens ("not a point" twice for "no box"), 1 VQA
token, 1 LLM token, each text through its own projection. The same token layout for every prompt
keeps batches uniform; the dense prompt is SAM's "no mask" embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samdpo.sam.decoding import decode_single_mask

#: Input normalisations :meth:`PromptedSam.preprocess` knows.
NORMALISATIONS = ("imagenet", "minmax")


@dataclass(frozen=True)
class PromptSwitches:
    """Which kinds of prompt reach the decoder (the ablations turn them off)."""

    box: bool = True
    points: bool = True
    vqa: bool = True
    llm: bool = True


@dataclass
class PromptBatch:
    """K prompts over B images (coordinates in store pixels of side ``size``).

    Attributes:
        image_index: (K,) int64, which of the B image embeddings each prompt uses (sorted).
        boxes: (K, 4) float32 XYXY; has_box: (K,) bool.
        points: (K, P, 2) float32 XY; point_labels: (K, P) int64 (1, 0, -1 padding).
        vqa: (K, D) float32 text embeddings; llm: (K, D) float32.
        size: the side of the store's images, pixels.
    """

    image_index: torch.Tensor
    boxes: torch.Tensor
    has_box: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor
    vqa: torch.Tensor
    llm: torch.Tensor
    size: int

    def to(self, device: torch.device | str) -> PromptBatch:
        """The batch on ``device``."""
        fields = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return PromptBatch(**fields)


class PromptedSam(nn.Module):
    """A segment_anything ``Sam`` plus the text projection; predicts one mask per prompt.

    Args:
        sam: from :func:`samdpo.sam.builders.build_sam`.
        text_dim: width of the CLIP text embeddings, D.
        switches: which prompt kinds are used.
        normalisation: the input normalisation ``sam`` was trained with
            (:data:`samdpo.sam.settings.NORMALISATION`): ``imagenet`` or ``minmax``.
    """

    def __init__(
        self,
        sam: nn.Module,
        text_dim: int,
        switches: PromptSwitches = PromptSwitches(),
        normalisation: str = "imagenet",
    ) -> None:
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        self.sam = sam
        self.switches = switches
        self.normalisation = normalisation
        width = sam.prompt_encoder.embed_dim
        # one projection per text kind: SAM's decoder is order-free over sparse tokens, so the
        # projections are what tell a VQA token from an LLM token
        self.text_proj = nn.ModuleDict({"vqa": nn.Linear(text_dim, width), "llm": nn.Linear(text_dim, width)})
        #: an inference engine for the frozen model (:func:`samdpo.sam.engine.attach_engine`), or None
        self.engine: Any = None

    def _engine_for(self, tensor: torch.Tensor) -> Any:
        """The attached engine where it applies to ``tensor``'s computation (CPU, no gradients), else None."""
        if self.engine is None or torch.is_grad_enabled() or tensor.device.type != "cpu":
            return None
        return self.engine

    @property
    def input_size(self) -> int:
        """The image encoder's input side, pixels."""
        return int(self.sam.image_encoder.img_size)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S) uint8 images -> (B, 3, s, s) float encoder input at the input side s.

        Bilinear resize (the store's images are square: no padding), grey to 3 channels, then
        ``imagenet``: SAM's mean / std on [0, 255] values; ``minmax``: each image scaled to [0, 1]
        by its own minimum and maximum (LiteMedSAM; a constant image becomes 0).
        """
        x = images.float().unsqueeze(1)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.normalisation == "minmax":
            low = x.amin(dim=(1, 2, 3), keepdim=True)
            high = x.amax(dim=(1, 2, 3), keepdim=True)
            return ((x - low) / (high - low).clamp(min=1e-8)).expand(-1, 3, -1, -1)
        return (x.expand(-1, 3, -1, -1) - self.sam.pixel_mean) / self.sam.pixel_std

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S) uint8 images -> (B, C, h, w) image embeddings (see :meth:`preprocess`)."""
        inputs = self.preprocess(images)
        engine = self._engine_for(inputs)
        return self.sam.image_encoder(inputs) if engine is None else engine.encode(inputs)

    def sparse_tokens(self, batch: PromptBatch) -> torch.Tensor:
        """(K, n, C) sparse prompt tokens of a batch (float32: positional encodings of coordinates
        lose pixels in bfloat16, so autocast is off here)."""
        device_type = batch.boxes.device.type
        with torch.autocast(device_type, enabled=False):
            return self._sparse_tokens(batch)

    def _geometry_tokens(self, batch: PromptBatch) -> torch.Tensor | None:
        """(K, n, C) point then box-corner tokens from SAM's public prompt encoder (None when both are off).

        SAM's own layout: points first, then the 2 box corners; without a box it appends one "not a
        point" token to the points. A prompt without a box (``has_box`` False) gets "not a point"
        twice in place of its corners.
        """
        encoder = self.sam.prompt_encoder
        if not (self.switches.points or self.switches.box):
            return None
        scale = self.input_size / batch.size
        points = (batch.points * scale, batch.point_labels) if self.switches.points else None
        boxes = batch.boxes * scale if self.switches.box else None
        tokens = encoder(points=points, boxes=boxes, masks=None)[0]
        if not self.switches.box:
            return tokens
        corner = torch.zeros(tokens.shape[1], dtype=torch.bool, device=tokens.device)
        corner[-2:] = True
        missing = (~batch.has_box)[:, None, None] & corner[None, :, None]
        return torch.where(missing, encoder.not_a_point_embed.weight.expand_as(tokens), tokens)

    def _sparse_tokens(self, batch: PromptBatch) -> torch.Tensor:
        encoder = self.sam.prompt_encoder
        count = batch.boxes.shape[0]
        tokens = []
        geometry = self._geometry_tokens(batch)
        if geometry is not None:
            tokens.append(geometry)
        if self.switches.vqa:
            tokens.append(self.text_proj["vqa"](batch.vqa).unsqueeze(1))
        if self.switches.llm:
            tokens.append(self.text_proj["llm"](batch.llm).unsqueeze(1))
        width = encoder.embed_dim
        return torch.cat(tokens, dim=1) if tokens else torch.zeros(count, 0, width, device=batch.boxes.device)

    def forward(self, embeddings: torch.Tensor, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (K, S, S) at the store's size and predicted IoU (K,) for the K prompts."""
        sparse = self.sparse_tokens(batch)
        encoder, decoder = self.sam.prompt_encoder, self.sam.mask_decoder
        with torch.autocast(embeddings.device.type, enabled=False):
            image_pe = encoder.get_dense_pe()
        logits, ious = [], []
        height, width = embeddings.shape[-2:]
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, height, width)
        engine = self._engine_for(embeddings)
        for b in torch.unique_consecutive(batch.image_index).tolist():
            chosen = batch.image_index == b
            if engine is None:
                masks, iou = decode_single_mask(decoder, embeddings[b : b + 1], image_pe, sparse[chosen], dense)
            else:
                masks, iou = engine.decode(embeddings[b : b + 1], sparse[chosen])
            logits.append(masks[:, 0])
            ious.append(iou[:, 0])
        low = torch.cat(logits)
        return F.interpolate(low.unsqueeze(1), size=(batch.size, batch.size), mode="bilinear", align_corners=False)[
            :, 0
        ], torch.cat(ious)


def box_batch(boxes: np.ndarray, size: int) -> PromptBatch:
    """A :class:`PromptBatch` of K (K, 4) box prompts on one image, with no point or text prompt."""
    count = len(boxes)
    return PromptBatch(
        image_index=torch.zeros(count, dtype=torch.int64),
        boxes=torch.from_numpy(np.asarray(boxes, np.float32)),
        has_box=torch.ones(count, dtype=torch.bool),
        points=torch.zeros(count, 1, 2),
        point_labels=torch.full((count, 1), -1, dtype=torch.int64),
        vqa=torch.zeros(count, 1),
        llm=torch.zeros(count, 1),
        size=size,
    )
