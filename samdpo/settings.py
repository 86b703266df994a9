"""Settings passed on the command line as JSON objects (how Snakemake rules hand config sections over)."""

from __future__ import annotations

import json
from typing import Any

from samdpo.errors import ConfigError


def json_object(text: str | None, option: str) -> dict[str, Any]:
    """Parse ``text`` as a JSON object; empty -> {}. Errors name the command-line ``option``."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object")
    return value
