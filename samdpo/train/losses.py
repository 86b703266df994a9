"""Segmentation losses of stage 1: sigmoid focal loss and soft Dice, weighted 20:1 as SAM-Med2D.

All functions take logits and binary targets of the same shape (B, H, W) (or (B, 1, H, W)) and
return a scalar: the mean over the B masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), averaged over pixels then masks.

    ``alpha`` weighs foreground pixels, ``1 - alpha`` background ones; ``gamma`` down-weights easy pixels.
    """
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    prob = torch.sigmoid(logits)
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * (1 - p_t) ** gamma * ce
    return loss.flatten(1).mean(1).mean()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) with the targets, per mask (``smooth`` keeps empty masks finite)."""
    prob = torch.sigmoid(logits).flatten(1)
    targets = targets.to(prob.dtype).flatten(1)
    dice = (2 * (prob * targets).sum(1) + smooth) / (prob.sum(1) + targets.sum(1) + smooth)
    return (1 - dice).mean()


def segmentation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    gamma: float = 2.0,
    alpha: float = 0.25,
) -> torch.Tensor:
    """``focal_weight * focal + dice_weight * dice`` (SAM-Med2D: 20 : 1, gamma 2, alpha 0.25)."""
    return focal_weight * focal_loss(logits, targets, gamma, alpha) + dice_weight * dice_loss(logits, targets)
