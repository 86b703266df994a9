"""Stage 1: prompts read from the store (bad input), the prompted SAM's token fusion, the trainer
(determinism, resume after an interruption, the embedding cache) and prediction."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.errors import DataError
from samdpo.sam.checkpoints import load_checkpoint
from samdpo.sam.prompted import PromptSwitches
from samdpo.train import stage1 as stage1_module
from samdpo.train.batches import make_batch
from samdpo.train.model_folder import WEIGHTS
from samdpo.train.predict import predict_probabilities
from samdpo.train.prompt_data import load_image_prompts
from samdpo.train.stage1 import train_stage1
from samdpo.train.text_embeddings import vqa_text
from tests.prompt_rows import SIZE, prompt_row
from tests.stage1_data import CLASSES, SETTINGS, small_model, text_vectors, training_data, write_prompts


def test_prompts_are_read_and_bad_boxes_are_named(tmp_path: Path) -> None:
    folder = write_prompts(tmp_path, "a", [[4.0, 5.0, 10.0, 12.0], None])
    prompts = load_image_prompts(folder, "a", CLASSES)
    assert prompts.has_box.tolist() == [True, False]
    assert prompts.boxes[0].tolist() == [4, 5, 10, 12] and prompts.boxes[1].tolist() == [0, 0, 0, 0]
    assert prompts.points.shape == (2, 1, 2) and prompts.point_labels.tolist() == [[1], [1]]
    assert prompts.vqa[0] == vqa_text(
        prompt_row(0, "liver", np.zeros((1, 1), bool), np.zeros((1, 1), np.uint8), None, [], [])["vqa"]
    )
    # partly outside: clipped to the image
    clipped = load_image_prompts(write_prompts(tmp_path / "b", "b", [[-3.0, 2.0, 40.0, 12.0], None]), "b", CLASSES)
    assert clipped.boxes[0].tolist() == [0, 2, SIZE - 1, 12]
    cases = {
        "outside": ([40.0, 40.0, 50.0, 50.0], "lies outside the 32x32 image"),
        "empty": ([10.0, 5.0, 4.0, 12.0], "empty box"),
        "nan": ([float("nan"), 5.0, 10.0, 12.0], "NaN"),
    }
    for name, (box, message) in cases.items():
        folder = write_prompts(tmp_path / name, name, [box, None])
        with pytest.raises(DataError, match=f"{name}.parquet, class liver: .*{message}"):
            load_image_prompts(folder, name, CLASSES)
    with pytest.raises(DataError, match="no prompt file for image missing; run the prompt_store rule"):
        load_image_prompts(tmp_path, "missing", CLASSES)
    with pytest.raises(DataError, match="classes"):
        load_image_prompts(tmp_path / "b", "b", ["liver", "kidney"])


def test_token_layout_switches_and_no_box(tmp_path: Path) -> None:
    prompts = [
        load_image_prompts(write_prompts(tmp_path, s, [[4.0, 5.0, 10.0, 12.0], None]), s, CLASSES) for s in ("a", "b")
    ]
    texts = text_vectors(prompts)
    batch = make_batch(prompts, [[0, 1], [1]], texts, SIZE, 1)
    model = small_model()
    tokens = model.sparse_tokens(batch)
    assert tokens.shape == (3, 1 + 2 + 1 + 1, 16)  # 1 point, 2 box corners, VQA, LLM
    no_box = tokens[1, 1:3]
    assert torch.equal(no_box, model.sam.prompt_encoder.not_a_point_embed.weight.expand(2, -1))
    assert small_model(PromptSwitches(box=False, vqa=False)).sparse_tokens(batch).shape == (
        3,
        3,
        16,
    )  # point + SAM's pad point, LLM
    images = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
    with torch.no_grad():
        logits, iou = model(model.embed_images(images), batch)
        assert logits.shape == (3, SIZE, SIZE) and iou.shape == (3,)
        changed = replace(batch, vqa=batch.vqa + 1.0)
        assert not torch.allclose(model(model.embed_images(images), changed)[0], logits)
        off = small_model(PromptSwitches(vqa=False))
        base = off(off.embed_images(images), batch)[0]
        assert torch.allclose(off(off.embed_images(images), changed)[0], base)  # VQA switched off: ignored


def test_training_is_reproducible_and_learns(tmp_path: Path) -> None:
    images, labels, prompts, texts = training_data(tmp_path)
    spec = {"test": 1}
    first = train_stage1(
        small_model(), images, labels, prompts, texts, SETTINGS, tmp_path / "a", spec, 1, progress=False
    )
    second = train_stage1(
        small_model(), images, labels, prompts, texts, SETTINGS, tmp_path / "b", spec, 1, progress=False
    )
    assert [row["loss"] for row in first] == [row["loss"] for row in second]
    assert first[-1]["loss"] < first[0]["loss"]
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    for name in ("loss.csv", "loss.png", "settings.json"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "a" / "settings.json").read_text())["test"] == 1


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels, prompts, texts = training_data(tmp_path)
    train_stage1(small_model(), images, labels, prompts, texts, SETTINGS, tmp_path / "whole", {}, 1, progress=False)
    calls = {"n": 0}
    real = stage1_module.make_batch

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # the first step of epoch 3 (2 steps per epoch)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stage1_module, "make_batch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_stage1(small_model(), images, labels, prompts, texts, SETTINGS, tmp_path / "cut", {}, 1, progress=False)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / WEIGHTS).exists()
    monkeypatch.setattr(stage1_module, "make_batch", real)
    history = train_stage1(
        small_model(), images, labels, prompts, texts, SETTINGS, tmp_path / "cut", {}, 1, progress=False
    )
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "cut" / WEIGHTS).read_bytes() == (tmp_path / "whole" / WEIGHTS).read_bytes()


def test_a_frozen_encoder_is_run_once_per_image(tmp_path: Path) -> None:
    images, labels, prompts, texts = training_data(tmp_path)
    model = small_model()
    calls = []
    model.sam.image_encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    frozen = replace(SETTINGS, train=("mask_decoder", "prompt_encoder", "text_proj"))
    train_stage1(model, images, labels, prompts, texts, frozen, tmp_path / "frozen", {}, 1, progress=False)
    assert sum(calls) == len(images)  # once, not once per epoch
    trained = small_model()
    trained.sam.image_encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    calls.clear()
    train_stage1(trained, images, labels, prompts, texts, SETTINGS, tmp_path / "full", {}, 1, progress=False)
    assert sum(calls) == len(images) * SETTINGS.epochs  # a trained encoder: every step embeds its images


def test_prediction_covers_every_class_and_loads_the_saved_weights(tmp_path: Path) -> None:
    images, labels, prompts, texts = training_data(tmp_path)
    model = small_model()
    train_stage1(model, images, labels, prompts, texts, SETTINGS, tmp_path / "m", {}, 1, progress=False)
    loaded = small_model(seed=5)
    load_checkpoint(loaded, tmp_path / "m" / WEIGHTS)
    probs = np.zeros((4, 2, SIZE, SIZE), np.uint8)
    predict_probabilities(loaded, images, prompts, texts, torch.device("cpu"), probs, 1, batch_images=3, progress=False)
    # every (image, class) slot holds that class's own prediction: each class predicted alone gives the same map
    loaded.eval()
    with torch.no_grad():
        embeddings = loaded.embed_images(torch.from_numpy(images))
        for t in range(len(CLASSES)):
            alone = torch.sigmoid(loaded(embeddings, make_batch(prompts, [[t]] * len(images), texts, SIZE, 1))[0]) * 255
            assert np.abs(alone.round().numpy() - probs[:, t]).max() <= 1
    assert all(not np.array_equal(probs[i, 0], probs[i, 1]) for i in range(len(images)))  # the classes differ
    again = np.zeros_like(probs)
    predict_probabilities(model, images, prompts, texts, torch.device("cpu"), again, 1, progress=False)
    assert np.array_equal(probs, again)


def test_a_prompt_does_not_depend_on_its_batch(tmp_path: Path) -> None:
    """Padding to the run's point count: an image predicts the same alone or beside one with more points."""
    few = load_image_prompts(write_prompts(tmp_path / "a", "few", [[4.0, 5.0, 10.0, 12.0], None]), "few", CLASSES)
    many = load_image_prompts(
        write_prompts(tmp_path / "b", "many", [[4.0, 5.0, 10.0, 12.0], None], [[8.0, 8.0], [20.0, 20.0], [3.0, 3.0]]),
        "many",
        CLASSES,
    )
    texts = text_vectors([few, many])
    model = small_model()
    images = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
    with torch.no_grad():
        alone = model(model.embed_images(images[:1]), make_batch([few], [[0, 1]], texts, SIZE, 3))[0]
        beside = model(model.embed_images(images), make_batch([few, many], [[0, 1], [0, 1]], texts, SIZE, 3))[0][:2]
    assert torch.allclose(alone, beside, atol=1e-5)  # equal up to float rounding of batched kernels
    with pytest.raises(DataError, match="more than 1 points"):
        make_batch([many], [[0]], texts, SIZE, 1)
