"""The shared image embeddings (written once, checked against the reader's encoder), per-step class
sampling in stage 1, and the zero-shot rows (CRF boxes; ground-truth boxes as an oracle)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from samdpo.errors import ConfigError, DataError
from samdpo.sam.image_embeddings import ImageEmbeddings, embedding_key, write_image_embeddings
from samdpo.sam.prompted import PromptSwitches
from samdpo.train.batches import sample_classes
from samdpo.train.model_folder import WEIGHTS
from samdpo.train.predict import predict_probabilities
from samdpo.train.stage1 import train_stage1
from samdpo.train.zero_shot import ground_truth_boxes, predict_boxes, prompt_boxes
from tests.prompt_rows import SIZE
from tests.stage1_data import SETTINGS, small_model, training_data

FROZEN = replace(SETTINGS, train=("mask_decoder", "prompt_encoder", "text_proj"))


def _written(tmp_path: Path, images: np.ndarray) -> tuple[Path, list[str]]:
    ids = [f"s{i}" for i in range(len(images))]
    write_image_embeddings(
        tmp_path / "emb", small_model(), images, ids, {"sam": "test"}, batch_images=3, progress=False
    )
    return tmp_path / "emb", ids


def test_embeddings_are_the_encoders_and_refuse_another_encoder(tmp_path: Path) -> None:
    images, *_ = training_data(tmp_path)
    folder, ids = _written(tmp_path, images)
    meta = json.loads((folder / "embeddings.json").read_text())
    assert meta["sample_ids"] == ids and meta["dtype"] == "float16" and meta["key"] == embedding_key(small_model())
    model = small_model()
    chosen = ImageEmbeddings(folder, model).select(["s3", "s1"])
    with torch.no_grad():
        direct = model.embed_images(torch.from_numpy(images[[3, 1]]))
    assert torch.allclose(chosen.take([0, 1]), direct, atol=2e-3, rtol=2e-3)  # float16 storage
    with pytest.raises(DataError, match="another encoder or preprocessing .* rerun the embed_images rule"):
        ImageEmbeddings(folder, small_model(seed=1))
    with pytest.raises(DataError, match="image nope .* has no embedding"):
        ImageEmbeddings(folder, model).select(["nope"])
    with pytest.raises(DataError, match="no readable image embeddings .* run the embed_images rule"):
        ImageEmbeddings(tmp_path / "missing", model)


def test_stage1_reads_the_embeddings_instead_of_the_encoder(tmp_path: Path) -> None:
    images, labels, prompts, texts = training_data(tmp_path)
    folder, ids = _written(tmp_path, images)
    model = small_model()
    calls = []
    model.sam.image_encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    embeddings = ImageEmbeddings(folder, model).select(ids)
    history = train_stage1(
        model, images, labels, prompts, texts, FROZEN, tmp_path / "m", {}, 1, progress=False, embeddings=embeddings
    )
    assert not calls and history[-1]["loss"] < history[0]["loss"]
    reference = small_model()
    train_stage1(reference, images, labels, prompts, texts, FROZEN, tmp_path / "r", {}, 1, progress=False)
    probs, again = (np.zeros((4, 2, SIZE, SIZE), np.uint8) for _ in range(2))
    predict_probabilities(
        model, images, prompts, texts, torch.device("cpu"), probs, 1, progress=False, embeddings=embeddings
    )
    predict_probabilities(reference, images, prompts, texts, torch.device("cpu"), again, 1, progress=False)
    assert (
        not calls and np.abs(probs.astype(int) - again.astype(int)).max() <= 3
    )  # the same model up to float16 embeddings
    with pytest.raises(ConfigError, match="precomputed image embeddings were given, but the image encoder trains"):
        train_stage1(
            small_model(),
            images,
            labels,
            prompts,
            texts,
            SETTINGS,
            tmp_path / "t",
            {},
            1,
            progress=False,
            embeddings=embeddings,
        )


def test_class_sampling_draws_present_classes_reproducibly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    assert sample_classes([1, 4, 7], 0, rng) == [1, 4, 7] and sample_classes([1, 4], 5, rng) == [1, 4]
    draws = [sample_classes([1, 4, 7], 1, np.random.default_rng(seed)) for seed in range(30)]
    assert all(len(d) == 1 and d[0] in (1, 4, 7) for d in draws) and len({d[0] for d in draws}) == 3
    images, labels, prompts, texts = training_data(tmp_path)
    one = replace(SETTINGS, classes_per_image=1)
    first = train_stage1(small_model(), images, labels, prompts, texts, one, tmp_path / "a", {}, 1, progress=False)
    second = train_stage1(small_model(), images, labels, prompts, texts, one, tmp_path / "b", {}, 1, progress=False)
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    everything = train_stage1(
        small_model(), images, labels, prompts, texts, SETTINGS, tmp_path / "c", {}, 1, progress=False
    )
    # images 0 and 2 hold two classes: one class each per step halves their pairs
    assert first[0]["samples_per_s"] * first[0]["seconds"] == pytest.approx(4)
    assert everything[0]["samples_per_s"] * everything[0]["seconds"] == pytest.approx(6)
    assert [row["loss"] for row in first] == [row["loss"] for row in second]


def test_zero_shot_boxes_and_empty_predictions_without_a_box(tmp_path: Path) -> None:
    images, labels, prompts, _ = training_data(tmp_path)
    boxes, present = ground_truth_boxes(labels, 2)
    assert present[:, 0].all() and present[:, 1].tolist() == [True, False, True, False]
    assert boxes[0, 0].tolist() == [4, 5, 10, 12] and boxes[0, 1].tolist() == [18, 20, 29, 27]  # XYXY, inclusive maxima
    cam_boxes, has_box = prompt_boxes(prompts)
    assert cam_boxes.shape == (4, 2, 4) and has_box.all()
    model = small_model(PromptSwitches(box=True, points=False, vqa=False, llm=False))
    out = np.full((4, 2, SIZE, SIZE), 9, np.uint8)
    predict_boxes(model, images, boxes, present, torch.device("cpu"), out, progress=False)
    assert not out[1, 1].any() and not out[3, 1].any()  # no box: an empty prediction, not a made-up one
    assert out[0, 0].any() and out[0, 1].any()


@pytest.mark.parametrize("name", ["small", "lite_medsam"])
def test_the_shared_image_decoder_equals_segment_anythings(name: str) -> None:
    """K prompts on one image through decode_single_mask == MaskDecoder with the image repeated K times, gradients
    included."""
    from samdpo.sam.builders import build_sam
    from samdpo.sam.decoding import decode_single_mask
    from samdpo.sam.settings import SamSettings

    torch.manual_seed(0)
    sam = build_sam(SamSettings(name, 256 if name == "lite_medsam" else 64), load_weights=False)
    encoder, decoder = sam.prompt_encoder, sam.mask_decoder
    grid = encoder.image_embedding_size
    embedding = torch.randn(1, encoder.embed_dim, *grid)
    sparse = torch.randn(5, 4, encoder.embed_dim)
    dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *grid)
    pe = encoder.get_dense_pe()
    masks, iou = decode_single_mask(decoder, embedding, pe, sparse, dense)
    (masks.square().mean() + iou.sum()).backward()
    ours = {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}
    decoder.zero_grad()
    reference, reference_iou = decoder(embedding, pe, sparse, dense.expand(5, -1, -1, -1), multimask_output=False)
    (reference.square().mean() + reference_iou.sum()).backward()
    assert masks.shape == reference.shape == (5, 1, 4 * grid[0], 4 * grid[1]) and iou.shape == reference_iou.shape == (
        5,
        1,
    )
    assert torch.allclose(masks, reference, atol=1e-4, rtol=1e-4) and torch.allclose(iou, reference_iou, atol=1e-5)
    for n, p in decoder.named_parameters():  # the other mask tokens' heads do not reach the single-mask output
        assert torch.allclose(ours[n], p.grad, atol=1e-5, rtol=1e-3) if n in ours else not p.grad.any(), n


def test_ground_truth_boxes_replace_a_fraction_of_the_training_boxes(tmp_path: Path) -> None:
    from samdpo.train.batches import jittered_truth_boxes, make_batch

    images, labels, prompts, texts = training_data(tmp_path)
    batch = make_batch(prompts[:2], [[0, 1], [0]], texts, SIZE, 1)
    masks = np.stack([labels[0] == 1, labels[0] == 2, labels[1] == 1])
    same = jittered_truth_boxes(batch, masks, 0.0, 2.0, np.random.default_rng(0))
    assert torch.equal(same.boxes, batch.boxes)
    exact = jittered_truth_boxes(batch, masks, 1.0, 0.0, np.random.default_rng(0))
    assert exact.boxes.tolist() == [[4, 5, 10, 12], [18, 20, 29, 27], [4, 5, 10, 12]] and exact.has_box.all()
    jittered = jittered_truth_boxes(batch, masks, 1.0, 2.0, np.random.default_rng(0))
    assert (jittered.boxes - exact.boxes).abs().max() <= 2.0 and not torch.equal(jittered.boxes, exact.boxes)
    assert (
        (jittered.boxes[:, 2] >= jittered.boxes[:, 0]).all()
        and jittered.boxes.min() >= 0
        and jittered.boxes.max() <= SIZE - 1
    )
    with pytest.raises(ConfigError, match="gt_box_fraction"):
        replace(SETTINGS, gt_box_fraction=1.5)
