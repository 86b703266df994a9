"""gScoreCAM (against pytorch-grad-cam's ScoreCAM) and the saliency engine's handling of odd input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import ScoreCAM

from samdpo.errors import ConfigError
from samdpo.prompts.visual.gscorecam import GScoreCAM, top_channels
from samdpo.prompts.visual.saliency import ClipScorer, PromptTarget, SaliencyEngine, SaliencySettings, tokens_to_grid

PROMPTS = [
    "an abdominal CT slice with the liver",
    "an abdominal CT slice with the spleen",
    "an abdominal CT slice with background tissue only",
]


def _image(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 0.3, dtype=np.float32)
    image[10:30, 12:40] = 0.8
    return np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1).astype(np.float32)


def _scorer_and_input(tiny_clip):
    scorer = ClipScorer(tiny_clip, PROMPTS).eval()
    x = (torch.from_numpy(_image())[None].expand(3, -1, -1) - 0.5) / 0.25
    return scorer, x


def test_all_channels_is_exactly_scorecam(tiny_clip) -> None:
    scorer, x = _scorer_and_input(tiny_clip)
    layer = scorer.clip.visual.trunk.layer4
    targets = [PromptTarget(0, [1, 2]), PromptTarget(1)]
    batch = x[None].expand(2, -1, -1, -1)
    reference = ScoreCAM(scorer, [layer])(batch, targets)
    ours = GScoreCAM(scorer, [layer], top_k=None, batch_size=7)(batch, targets)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert reference.max() > 0.99  # a real, non-degenerate map


def test_shared_forwards_equal_the_per_target_path(tiny_clip) -> None:
    scorer, x = _scorer_and_input(tiny_clip)
    layer = scorer.clip.visual.trunk.layer4
    targets = [PromptTarget(0, [1, 2]), PromptTarget(1, [0, 2])]
    for top_k in (None, 5):
        cam = GScoreCAM(scorer, [layer], top_k=top_k, batch_size=16)
        shared = cam.maps_for_targets(x, targets)
        per_target = cam(x[None].expand(2, -1, -1, -1), targets)
        np.testing.assert_allclose(shared, per_target, atol=1e-5)
        assert shared.shape == (2, 64, 64) and 0.0 <= shared.min() and shared.max() <= 1.0


def test_top_channels_follow_the_mean_gradient() -> None:
    grads = torch.zeros(1, 6, 2, 2)
    grads[0, 4] = 3.0
    grads[0, 1] = 2.0
    grads[0, 2] = -5.0
    assert top_channels(grads, 2).tolist() == [[4, 1]]
    assert top_channels(grads, 99).shape == (1, 6)
    with pytest.raises(ValueError, match="top_k"):
        GScoreCAM(torch.nn.Linear(2, 2), [torch.nn.Linear(2, 2)], top_k=0)


def test_engine_maps_shapes_and_odd_images(tiny_clip) -> None:
    engine = SaliencyEngine(tiny_clip, PROMPTS[:2], PROMPTS[2:], SaliencySettings(top_k=8))
    maps = engine.maps(_image())
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32 and maps.max() > 0.99
    small = engine.maps(_image(size=16))  # smaller than the CLIP input: resized up, map at its own size
    assert small.shape == (2, 16, 16)
    assert not engine.maps(np.zeros((64, 64), dtype=np.float32)).any()  # constant image: no information, no map
    assert not engine.maps(np.full((32, 48), 0.7, dtype=np.float32)).any()
    with pytest.raises(Exception, match="finite"):
        engine.maps(np.full((8, 8), np.nan, dtype=np.float32))
    stack = engine.run(np.stack([np.rint(_image(s) * 255).astype(np.uint8) for s in range(3)]), progress=False)
    assert stack.shape == (3, 2, 64, 64) and stack.dtype == np.uint8


def test_class_contrast_removes_what_the_classes_share(tiny_clip) -> None:
    from samdpo.prompts.visual.saliency import contrast_classes
    from samdpo.prompts.visual.saliency_check import pair_correlations

    shared = torch.zeros(8, 8)
    shared[2:6, 2:6] = 1.0
    maps = torch.stack([shared.clone(), shared.clone(), shared.clone()])
    maps[0, 0, 0] = maps[1, 7, 7] = 1.0  # each class adds its own pixel (the third adds none)
    contrasted = contrast_classes(maps)
    assert contrasted[0, 0, 0] == 1.0 and contrasted[1, 7, 7] == 1.0 and not contrasted[:, 2:6, 2:6].any()
    assert not contrasted[2].any()
    plain = SaliencyEngine(tiny_clip, PROMPTS[:2], PROMPTS[2:], SaliencySettings(top_k=8)).maps(_image())
    contrast = SaliencyEngine(tiny_clip, PROMPTS[:2], PROMPTS[2:], SaliencySettings(top_k=8, class_contrast=True)).maps(
        _image()
    )
    assert contrast.shape == plain.shape and contrast.max() <= 1.0
    corr = pair_correlations(contrast)[0, 1]
    assert not corr > pair_correlations(plain)[0, 1]  # NaN (a map emptied) or lower


def test_engine_rejects_bad_settings(tiny_clip) -> None:
    with pytest.raises(ConfigError, match="must not be empty"):
        SaliencyEngine(tiny_clip, ["", PROMPTS[1]], [], SaliencySettings())
    with pytest.raises(ConfigError, match="target_layer"):
        SaliencyEngine(tiny_clip, PROMPTS[:1], [], SaliencySettings(target_layer="visual.nope"))
    with pytest.raises(ConfigError, match="saliency.target"):
        SaliencySettings(target="softmax")
    with pytest.raises(ConfigError, match="top_k"):
        SaliencySettings(top_k=0)


def test_vit_tokens_become_a_grid() -> None:
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # CLS + 4x4 patches
    grid = tokens_to_grid(tokens)
    assert grid.shape == (2, 3, 4, 4)
    assert torch.equal(grid[0, :, 0, 1], tokens[0, 2])  # first patch token after CLS is at (0, 0)
    assert tokens_to_grid(torch.zeros(1, 16, 3)).shape == (1, 3, 4, 4)  # no CLS token
