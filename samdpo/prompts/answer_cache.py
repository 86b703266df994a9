"""The permanent cache of model and API answers (VQA answers, LLM descriptions).

Every answer is stored under a stable hash of what was asked: backend, model, the question or
messages (images by their SHA-256, never inline), generation parameters and the prompt-format
version. Endpoint addresses and API keys are not part of the key and never stored. The cache is
a diskcache folder (SQLite underneath: keep it on a local disk, not NFS) with eviction turned
off, so a rerun asks nothing it asked before.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import diskcache

# Version of how questions are turned into model inputs; bump it when that changes.
PROMPT_FORMAT_VERSION = 1


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
        # size_limit is only consulted by eviction, which is off: the cache never drops an answer.
        self._cache = diskcache.Cache(str(self.directory), eviction_policy="none", size_limit=2**62)
        self._lock = threading.Lock()
        self.asked = 0
        self.reused = 0

    def get_or_ask(self, key: str, ask: Callable[[], str], backend: str, model: str) -> str:
        """The cached answer under ``key``, or ``ask()``'s answer, stored before it is returned."""
        entry = self._cache.get(key)
        if entry is not None:
            with self._lock:
                self.reused += 1
            return entry["answer"]
        answer = ask()
        self._cache.set(key, {"answer": answer, "backend": backend, "model": model})
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
