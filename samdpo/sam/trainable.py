"""Which parts of the prompted SAM train: the parts' names, their defaults per SAM, freezing the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from samdpo.errors import ConfigError

if TYPE_CHECKING:
    from samdpo.sam.prompted import PromptedSam


#: What trains when ``stage1.train`` is null: everything for ``small`` (trained from scratch); the
#: adapters, prompt encoder, decoder and text projection for SAM-Med2D (the paper); the same
#: without adapters for vanilla SAM and LiteMedSAM (which have none; LiteMedSAM's encoder stays frozen).
DEFAULT_PARTS = {
    "small": ("image_encoder", "prompt_encoder", "mask_decoder", "text_proj"),
    "sam_med2d": ("adapters", "prompt_encoder", "mask_decoder", "text_proj"),
    "vanilla": ("prompt_encoder", "mask_decoder", "text_proj"),
}


def default_parts(sam_name: str) -> tuple[str, ...]:
    """The parts that train when ``stage1.train`` is null, for the SAM named ``sam_name``."""
    return DEFAULT_PARTS.get(sam_name, DEFAULT_PARTS["vanilla"])


PARTS = ("image_encoder", "adapters", "prompt_encoder", "mask_decoder", "text_proj")


def set_trainable(model: PromptedSam, parts: Sequence[str]) -> int:
    """Freeze everything but ``parts`` (SAM parts and ``text_proj``); returns the trainable parameter count."""
    from samdpo.sam import builders

    builders.set_trainable(model.sam, [part for part in parts if part != "text_proj"])
    model.text_proj.requires_grad_("text_proj" in parts)
    if "adapters" in parts and not any(isinstance(m, builders.Adapter) for m in model.sam.image_encoder.modules()):
        raise ConfigError(
            "stage1.train: 'adapters' given, but this image encoder has no adapters (train image_encoder instead)"
        )
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encoder_frozen(model: PromptedSam) -> bool:
    """Whether no image-encoder parameter trains (then its embeddings can be cached)."""
    return not any(p.requires_grad for p in model.sam.image_encoder.parameters())
