"""The ``transformers`` VQA backend on a tiny randomly initialised ViLT written in the real on-disk format.

The model folder (config.json + model.safetensors + processor/tokenizer files) is built once per
module inside a temporary folder; nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samdpo.errors import ConfigError
from samdpo.prompts.text.answer_cache import AnswerCache
from samdpo.prompts.text.vqa import TransformersVQA, VqaQuestion, make_questions, vqa_table

ANSWERS = ("round", "oval", "left", "right")
SIZE = 64
WORDS = "what is the shape of where located liver kidney spleen in ct mri image left right ? , .".split()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def vilt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViLT VQA model (4 answers) with its processor, saved as from_pretrained reads it."""
    import torch
    from transformers import BertTokenizerFast, ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    model_dir = tmp_path_factory.mktemp("tiny-vilt-vqa")
    vocab = model_dir / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=40)
    config = ViltConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=SIZE,
        patch_size=32,
        max_position_embeddings=40,
        max_image_length=-1,
        num_labels=len(ANSWERS),
        id2label=dict(enumerate(ANSWERS)),
        label2id={answer: i for i, answer in enumerate(ANSWERS)},
    )
    torch.manual_seed(0)
    ViltForQuestionAnswering(config).eval().save_pretrained(model_dir)
    image_processor = ViltImageProcessor(size={"shortest_edge": SIZE}, size_divisor=32)
    ViltProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(model_dir)
    return model_dir


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(count, SIZE, SIZE), dtype=np.uint8)


def test_answers_one_of_the_labels_deterministically(vilt_dir: Path) -> None:
    backend = TransformersVQA(str(vilt_dir))
    image = _images(1)[0]
    question = VqaQuestion(0, "s0", 0, "liver", "shape", "What is the shape of the liver?")
    first = backend.ask(image, question)
    assert isinstance(first, str)
    assert first in ANSWERS
    assert backend.ask(image, question) == first
    # A second backend loaded from the same folder gives the same answer.
    assert TransformersVQA(str(vilt_dir)).ask(image, question) == first


def test_vqa_table_goes_through_the_answer_cache(vilt_dir: Path, tmp_path: Path) -> None:
    images = _images(2)
    templates = {
        "shape": "What is the shape of the {name}?",
        "location": "Where is the {name} located in this {modality} image?",
    }
    questions = make_questions(["s0", "s1"], ["liver", "kidney"], templates, "ct")
    n = len(questions)
    assert n == 8
    backend = TransformersVQA(str(vilt_dir))

    with AnswerCache(tmp_path / "cache") as cache:
        first = vqa_table(images, questions, backend, cache, workers=1, progress=False)
        assert (cache.asked, cache.reused) == (n, 0)
        assert len(cache) == n
    assert first.num_rows == n
    assert set(first.column("answer").to_pylist()) <= set(ANSWERS)
    assert first.column("question").to_pylist() == [q.question for q in questions]

    with AnswerCache(tmp_path / "cache") as cache:
        second = vqa_table(images, questions, backend, cache, workers=2, progress=False)
        assert (cache.asked, cache.reused) == (0, n)
    assert second.equals(first)


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="vqa.transformers.model"):
        TransformersVQA(str(missing))


def test_folder_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ConfigError, match="vqa.transformers.model"):
        TransformersVQA(str(empty))
