"""The DPO loss over four ranked candidates, and the per-candidate log-likelihood it compares.

r_k = log pi_policy(Y_k | I) - log pi_ref(Y_k | I) and, candidates ordered best to worst,
loss = -log sigmoid(b1 r1 + b2 r2 - b2 r3 - b1 r4). The weights sum to zero, so any term shared
by all four candidates cancels; with ties the weights of tied positions are averaged (four equal
grades: all zero, no preference, no gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samdpo.align.stage2_settings import REDUCTIONS


def candidate_logp(logits: torch.Tensor, candidates: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Per-pixel Bernoulli log-likelihood of each candidate under the model's sigmoid, reduced.

    Args:
        logits: (B, H, W) mask logits.
        candidates: (B, K, H, W) bool candidate masks.
        reduction: ``sum`` over all pixels; ``disagreement_mean``: mean over the pixels where the K
            candidates do not all agree (0 where they all agree everywhere); ``mean`` over all pixels
            (divides the reward by the image size: the signal washes out, kept for comparison).

    Returns:
        (B, K) log-likelihoods.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    y = candidates.to(logits.dtype)
    pixel = y * F.logsigmoid(logits).unsqueeze(1) + (1 - y) * F.logsigmoid(-logits).unsqueeze(1)
    if reduction == "sum":
        return pixel.flatten(2).sum(2)
    if reduction == "mean":
        return pixel.flatten(2).mean(2)
    disagree = (candidates.any(1) & ~candidates.all(1)).unsqueeze(1).to(logits.dtype)
    count = disagree.flatten(2).sum(2).clamp(min=1)
    return (pixel * disagree).flatten(2).sum(2) / count


def rank_weights(beta1: float = 1.0, beta2: float = 0.5) -> torch.Tensor:
    """(4,) weights of the positions best to worst: (b1, b2, -b2, -b1)."""
    return torch.tensor([beta1, beta2, -beta2, -beta1])


def weighted_dpo_loss(
    policy_logp: torch.Tensor, ref_logp: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean of -log sigmoid(sum_k w_k r_k), and the (B,) margins sum_k w_k r_k.

    Args:
        policy_logp, ref_logp: (B, K) log-likelihoods of the K candidates.
        weights: (B, K) or (K,) weight of each candidate (columns as in the log-likelihoods).
    """
    margins = ((policy_logp - ref_logp) * weights).sum(-1)
    return -F.logsigmoid(margins).mean(), margins


def dpo_loss(policy_logp: torch.Tensor, ref_logp: torch.Tensor, beta1: float = 1.0, beta2: float = 0.5) -> torch.Tensor:
    """The paper's loss for (B, 4) log-likelihoods whose columns are ordered best to worst (a scalar)."""
    if policy_logp.shape[-1] != 4 or policy_logp.shape != ref_logp.shape:
        raise ValueError(f"expected two (B, 4) tensors, got {tuple(policy_logp.shape)} and {tuple(ref_logp.shape)}")
    weights = rank_weights(beta1, beta2).to(policy_logp)
    return weighted_dpo_loss(policy_logp, ref_logp, weights)[0]
