"""Typed errors. Each one says what went wrong and what to do about it."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class for everything the worker raises on purpose."""


class ConfigurationError(WorkerError):
    """An app setting is missing or malformed; the message names the setting."""
