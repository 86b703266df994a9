"""The permanent cache of model and API answers (VQA answers, LLM descriptions).

Every answer is stored under a stable hash of what was asked: backend, model, the question or
messages (images by their SHA-256, never inline), generation parameters and the prompt-format
version. API keys are never part of the key and never stored by samdpo. The cache is a diskcache
folder (SQLite underneath: keep it on a local disk, not NFS) with eviction turned off, so a rerun
asks nothing it asked before.

Two limits of that promise:

- The answer text is stored as the server returns it: a server (or proxy) that echoes the request's
  ``Authorization`` header into its answer puts the API key into the cache (and the tables).
- By default the endpoint address is not part of the key: after a change of ``openai.base_url``
  with the same model name, answers come from the cache, not from the new server. Set
  ``openai.cache_endpoint: true`` to make the endpoint part of the key (every question is then asked
  again once per endpoint).

A cache that SQLite cannot read (a damaged ``cache.db``) or open is a DataError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

import diskcache

from samdpo.errors import DataError

# Version of how questions are turned into model inputs; bump it when that changes.
PROMPT_FORMAT_VERSION = 1


class Backend(Protocol):
    """What the cache needs of a VQA or LLM backend: its name, its model and whether its answers are cached."""

    backend: str
    model: str
    cached: bool


def request_key(backend: str, model: str, request: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of what was asked: backend, model, request (JSON-serialisable), format version."""
    payload = {"backend": backend, "model": model, "request": request, "format": PROMPT_FORMAT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class AnswerCache:
    """Answers by request key, on disk; counts questions asked and answers reused.

    Thread- and process-safe (diskcache); one instance may serve a pool of worker threads.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self.asked = 0
        self.reused = 0
        try:
            # size_limit is only consulted by eviction, which is off: the cache never drops an answer.
            self._cache = diskcache.Cache(str(self.directory), eviction_policy="none", size_limit=2**62)
        except (sqlite3.DatabaseError, OSError) as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> NoReturn:
        """Raise a DataError naming the cache's database file and what to do."""
        database = self.directory / diskcache.core.DBNAME
        if isinstance(exc, (sqlite3.OperationalError, OSError)):
            raise DataError(
                f"{database}: cannot use the answer cache ({exc}); check that {self.directory} is a writable folder "
                "on a local disk (SQLite, not NFS) that no other run holds"
            ) from exc
        raise DataError(
            f"{database}: the answer cache is damaged ({exc}); delete the folder {self.directory} and rerun "
            "(the answers it held will be asked again)"
        ) from exc

    def get_or_ask(self, key: str, ask: Callable[[], str], backend: str, model: str) -> str:
        """The cached answer under ``key``, or ``ask()``'s answer, stored before it is returned."""
        try:
            entry = self._cache.get(key)
        except sqlite3.DatabaseError as exc:
            self._fail(exc)
        if entry is not None:
            with self._lock:
                self.reused += 1
            return entry["answer"]
        answer = ask()
        try:
            self._cache.set(key, {"answer": answer, "backend": backend, "model": model})
        except sqlite3.DatabaseError as exc:
            self._fail(exc)
        with self._lock:
            self.asked += 1
        return answer

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Close the SQLite connections."""
        self._cache.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cached_answer(
    backend: Backend, cache: AnswerCache, request: Callable[[], Mapping[str, Any]], ask: Callable[[], str]
) -> str:
    """``ask()``'s answer, through ``cache`` when the backend's answers are cached (keyed on its name, its model
    and ``request()``, which is built only then)."""
    if not backend.cached:
        return ask()
    key = request_key(backend.backend, backend.model, request())
    return cache.get_or_ask(key, ask, backend.backend, backend.model)
