"""Chat completions from any OpenAI-compatible endpoint, with timeouts, retries and clear errors.

The openai client's own retries are turned off (``max_retries=0``): this module retries, with
exponential backoff, everything that can pass (timeouts, connection errors, 408/409/429/5xx, a
body that is not JSON, a reply without text) and fails at once on what cannot (401, 400, 404).
The API key is read from an environment variable at client creation and never logged or stored.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from samdpo.errors import ConfigError, SamdpoError


class AnswerError(SamdpoError):
    """A model or API did not answer a question (after retries, where retrying can help)."""


@dataclass(frozen=True)
class OpenAISettings:
    """How to reach an OpenAI-compatible endpoint.

    Attributes:
        model: model name sent with each request.
        base_url: endpoint root (e.g. ``https://api.openai.com/v1``, ``http://localhost:8000/v1``);
            None = the client's default (or ``OPENAI_BASE_URL``).
        api_key_env: environment variable holding the key (a local server still wants some string).
        timeout_s: seconds before one request is abandoned.
        retries: further attempts after a failed one that may pass on retry.
        backoff_s: wait before the first retry, doubled for each next one (capped by max_backoff_s).
        max_backoff_s: longest wait between attempts.
        max_tokens: longest answer, tokens.
        temperature: sampling temperature (0 = as deterministic as the endpoint allows).
        workers: questions in flight at once (threads).
        cache_endpoint: make the endpoint address part of every answer-cache key, so that a
            ``base_url`` change with the same model name asks again instead of reusing the cache.
    """

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_tokens: int = 128
    temperature: float = 0.0
    workers: int = 4
    cache_endpoint: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("openai.model must name a model")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"openai.{name} must be > 0, got {getattr(self, name)!r}")
        if self.retries < 0 or self.max_tokens < 1 or self.workers < 1:
            raise ConfigError("openai.retries must be >= 0, openai.max_tokens and openai.workers >= 1")
        if not isinstance(self.cache_endpoint, bool):
            raise ConfigError(f"openai.cache_endpoint must be true or false, got {self.cache_endpoint!r}")

    def parameters(self) -> dict[str, Any]:
        """Generation parameters that change answers (part of every cache key)."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature}


def cache_request(client: Any, settings: OpenAISettings, messages: list[dict]) -> dict[str, Any]:
    """What is asked, for the answer-cache key: the messages (images by digest), the generation
    parameters and, with ``settings.cache_endpoint``, the client's endpoint address."""
    request: dict[str, Any] = {"messages": messages, "parameters": settings.parameters()}
    if settings.cache_endpoint:
        request["endpoint"] = str(client.base_url)
    return request


def make_client(settings: OpenAISettings) -> Any:
    """An ``openai.OpenAI`` client; fails at once, saying how to set it, when the key is missing."""
    from openai import OpenAI

    key = os.environ.get(settings.api_key_env, "")
    if not key:
        raise ConfigError(
            f"the openai backend needs an API key in ${settings.api_key_env}, which is not set: "
            f"run `export {settings.api_key_env}=sk-...` (any non-empty string for a local server), "
            "or choose the offline backends (vqa.backend: geometry, llm.backend: knowledge)"
        )
    return OpenAI(api_key=key, base_url=settings.base_url, timeout=settings.timeout_s, max_retries=0)


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, ValueError)):
        return True  # ValueError: a body that is not JSON, or a reply without text
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _reason(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed ({exc.__cause__ or exc})"
    return f"{type(exc).__name__}: {exc}"


def chat(client: Any, settings: OpenAISettings, messages: list[dict], what: str) -> str:
    """The text of one chat completion, retried with backoff where a retry may help.

    Args:
        client: from :func:`make_client`.
        settings: model, retries and backoff.
        messages: chat messages (OpenAI format; images as ``image_url`` data URLs).
        what: names the question in errors, e.g. ``"image amos_0001_z040, class liver, shape"``.

    Raises:
        AnswerError: naming ``what``, the endpoint and the last failure.
    """
    attempts = settings.retries + 1
    failures = 0
    while True:
        try:
            reply = client.chat.completions.create(model=settings.model, messages=messages, **settings.parameters())
            choices = getattr(reply, "choices", None)
            text = choices[0].message.content if choices else None
            if not isinstance(text, str) or not text.strip():
                raise ValueError("the reply holds no answer text")
            return text.strip()
        except Exception as exc:
            failures += 1
            if not _retryable(exc):
                raise AnswerError(
                    f"{what}: {settings.model} at {client.base_url} refused the request: {_reason(exc)}"
                ) from exc
            if failures == attempts:
                raise AnswerError(
                    f"{what}: no answer from {settings.model} at {client.base_url} after {attempts} attempts: "
                    f"{_reason(exc)}"
                ) from exc
            time.sleep(min(settings.backoff_s * 2 ** (failures - 1), settings.max_backoff_s))
