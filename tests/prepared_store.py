"""Test set-up shared by several test modules: a prepared sample store made by the ``samdpo data prepare``
command, and the tiny CLIP saved as a ``local-dir`` CLIP that the commands load."""

from __future__ import annotations

from pathlib import Path

from samdpo.cli import main
from tests.tiny_clip_config import TINY_CFG


def prepare_store(kind: str, root: Path, out: Path, image_size: int) -> Path:
    """``samdpo data prepare --kind KIND`` of the dataset folder ``root`` into ``out`` (square ``image_size`` px
    images); asserts that the command succeeds and returns ``out``."""
    args = ["data", "prepare", "--kind", kind, "--root", str(root), "--out", str(out)]
    assert main([*args, "--image-size", str(image_size), "--no-progress"]) == 0
    return out


def save_tiny_clip(tiny_clip, folder: Path) -> Path:
    """The ``tiny_clip`` fixture's model saved to ``folder`` as a 64 px ``local-dir`` CLIP; returns ``folder``."""
    from samdpo.clip.loader import save_clip_local_dir

    preprocess = {"mean": [0.5] * 3, "std": [0.25] * 3, "size": 64}
    save_clip_local_dir(tiny_clip.model, TINY_CFG, folder, preprocess_cfg=preprocess)
    return folder
