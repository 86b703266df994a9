"""Saliency maps per (image, class): a CLIP queried zero-shot, explained by gScoreCAM.

For one dataset, the CLIP scores each image against a prompt set: one prompt per class plus
negative prompts. The CAM target of a class is either its raw image-text logit (``raw``) or that
logit minus the mean logit of the other prompts (``contrastive``): the raw score also lights up
whatever identifies the modality (body outline, borders), the contrastive one what tells this
class apart (the brief, "Saliency on synthetic data"). Only images are read, never labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from samdpo.clip.loader import LoadedClip
from samdpo.errors import ConfigError, DataError
from samdpo.prompts.visual.gscorecam import GScoreCAM

TARGETS = ("probability", "contrastive", "raw")


@dataclass(frozen=True)
class SaliencySettings:
    """gScoreCAM settings.

    Attributes:
        top_k: channels kept per class (None = all, i.e. ScoreCAM).
        batch_size: masked images per forward pass.
        target_layer: dotted path of the CAM layer inside the open_clip model
            (``visual.trunk.layer4`` for the default CNN tower, ``visual.trunk.blocks.11.norm2``
            for BiomedCLIP's ViT).
        target: ``probability`` (softmax probability of the class among all prompts),
            ``contrastive`` (class logit minus the mean of the other prompts) or ``raw`` (the logit).
        normalize_activations: weight the normalised channel maps rather than raw activations
            (false reproduces ScoreCAM's sum exactly).
        class_contrast: subtract, per image, the mean of all classes' maps from each class's map
            (ReLU, then rescaled to a maximum of 1): what every class's map shares (the body
            outline, the modality) goes, what sets the class apart stays. No effect with one class.
    """

    top_k: int | None = 32
    batch_size: int = 64
    target_layer: str = "visual.trunk.layer4"
    target: str = "contrastive"
    normalize_activations: bool = False
    class_contrast: bool = False

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"saliency.top_k must be at least 1 or null, got {self.top_k}")
        if self.batch_size < 1:
            raise ConfigError(f"saliency.batch_size must be at least 1, got {self.batch_size}")
        if self.target not in TARGETS:
            raise ConfigError(f"saliency.target must be one of {TARGETS}, got {self.target!r}")


class ClipScorer(torch.nn.Module):
    """Normalised image -> (B, P) image-text logits against a fixed prompt set (text encoded once)."""

    def __init__(self, clip: LoadedClip, prompts: Sequence[str]) -> None:
        super().__init__()
        empty = [i for i, p in enumerate(prompts) if not p or not p.strip()]
        if empty:
            raise ConfigError(f"prompt texts must not be empty (prompt #{empty[0]} of {list(prompts)})")
        self.clip = clip.model
        with torch.no_grad():
            text = self.clip.encode_text(clip.tokenizer(list(prompts)))
        self.register_buffer("text", F.normalize(text.float(), dim=-1))
        self.scale = float(self.clip.logit_scale.detach().exp())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.clip.encode_image(images), dim=-1) @ self.text.T


class PromptTarget:
    """CAM target: the logit of prompt ``index``, minus the mean logit of ``others`` when given;
    with ``probability``, the softmax probability of ``index`` among itself and ``others``."""

    def __init__(self, index: int, others: Sequence[int] = (), probability: bool = False) -> None:
        self.index, self.others, self.probability = index, list(others), probability

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.probability:
            return output[..., [self.index, *self.others]].softmax(-1)[..., 0]
        score = output[..., self.index]
        return score - output[..., self.others].mean(-1) if self.others else score


def tokens_to_grid(tensor: torch.Tensor) -> torch.Tensor:
    """ViT tokens (B, N, C) -> (B, C, h, w), dropping a leading CLS token when N - 1 is square."""
    if tensor.ndim != 3:
        return tensor
    n = tensor.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        side = math.isqrt(n - 1)
        if side * side != n - 1:
            raise DataError(f"cannot arrange {n} ViT tokens on a square grid")
        tensor = tensor[:, 1:]
    return tensor.reshape(tensor.shape[0], side, side, tensor.shape[2]).permute(0, 3, 1, 2)


def contrast_classes(maps: torch.Tensor) -> torch.Tensor:
    """(T, h, w) maps of one image -> ReLU(map - mean over the T maps), each rescaled to a maximum of 1
    (a map that falls to zero everywhere stays zero)."""
    contrasted = torch.relu(maps - maps.mean(dim=0, keepdim=True))
    peaks = contrasted.amax(dim=(1, 2), keepdim=True)
    return torch.where(peaks > 0, contrasted / peaks.clamp(min=1e-12), contrasted)


class SaliencyEngine:
    """Computes (T, S, S) maps for images of one dataset, T = number of classes."""

    def __init__(
        self,
        clip: LoadedClip,
        class_prompts: Sequence[str],
        negative_prompts: Sequence[str],
        settings: SaliencySettings,
    ) -> None:
        self.clip, self.settings = clip, settings
        self.scorer = ClipScorer(clip, [*class_prompts, *negative_prompts]).eval()
        try:
            layer = self.scorer.clip.get_submodule(settings.target_layer)
        except AttributeError as exc:
            raise ConfigError(
                f"saliency.target_layer {settings.target_layer!r} is not a module of {clip.model_id}"
            ) from exc
        n_prompts = len(class_prompts) + len(negative_prompts)
        self.targets = [
            PromptTarget(
                t,
                [p for p in range(n_prompts) if p != t] if settings.target != "raw" else [],
                settings.target == "probability",
            )
            for t in range(len(class_prompts))
        ]
        self.cam = GScoreCAM(
            self.scorer,
            [layer],
            top_k=settings.top_k,
            batch_size=settings.batch_size,
            reshape_transform=tokens_to_grid,
            normalize_activations=settings.normalize_activations,
        )
        self.mean = torch.tensor(clip.mean)[:, None, None]
        self.std = torch.tensor(clip.std)[:, None, None]

    def _input(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) [0, 1] gray -> (3, s, s) CLIP input (bilinear resize, normalised)."""
        pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        size = self.clip.image_size
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)[0]
        return (pixels.expand(3, -1, -1) - self.mean) / self.std

    def maps(self, image: np.ndarray) -> np.ndarray:
        """Saliency of one (H, W) float image in [0, 1] -> (T, H, W) float32 in [0, 1].

        A constant image carries no information: its maps are all zero (the CRF then finds no box).
        """
        if image.ndim != 2 or not np.isfinite(image).all():
            raise DataError(f"saliency needs a finite (H, W) image, got shape {image.shape}")
        height, width = image.shape
        if float(image.max() - image.min()) < 1e-6:
            return np.zeros((len(self.targets), height, width), dtype=np.float32)
        maps = torch.from_numpy(self.cam.maps_for_targets(self._input(image), self.targets))
        if self.settings.class_contrast and len(maps) > 1:
            maps = contrast_classes(maps)
        maps = F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        return maps.clamp(0.0, 1.0).numpy()

    def run(self, images: np.ndarray, progress: bool = True) -> np.ndarray:
        """(N, H, W) uint8 images -> (N, T, H, W) uint8 maps (saliency x 255)."""
        out = np.zeros((len(images), len(self.targets), *images.shape[1:]), dtype=np.uint8)
        for i in tqdm(range(len(images)), desc="saliency", unit="image", disable=not progress):
            out[i] = np.rint(self.maps(images[i].astype(np.float32) / 255.0) * 255.0)
        return out
