"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from samdpo.synth import amos, busi, cxr


@pytest.fixture(scope="session")
def amos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("amos")
    amos.write(root, 5, seed=7, settings=amos.AmosSynthSettings(size=48, slices=12))
    return root


@pytest.fixture(scope="session")
def busi_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("busi")
    busi.write(root, 16, seed=0)
    return root


@pytest.fixture(scope="session")
def cxr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cxr")
    cxr.write(root, 5, seed=3)
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_clip():
    """A randomly initialised small CLIP (the pipeline's CNN tower + a one-layer text transformer)."""
    import open_clip
    import torch

    from samdpo.clip import cnn_tower  # noqa: F401  (registers the tower with timm)
    from samdpo.clip.loader import LoadedClip
    from tests.tiny_clip_config import TINY_CFG

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG).eval()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    return LoadedClip(model, None, tokenizer, "test:tiny", 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
