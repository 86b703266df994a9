"""gScoreCAM on pytorch-grad-cam's CAM machinery.

gScoreCAM (Chen et al., 2022) is ScoreCAM restricted to the ``top_k`` channels of the target layer
with the largest spatially averaged gradient of the target score:

1. channel importance = mean over (h, w) of d score / d activation;
2. each kept channel's activation is upsampled to the input size, min-max normalised, multiplied
   into the (normalised) input, and the masked input is scored (batched forwards);
3. weights = softmax of those scores over the kept channels (zero elsewhere);
4. CAM = ReLU(sum_c w_c A_c), scaled to [0, 1] and resized to the input.

With ``top_k`` = all channels this is exactly pytorch-grad-cam's ``ScoreCAM`` (same upsampling,
normalisation and softmax). :meth:`GScoreCAM.maps_for_targets` computes the maps of several targets
of one image at once: the masked inputs depend only on the image, so each kept channel of the union
of the targets' top-k sets is forwarded once and scored for every target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image

Target = Callable[[torch.Tensor], torch.Tensor]


def _masks(input_size: tuple[int, int], activations: torch.Tensor) -> torch.Tensor:
    """(C, h, w) activations -> (C, H, W) upsampled, per-channel min-max normalised masks (as ScoreCAM)."""
    upsampled = torch.nn.UpsamplingBilinear2d(size=input_size)(activations[None])[0]
    flat = upsampled.view(upsampled.size(0), -1)
    mins, maxs = flat.min(dim=-1)[0][:, None, None], flat.max(dim=-1)[0][:, None, None]
    return (upsampled - mins) / (maxs - mins + 1e-8)


def top_channels(grads: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """(B, C, h, w) gradients -> (B, k) indices of the channels with the largest mean gradient."""
    importance = grads.mean(dim=(2, 3))
    k = importance.shape[1] if top_k is None else min(top_k, importance.shape[1])
    return importance.topk(k, dim=1).indices


class GScoreCAM(BaseCAM):
    """gScoreCAM with the BaseCAM API: ``cam(input_tensor, targets)`` -> (B, H, W) maps in [0, 1].

    Args:
        model: maps a normalised (B, 3, H, W) image batch to (B, P) scores (e.g. image-text logits).
        target_layers: one layer whose (B, C, h, w) output (after ``reshape_transform``) is used.
        top_k: channels kept per target; ``None`` keeps all (= ScoreCAM).
        batch_size: masked inputs per forward pass.
        reshape_transform: turns token outputs (B, N, C) of a ViT into (B, C, h, w).
        normalize_activations: in :meth:`maps_for_targets`, sum the min-max normalised channel
            maps (the masks that were scored) instead of the raw activations, so a channel counts
            by its score, not by how large its activations are (off = ScoreCAM's sum).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        target_layers: list[torch.nn.Module],
        top_k: int | None = None,
        batch_size: int = 64,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        normalize_activations: bool = False,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform=reshape_transform, uses_gradients=True)
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.top_k = top_k
        self.batch_size = batch_size
        self.normalize_activations = normalize_activations

    @torch.no_grad()
    def _scores(self, image: torch.Tensor, masks: torch.Tensor, targets: Sequence[Target]) -> torch.Tensor:
        """Score ``image * mask`` for each (C', H, W) mask under every target -> (C', T)."""
        rows = []
        for start in range(0, masks.shape[0], self.batch_size):
            outputs = self.model(image[None] * masks[start : start + self.batch_size, None])
            rows.append(torch.stack([torch.stack([t(o) for t in targets]) for o in outputs]))
        return torch.cat(rows).float().cpu()

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads) -> np.ndarray:  # noqa: D102
        activations_t, grads_t = torch.as_tensor(activations), torch.as_tensor(grads)
        weights = torch.zeros(activations_t.shape[:2])
        keep = top_channels(grads_t, self.top_k)
        for b, target in enumerate(targets):
            masks = _masks(tuple(input_tensor.shape[-2:]), activations_t[b, keep[b]].to(input_tensor.device))
            scores = self._scores(input_tensor[b], masks, [target])[:, 0]
            weights[b, keep[b]] = torch.softmax(scores, dim=0)
        return weights.numpy()

    def maps_for_targets(self, image: torch.Tensor, targets: Sequence[Target]) -> np.ndarray:
        """Maps of several targets of one image, sharing the masked forwards.

        Args:
            image: (3, H, W) normalised image.
            targets: T score functions of the model output.

        Returns:
            (T, H, W) float32 CAMs in [0, 1] (all zero where no channel helps the target).
        """
        batch = image[None].expand(len(targets), *image.shape).contiguous().to(self.device)
        outputs = self.activations_and_grads(batch)
        self.model.zero_grad()
        sum(target(output) for target, output in zip(targets, outputs)).backward()
        activations = self.activations_and_grads.activations[0][0]
        grads = self.activations_and_grads.gradients[0]
        keep = top_channels(grads, self.top_k)
        union = torch.unique(keep)
        masks = _masks(tuple(image.shape[-2:]), activations[union].to(self.device))
        scores = self._scores(image.to(self.device), masks, targets)  # (len(union), T)
        position = {int(c): i for i, c in enumerate(union)}
        weights = torch.zeros(len(targets), activations.shape[0])
        for t in range(len(targets)):
            rows = torch.tensor([position[int(c)] for c in keep[t]])
            weights[t, keep[t]] = torch.softmax(scores[rows, t], dim=0)
        if self.normalize_activations:
            cam = torch.relu(torch.einsum("tc,chw->thw", weights[:, union], masks.cpu())).numpy()
            return scale_cam_image(cam)
        cam = torch.relu(torch.einsum("tc,chw->thw", weights, activations.float())).numpy()
        # BaseCAM scales, resizes, then scales again when aggregating layers: do the same
        return scale_cam_image(scale_cam_image(cam, (image.shape[-1], image.shape[-2])))
