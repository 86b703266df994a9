"""What the package assumes of third-party APIs, pinned so that a changed dependency fails here loudly."""

from __future__ import annotations

import torch
from segment_anything.modeling import PromptEncoder


def test_sam_prompt_encoder_lays_out_points_then_box_corners() -> None:
    """``PromptedSam`` makes its point and box tokens with SAM's public ``PromptEncoder.forward`` and
    relies on its layout: the points first (plus one "not a point" pad only when there is no box),
    then the two box corners; label -1 is "not a point"."""
    torch.manual_seed(0)
    encoder = PromptEncoder(embed_dim=16, image_embedding_size=(4, 4), input_image_size=(32, 32), mask_in_chans=4)
    points = torch.rand(3, 2, 2) * 32
    labels = torch.tensor([[1, 0], [1, -1], [0, 0]])
    boxes = torch.rand(3, 4) * 32
    with torch.no_grad():
        both = encoder(points=(points, labels), boxes=boxes, masks=None)[0]
        only_points = encoder(points=(points, labels), boxes=None, masks=None)[0]
        only_box = encoder(points=None, boxes=boxes, masks=None)[0]
    assert both.shape == (3, 2 + 2, 16) and only_points.shape == (3, 2 + 1, 16) and only_box.shape == (3, 2, 16)
    assert torch.equal(both[:, :2], only_points[:, :2])  # the points first, the same with or without a box
    assert torch.equal(both[:, 2:], only_box)  # the two corners last
    not_a_point = encoder.not_a_point_embed.weight[0]
    assert torch.equal(only_points[:, 2], not_a_point.expand(3, -1))  # the pad point without a box
    assert torch.equal(only_points[1, 1], not_a_point)  # label -1
    assert not torch.equal(both[0, 1], not_a_point)  # a real (negative) point is not "not a point"
