"""VQA answers about each target's shape and location, per (image, class), from three backends.

- ``geometry`` (the offline default): the answer is read off the CRF mask of the visual-prompt
  step (the shape of its largest component, its size, where its components lie), and is named
  as such (model ``crf-mask-geometry``). No model is asked; nothing is cached.
- ``transformers``: a Hugging Face visual-question-answering model (ViLT, BLIP, ...) loaded from a
  local folder or the local HF cache (offline).
- ``openai``: a vision model behind any OpenAI-compatible endpoint; the image goes as a PNG data URL.

Model and API answers go through the :class:`~samdpo.prompts.text.answer_cache.AnswerCache`. All
backends see the prepared image (and geometry the CRF mask) only, never a label.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from samdpo.clip.captions import position_word, size_word
from samdpo.errors import ConfigError
from samdpo.prompts.text.answer_cache import AnswerCache, cached_answer
from samdpo.prompts.text.openai_chat import OpenAISettings, cache_request, chat, make_client
from samdpo.prompts.text.question_pool import ask_all
from samdpo.settings import parse_settings

GEOMETRY_QUESTIONS = ("shape", "location", "size")
BACKENDS = ("geometry", "transformers", "openai")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
_COUNTS = {2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class VqaQuestion:
    """One question about one target in one image.

    Attributes:
        image_index: row of the image in the sample store.
        sample_id: the image's id.
        class_index: index into the dataset's class names; class_name: that name.
        question_id: the question's key in the config (``shape``, ``location``, ...).
        question: the question's text with the class name filled in.
    """

    image_index: int
    sample_id: str
    class_index: int
    class_name: str
    question_id: str
    question: str

    def describe(self) -> str:
        """Names the question in progress and error messages."""
        return f"image {self.sample_id}, class {self.class_name}, question {self.question_id}"


def _shape_words(component: np.ndarray) -> str:
    """ "round", "oval", "elongated" (with orientation) or "irregular" for one (H, W) bool component."""
    rows, cols = np.nonzero(component)
    if rows.size < 5:
        return "a small spot"
    coords = np.stack([cols, rows], axis=1).astype(np.float64)
    try:
        hull = ConvexHull((coords[:, None, :] + _CORNERS[None]).reshape(-1, 2))
        solidity = rows.size / hull.volume
    except QhullError:
        solidity = 1.0
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(coords.T) + 1e-6 * np.eye(2))
    elongation = float(np.sqrt(eigenvalues[1] / eigenvalues[0]))
    if solidity < 0.75:
        return "irregular"
    if elongation < 1.25:
        return "round"
    if elongation < 2.0:
        return "oval"
    x, y = np.abs(eigenvectors[:, 1])
    orientation = "horizontal" if x > 2 * y else "vertical" if y > 2 * x else "diagonal"
    return f"elongated ({orientation})"


def geometry_answer(mask: np.ndarray, question_id: str) -> str:
    """Answer a ``shape``, ``location`` or ``size`` question from a (H, W) bool CRF mask.

    Left and right are the image's (radiological images show the patient's right on the left).
    """
    if question_id not in GEOMETRY_QUESTIONS:
        raise ConfigError(f"the geometry VQA backend answers {', '.join(GEOMETRY_QUESTIONS)}; not {question_id!r}")
    if not mask.any():
        return "not found in the image"
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    components = [labels == k for k in range(1, count + 1)]
    components.sort(key=lambda c: float(np.nonzero(c)[1].mean()))  # left to right
    if question_id == "location":
        places = list(dict.fromkeys(position_word(c) for c in components))
        return f"in the {' and '.join(places)} {'of' if places == ['center'] else 'part of'} the image"
    percent = f"{100.0 * float(mask.mean()):.1f}% of the image"
    if question_id == "size":
        return f"{size_word(mask)} ({percent})"
    largest = max(components, key=lambda c: int(c.sum()))
    shape = f"{_shape_words(largest)}, {size_word(mask)} ({percent})"
    return shape if count == 1 else f"{_COUNTS.get(count, str(count))} separate regions; the largest {shape}"


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's shape and pixels: how cache keys refer to images."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return f"sha256:{digest.hexdigest()}"


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")


class GeometryVQA:
    """Answers from the CRF masks: ``masks[(sample_id, class_index)]`` is a (H, W) bool mask."""

    backend, model, cached = "geometry", "crf-mask-geometry", False

    def __init__(self, masks: Mapping[tuple[str, int], np.ndarray]) -> None:
        self.masks = masks

    def ask(self, image: np.ndarray, question: VqaQuestion) -> str:
        """The answer read off the mask of ``question``'s image and class."""
        return geometry_answer(self.masks[(question.sample_id, question.class_index)], question.question_id)


class TransformersVQA:
    """A Hugging Face VQA model (``AutoModelForVisualQuestionAnswering``) from a local folder or the HF cache.

    Classifier models (ViLT) answer with their top label; generative ones (BLIP) with generated
    text. (transformers 5 dropped the ``visual-question-answering`` pipeline, hence no pipeline.)
    """

    backend, cached = "transformers", True

    def __init__(self, model: str, device: str = "cpu") -> None:
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

        self.model, self.device = model, device
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.net = AutoModelForVisualQuestionAnswering.from_pretrained(model).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"vqa.transformers.model: cannot load {model!r} offline ({exc}); give a local folder or a model in "
                "the HF cache"
            ) from exc

    def request(self, image: np.ndarray, question: VqaQuestion) -> dict[str, Any]:
        """What is asked, for the cache key."""
        return {"task": "visual-question-answering", "image": image_digest(image), "question": question.question}

    def ask(self, image: np.ndarray, question: VqaQuestion) -> str:
        """The model's answer: its top label, or its generated text."""
        import torch

        inputs = self.processor(images=_pil(image), text=question.question, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            if self.net.can_generate():
                tokens = self.net.generate(**inputs, max_new_tokens=32)
                return str(self.processor.decode(tokens[0], skip_special_tokens=True)).strip()
            logits = self.net(**inputs).logits
        return str(self.net.config.id2label[int(logits[0].argmax())]).strip()


class OpenAIVQA:
    """A vision model behind an OpenAI-compatible endpoint; ``system`` frames every question."""

    backend, cached = "openai", True

    def __init__(self, settings: OpenAISettings, system: str) -> None:
        self.settings, self.system, self.model = settings, system, settings.model
        self.client = make_client(settings)

    def _messages(self, image_url: str, question: VqaQuestion) -> list[dict]:
        content = [{"type": "text", "text": question.question}, {"type": "image_url", "image_url": {"url": image_url}}]
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]

    def request(self, image: np.ndarray, question: VqaQuestion) -> dict[str, Any]:
        """What is asked, for the cache key (the image by its digest, not inline)."""
        return cache_request(self.client, self.settings, self._messages(image_digest(image), question))

    def ask(self, image: np.ndarray, question: VqaQuestion) -> str:
        """The model's answer, retried per the settings."""
        buffer = io.BytesIO()
        _pil(image).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        return chat(self.client, self.settings, self._messages(url, question), question.describe())


VQA_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("class_index", pa.int16()),
        ("class_name", pa.string()),
        ("question_id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
    ]
)


def fill_template(template: str, setting: str, **fields: str) -> str:
    """``template.format(**fields)``; an unknown ``{field}`` is a ConfigError naming ``setting``."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{setting}: bad template {template!r} ({exc!r}); it may use {', '.join('{' + f + '}' for f in fields)}"
        ) from exc


def make_questions(
    sample_ids: list[str], class_names: list[str], templates: Mapping[str, str], modality: str
) -> list[VqaQuestion]:
    """Every (image, class, question) in image, class, question order; templates use {name}, {modality}."""
    if not templates:
        raise ConfigError("vqa.questions: no question configured")
    texts = {
        (name, qid): fill_template(template, f"vqa.questions.{qid}", name=name, modality=modality)
        for name in class_names
        for qid, template in templates.items()
    }
    return [
        VqaQuestion(i, sample_id, t, name, qid, texts[(name, qid)])
        for i, sample_id in enumerate(sample_ids)
        for t, name in enumerate(class_names)
        for qid in templates
    ]


def vqa_table(
    images: np.ndarray,
    questions: list[VqaQuestion],
    backend: GeometryVQA | TransformersVQA | OpenAIVQA,
    cache: AnswerCache,
    workers: int = 1,
    progress: bool = True,
) -> pa.Table:
    """Answer every question (through ``cache`` for model backends).

    Args:
        images: (N, S, S) uint8 images of the sample store, indexed by ``image_index``.
        questions: from :func:`make_questions`.
        backend: a VQA backend.
        cache: the answer cache (not consulted by the geometry backend).
        workers: questions in flight at once.
        progress: show a progress bar.

    Returns:
        One row per question (:data:`VQA_SCHEMA`), in the questions' order.
    """

    def answer(question: VqaQuestion) -> str:
        image = np.asarray(images[question.image_index])
        return cached_answer(
            backend, cache, lambda: backend.request(image, question), lambda: backend.ask(image, question)
        )

    answers = ask_all(questions, answer, workers=workers, desc=f"vqa ({backend.backend})", progress=progress)
    rows = [
        {
            "sample_id": q.sample_id,
            "class_index": q.class_index,
            "class_name": q.class_name,
            "question_id": q.question_id,
            "question": q.question,
            "answer": a,
        }
        for q, a in zip(questions, answers)
    ]
    return pa.Table.from_pylist(rows, schema=VQA_SCHEMA)


@dataclass(frozen=True)
class VqaSettings:
    """The ``vqa`` config section (defaults: the schema's).

    Attributes:
        backend: ``geometry``, ``transformers`` or ``openai``.
        questions: question id -> template with ``{name}`` (and optionally ``{modality}``).
        system: system message of the openai backend.
        transformers: ``{"model": local folder or cached hub id, "device": "cpu"}``.
        openai: :class:`~samdpo.prompts.text.openai_chat.OpenAISettings` fields.
    """

    backend: str = "geometry"
    questions: Mapping[str, str] = field(
        default_factory=lambda: {
            "shape": "What is the shape of the {name}?",
            "location": "Where is the {name} located?",
        }
    )
    system: str = "You are an expert radiologist. Answer the question about this medical image in one short sentence."
    transformers: Mapping[str, Any] = field(default_factory=dict)
    openai: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"vqa.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


def make_backend(
    settings: VqaSettings, masks: Mapping[tuple[str, int], np.ndarray] | None
) -> GeometryVQA | TransformersVQA | OpenAIVQA:
    """The configured backend; ``masks`` (CRF masks by (sample id, class index)) feed ``geometry``."""
    if settings.backend == "geometry":
        if masks is None:
            raise ConfigError("vqa.backend geometry reads the CRF masks: give the crf table (--crf)")
        return GeometryVQA(masks)
    if settings.backend == "transformers":
        model = settings.transformers.get("model")
        if not model:
            raise ConfigError(
                "vqa.transformers.model: name a local folder or a model in the HF cache (e.g. "
                "dandelin/vilt-b32-finetuned-vqa)"
            )
        return TransformersVQA(str(model), str(settings.transformers.get("device", "cpu")))
    openai_settings = parse_settings(OpenAISettings, settings.openai, "vqa.openai")
    return OpenAIVQA(openai_settings, settings.system)
