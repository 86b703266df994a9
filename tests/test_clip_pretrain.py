"""Pretraining the embedded default's CLIP: captions, batches, masking, and the saved local-dir model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.clip.captions import Caption, position_word, size_word, vocabulary, zero_shot_prompt
from samdpo.clip.loader import load_clip
from samdpo.clip.pretrain import PretrainSettings, _batches, _masked, _matches, pretrain
from samdpo.errors import ConfigError

TINY = PretrainSettings(
    corpus={"busi": {"cases": 6, "seed": 5}, "cxr": {"cases": 3, "seed": 6}},
    image_size=48,
    embed_dim=16,
    epochs=1,
    batch_size=8,
)


def test_caption_words() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[2:6, 24:28] = True
    assert position_word(mask) == "upper right" and size_word(mask) == "small"
    mask[:] = False
    mask[12:18, 12:18] = True
    assert position_word(mask) == "center"
    assert (
        Caption("amos", "liver", "upper left", "large").text()
        == "an abdominal CT slice with the large liver in the upper left"
    )
    assert zero_shot_prompt("busi", "tumor") == "a breast ultrasound image with the tumor"
    assert zero_shot_prompt("cxr", "lungs", "{modality} of the {name}") == "a chest x-ray of the lungs"
    assert len(vocabulary("busi", ("tumor",))) == 1 + 10 * 4


def test_matching_rules() -> None:
    truth = {"liver": ("upper left", "large")}
    assert _matches(Caption("amos", "liver"), "amos", truth)
    assert _matches(Caption("amos", "liver", "upper left", None), "amos", truth)
    assert not _matches(Caption("amos", "liver", "left", None), "amos", truth)
    assert not _matches(Caption("amos", "spleen"), "amos", truth)
    assert not _matches(Caption("busi", "liver"), "amos", truth)
    assert _matches(Caption("amos", None), "amos", {}) and not _matches(Caption("amos", None), "amos", truth)


def test_batches_hold_one_kind_and_cover_everything() -> None:
    kinds = ["amos"] * 10 + ["busi"] * 7 + ["cxr"] * 3
    batches = _batches(kinds, 4, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(20))
    assert all(len({kinds[i] for i in b}) == 1 for b in batches)


def test_masking_hides_the_rest_mid_grey() -> None:
    rng = np.random.default_rng(1)
    image = np.full((40, 40), 255, dtype=np.uint8)
    label = np.zeros((40, 40), dtype=np.uint8)
    label[5:10, 5:10] = 1
    for _ in range(5):
        masked, visible = _masked(image, label, rng)
        assert 127.5 <= masked.min() and masked.max() <= 255.0
        assert np.allclose(masked[~visible], 127.5, atol=128 * 0.5 + 1e-3)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="corpus"):
        PretrainSettings(corpus={"mri": {"cases": 2, "seed": 0}})
    with pytest.raises(ConfigError, match="epochs"):
        PretrainSettings(epochs=0)


def test_pretrain_saves_a_local_dir_clip(tmp_path: Path) -> None:
    history = pretrain(TINY, tmp_path / "clip", progress=False)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert (tmp_path / "clip" / "train_log.csv").is_file()
    clip = load_clip(f"local-dir:{tmp_path / 'clip'}")
    assert clip.image_size == 48 and clip.mean == (0.5, 0.5, 0.5)
    tokens = clip.tokenizer(["a chest x-ray with the lungs"])
    with torch.no_grad():
        text = clip.model.encode_text(tokens)
        image = clip.model.encode_image(torch.zeros(1, 3, 48, 48))
    assert text.shape == image.shape == (1, 16)
    # the pooled-text cache used in training is the text tower minus its projection
    mask = (tokens != clip.model.text.config.pad_token_id).long()
    with torch.no_grad():
        pooled = clip.model.text.pooler(clip.model.text.transformer(input_ids=tokens, attention_mask=mask), mask)
    torch.testing.assert_close(clip.model.text.proj(pooled), text)
