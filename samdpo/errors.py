"""Exception types raised for bad user input (files, settings)."""

from __future__ import annotations


class SamdpoError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""


class DataError(SamdpoError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class ConfigError(SamdpoError):
    """A setting is missing or out of range."""
