"""The ONNX Runtime engine for the frozen SAM: equal to torch within 1e-3 (small SAM and LiteMedSAM), one
export per weights, a broken file exported again, a missing package one clear error, training untouched."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.errors import ConfigError
from samdpo.sam.engine import attach_engine, require_packages
from samdpo.sam.settings import SamSettings
from samdpo.sam.specs import build_model
from samdpo.settings import parse_settings
from samdpo.train.predict import predict_probabilities
from tests.prompt_rows import SIZE
from tests.stage1_data import small_model, training_data

CPU = torch.device("cpu")


def _engine(cache: Path) -> dict[str, str]:
    return {"name": "small", "image_size": 32, "engine": "onnxruntime", "engine_cache": str(cache)}


def _outputs(model, images, prompts, texts) -> tuple[torch.Tensor, np.ndarray]:
    """The embeddings of ``images`` and every class's probabilities x 255 through ``model``."""
    probs = np.zeros((len(images), 2, SIZE, SIZE), np.uint8)
    predict_probabilities(model, images, prompts, texts, CPU, probs, 2, batch_images=3, progress=False)
    with torch.inference_mode():
        return model.embed_images(torch.from_numpy(images)), probs


def test_engine_equals_torch_on_every_prompt_kind_and_exports_once(tmp_path: Path) -> None:
    images, _, prompts, texts = training_data(tmp_path)
    embedded, probs = _outputs(small_model(), images, prompts, texts)
    model = attach_engine(small_model(), _engine(tmp_path / "engine"))
    engine_embedded, engine_probs = _outputs(model, images, prompts, texts)
    assert model.engine is not None
    assert torch.allclose(engine_embedded, embedded, atol=1e-4)
    assert np.abs(engine_probs.astype(int) - probs.astype(int)).max() <= 1  # rounding of p x 255 only
    with torch.inference_mode():
        sparse_batch = _logits(model, images, prompts, texts)
    model.engine = None
    with torch.inference_mode():
        reference = _logits(model, images, prompts, texts)
    assert (sparse_batch[0] - reference[0]).abs().max() < 1e-3 and (sparse_batch[1] - reference[1]).abs().max() < 1e-3
    files = sorted(p.name for p in (tmp_path / "engine").glob("*.onnx"))
    assert [f.split("-")[0] for f in files] == ["decoder", "encoder"]
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "engine").glob("*.onnx")}
    _outputs(attach_engine(small_model(), _engine(tmp_path / "engine")), images, prompts, texts)  # same weights
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "engine").glob("*.onnx")} == mtimes
    _outputs(attach_engine(small_model(seed=1), _engine(tmp_path / "engine")), images, prompts, texts)
    assert len(list((tmp_path / "engine").glob("*.onnx"))) == 4  # other weights: other files, never the old ones


def _logits(model, images, prompts, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits and IoU of both classes of every image in one batch (prompts of 4 images)."""
    from samdpo.train.batches import make_batch

    batch = make_batch(prompts, [[0, 1]] * len(prompts), texts, SIZE, 2)
    return model(model.embed_images(torch.from_numpy(images)), batch)


def test_lite_medsam_through_the_engine_equals_torch_within_1e_3(tmp_path: Path) -> None:
    sam = {"name": "lite_medsam", "image_size": 256, "engine_cache": str(tmp_path / "engine")}
    model = build_model(sam, 1, {"box": True, "points": False, "vqa": False, "llm": False}, 0).eval()
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 96, 96), dtype=np.uint8))
    from samdpo.sam.prompted import box_batch

    boxes = box_batch(np.array([[10, 12, 60, 70], [30, 20, 90, 95], [0, 0, 95, 95]], np.float32), 96)
    with torch.inference_mode():
        embedded = model.embed_images(images)
        logits, iou = model(embedded, boxes)
        attach_engine(model, sam)
        engine_embedded = model.embed_images(images)
        engine_logits, engine_iou = model(embedded, boxes)
    assert (engine_embedded - embedded).abs().max() < 1e-3
    assert (engine_logits - logits).abs().max() < 1e-3 and (engine_iou - iou).abs().max() < 1e-3


def test_a_broken_export_is_exported_again_with_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images, _, prompts, texts = training_data(tmp_path)
    _, probs = _outputs(attach_engine(small_model(), _engine(tmp_path / "engine")), images, prompts, texts)
    for path in (tmp_path / "engine").glob("*.onnx"):
        path.write_bytes(b"not onnx")
    with caplog.at_level(logging.WARNING, logger="samdpo.sam.engine"):
        _, again = _outputs(attach_engine(small_model(), _engine(tmp_path / "engine")), images, prompts, texts)
    assert np.array_equal(again, probs)
    assert len([r for r in caplog.records if "not a readable ONNX graph" in r.getMessage()]) == 2  # encoder, decoder


def test_training_and_gpu_paths_stay_torch_and_torch_engine_attaches_nothing(tmp_path: Path) -> None:
    images, _, prompts, texts = training_data(tmp_path)
    model = attach_engine(small_model(), _engine(tmp_path / "engine"))
    logits, _ = _logits(model, images, prompts, texts)  # gradients on: torch, differentiable
    assert logits.requires_grad and not list((tmp_path / "engine").glob("*.onnx"))
    assert attach_engine(small_model(), {**_engine(tmp_path / "t"), "engine": "torch"}).engine is None


def test_engine_settings_and_a_missing_package_are_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"sam.engine: expected one of \['onnxruntime', 'torch'\], got 'openvino'"):
        parse_settings(SamSettings, {"name": "small", "image_size": 32, "engine": "openvino"}, "sam")
    with pytest.raises(ConfigError, match="sam.engine_cache: expected a folder name"):
        parse_settings(SamSettings, {"name": "small", "image_size": 32, "engine_cache": ""}, "sam")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(
        ConfigError, match=r"sam.engine onnxruntime needs the package onnxruntime.*pip install onnxruntime.*torch"
    ):
        attach_engine(small_model(), _engine(tmp_path / "engine"))
    require_packages("torch")  # torch needs nothing more
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.delitem(sys.modules, "onnxruntime")
    with pytest.raises(ConfigError, match="needs the package onnx, which is not installed: pip install onnx "):
        require_packages("onnxruntime")  # what the settings check runs at snakemake start


def test_a_model_that_does_not_export_is_one_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs) -> None:
        raise RuntimeError("Exporting the operator 'aten::custom' to ONNX opset version 17 is not supported.\nmore")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    images, _, prompts, texts = training_data(tmp_path)
    model = attach_engine(small_model(), _engine(tmp_path / "engine"))
    with pytest.raises(
        ConfigError, match=r"encoder does not export to ONNX \(Exporting the operator .*set sam.engine: torch"
    ):
        _outputs(model, images, prompts, texts)
    assert not list((tmp_path / "engine").glob("*.onnx")) and not list((tmp_path / "engine").glob(".*.tmp"))
