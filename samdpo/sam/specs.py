"""A prompted SAM from its spec (the ``sam`` settings, text width and prompt switches)."""

from __future__ import annotations

from typing import Any

from samdpo.errors import ConfigError
from samdpo.sam.settings import DEFAULT_IMAGE_SIZE, NORMALISATION, SamSettings
from samdpo.settings import parse_settings


def resolve_sam(sam: dict[str, Any], image_size: int) -> dict[str, Any]:
    """SAM settings with ``image_size`` filled in: the dataset's for ``small``, the model's native size otherwise."""
    sam = {"name": "small", **sam}
    if sam["name"] not in DEFAULT_IMAGE_SIZE:
        raise ConfigError(
            f"sam.name: unknown SAM {sam['name']!r}; choose one of {', '.join(sorted(DEFAULT_IMAGE_SIZE))}"
        )
    if sam.get("image_size") is None:
        sam["image_size"] = image_size if sam["name"] == "small" else DEFAULT_IMAGE_SIZE[sam["name"]]
    return sam


def build_model(
    sam: dict[str, Any], text_dim: int, switches: dict[str, Any], seed: int, load_weights: bool = True
) -> Any:
    """The prompted SAM of a spec (random init seeded); with ``load_weights`` its pretrained SAM
    weights are loaded (``sam.checkpoint``, or LiteMedSAM's shipped file); callers that load
    their own trained weights next pass False."""
    import torch

    from samdpo.sam.builders import build_sam
    from samdpo.sam.prompted import PromptedSam, PromptSwitches

    torch.manual_seed(seed)
    sam_settings = parse_settings(SamSettings, sam, "sam")
    prompt_switches = parse_settings(PromptSwitches, switches, "stage1.prompts")
    normalisation = NORMALISATION.get(sam_settings.name, "imagenet")
    return PromptedSam(build_sam(sam_settings, load_weights=load_weights), text_dim, prompt_switches, normalisation)
