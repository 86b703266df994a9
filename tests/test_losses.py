"""Focal and Dice losses against hand-computed values and their limits."""

from __future__ import annotations

import math

import pytest
import torch

from samdpo.train.losses import dice_loss, focal_loss, segmentation_loss


def test_focal_loss_matches_the_formula_on_single_pixels() -> None:
    logit = torch.tensor([[[0.5]]])
    p = 1 / (1 + math.exp(-0.5))
    fg = focal_loss(logit, torch.ones_like(logit))
    bg = focal_loss(logit, torch.zeros_like(logit))
    assert fg.item() == pytest.approx(0.25 * (1 - p) ** 2 * -math.log(p), rel=1e-5)
    assert bg.item() == pytest.approx(0.75 * p**2 * -math.log(1 - p), rel=1e-5)
    # gamma = 0, alpha = 0.5: half the binary cross-entropy
    assert focal_loss(logit, torch.ones_like(logit), gamma=0.0, alpha=0.5).item() == pytest.approx(
        0.5 * -math.log(p), rel=1e-5
    )


def test_dice_loss_limits() -> None:
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    perfect = torch.where(target > 0, 30.0, -30.0)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-perfect, target).item() == pytest.approx(
        1 - 1 / 65, abs=1e-4
    )  # smooth 1: 48 wrong + 16 missed px
    assert dice_loss(torch.full_like(target, -30.0), target).item() == pytest.approx(1 - 1 / 17, abs=1e-4)
    assert dice_loss(torch.full((1, 4, 4), -30.0), torch.zeros(1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_combined_loss_weights_and_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 16, 16, requires_grad=True)
    target = (torch.rand(3, 16, 16) > 0.7).float()
    total = segmentation_loss(logits, target)
    assert total.item() == pytest.approx(
        20 * focal_loss(logits, target).item() + dice_loss(logits, target).item(), rel=1e-6
    )
    total.backward()
    step = logits - 10.0 * logits.grad
    assert segmentation_loss(step, target).item() < total.item()
