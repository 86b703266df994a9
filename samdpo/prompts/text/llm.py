"""LLM descriptions of each target class in its modality (one per class, shared by all images).

- ``knowledge`` (the offline default): descriptions from a YAML file ``{modality: {class: text}}``,
  by default the one shipped with the package (``descriptions.yaml``); model = the file's name
  and SHA-256, so a changed file is visible in the provenance.
- ``openai``: a chat model behind any OpenAI-compatible endpoint, asked ``llm.prompt`` once per
  class; answers go through the answer cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from samdpo.errors import ConfigError
from samdpo.prompts.text.answer_cache import AnswerCache, cached_answer
from samdpo.prompts.text.openai_chat import OpenAISettings, cache_request, chat, make_client
from samdpo.prompts.text.question_pool import ask_all
from samdpo.prompts.text.vqa import fill_template
from samdpo.settings import parse_settings

BACKENDS = ("knowledge", "openai")

LLM_SCHEMA = pa.schema(
    [
        ("class_index", pa.int16()),
        ("class_name", pa.string()),
        ("modality", pa.string()),
        ("prompt", pa.string()),
        ("description", pa.string()),
    ]
)


@dataclass(frozen=True)
class DescriptionRequest:
    """One class to describe: its index and name, the modality, and the prompt's text."""

    class_index: int
    class_name: str
    modality: str
    prompt: str

    def describe(self) -> str:
        """Names the request in progress and error messages."""
        return f"class {self.class_name} ({self.modality}), description"


def shipped_descriptions() -> Path:
    """The descriptions file that ships with the package."""
    return Path(str(resources.files("samdpo.prompts.text") / "descriptions.yaml"))


class KnowledgeLLM:
    """Descriptions read from a ``{modality: {class: text}}`` YAML file (None = the shipped one)."""

    backend, cached = "knowledge", False

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else shipped_descriptions()
        try:
            raw = self.path.read_bytes()
            self.texts = yaml.safe_load(raw)
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"llm.descriptions: cannot read {self.path} ({exc})") from exc
        if not isinstance(self.texts, dict) or not all(isinstance(v, dict) for v in self.texts.values()):
            raise ConfigError(f"{self.path}: expected a mapping modality -> {{class name: description}}")
        self.model = f"{self.path.name}@sha256:{hashlib.sha256(raw).hexdigest()[:16]}"

    def ask(self, request: DescriptionRequest) -> str:
        """The file's description of the request's class in its modality."""
        by_class = self.texts.get(request.modality)
        if by_class is None:
            raise ConfigError(
                f"{self.path}: no descriptions for modality {request.modality!r} (it has {sorted(self.texts)}); "
                "set the dataset's prompts.modality to one of them, or llm.descriptions to your own file"
            )
        text = by_class.get(request.class_name)
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{self.path}: no description of {request.class_name!r} under {request.modality!r}")
        return " ".join(text.split())


class OpenAILLM:
    """A chat model behind an OpenAI-compatible endpoint; ``system`` frames every prompt."""

    backend, cached = "openai", True

    def __init__(self, settings: OpenAISettings, system: str) -> None:
        self.settings, self.system, self.model = settings, system, settings.model
        self.client = make_client(settings)

    def _messages(self, request: DescriptionRequest) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": request.prompt}]

    def request(self, request: DescriptionRequest) -> dict[str, Any]:
        """What is asked, for the cache key."""
        return cache_request(self.client, self.settings, self._messages(request))

    def ask(self, request: DescriptionRequest) -> str:
        """The model's description, retried per the settings."""
        return chat(self.client, self.settings, self._messages(request), request.describe())


def make_requests(class_names: list[str], modality: str, template: str) -> list[DescriptionRequest]:
    """One request per class; ``template`` uses {name} and {modality}."""
    return [
        DescriptionRequest(t, name, modality, fill_template(template, "llm.prompt", name=name, modality=modality))
        for t, name in enumerate(class_names)
    ]


def llm_table(
    requests: list[DescriptionRequest],
    backend: KnowledgeLLM | OpenAILLM,
    cache: AnswerCache,
    workers: int = 1,
    progress: bool = True,
) -> pa.Table:
    """Describe every class (through ``cache`` for the openai backend); one row per class (:data:`LLM_SCHEMA`)."""

    def answer(request: DescriptionRequest) -> str:
        return cached_answer(backend, cache, lambda: backend.request(request), lambda: backend.ask(request))

    answers = ask_all(requests, answer, workers=workers, desc=f"llm ({backend.backend})", progress=progress)
    rows = [
        {
            "class_index": r.class_index,
            "class_name": r.class_name,
            "modality": r.modality,
            "prompt": r.prompt,
            "description": a,
        }
        for r, a in zip(requests, answers)
    ]
    return pa.Table.from_pylist(rows, schema=LLM_SCHEMA)


@dataclass(frozen=True)
class LlmSettings:
    """The ``llm`` config section (defaults: the schema's).

    Attributes:
        backend: ``knowledge`` or ``openai``.
        descriptions: the knowledge backend's YAML file (None = the shipped one).
        prompt: what the openai backend is asked per class, with ``{name}`` and ``{modality}``.
        system: system message of the openai backend.
        openai: :class:`~samdpo.prompts.text.openai_chat.OpenAISettings` fields.
    """

    backend: str = "knowledge"
    descriptions: str | None = None
    prompt: str = (
        "Describe the {name} as seen in {modality}: its typical shape, size, location and appearance, in two sentences."
    )
    system: str = "You are an expert radiologist. Write short, factual descriptions."
    openai: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"llm.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


def make_backend(settings: LlmSettings) -> KnowledgeLLM | OpenAILLM:
    """The configured backend."""
    if settings.backend == "knowledge":
        return KnowledgeLLM(settings.descriptions)
    openai_settings = parse_settings(OpenAISettings, settings.openai, "llm.openai")
    return OpenAILLM(openai_settings, settings.system)
