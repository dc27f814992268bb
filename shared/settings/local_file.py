"""A local.settings.json's ``Values``, read and applied the way Core Tools applies them (a variable already
set wins): for the local runner, the emulated host and the doctor."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from shared.errors import ConfigurationError


def read_local_settings(path: Path) -> dict[str, str]:
    """The non-empty ``Values`` of a local.settings.json; raises ConfigurationError saying what is wrong.

    Core Tools exports these as environment variables, and a variable already set wins; callers
    that need that apply them with ``os.environ.setdefault``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("Values", {}), dict):
        raise ConfigurationError(f'{path} must be an object with a "Values" object.')
    if document.get("IsEncrypted"):
        raise ConfigurationError(f"{path} is encrypted: run `func settings decrypt` first.")
    values = document.get("Values", {})
    return {str(k): str(v) for k, v in values.items() if v is not None and str(v) != ""}


@contextlib.contextmanager
def overlaid(values: Mapping[str, str]) -> Iterator[list[str]]:
    """Put settings-file values into the environment for a block only (azure-identity reads it directly).

    Like Core Tools, a variable already in the environment wins; yields the names applied. Unlike
    ``apply_local_settings`` it takes them out again: the doctor runs in-process (tests, ``python -m
    shared``) and must leave the environment as it found it."""
    added = [name for name in values if name not in os.environ]
    for name in added:
        os.environ[name] = values[name]
    try:
        yield added
    finally:
        for name in added:
            os.environ.pop(name, None)


def apply_local_settings(path: Path, env: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """Export a local.settings.json's Values into ``env`` (default ``os.environ``) as Core Tools does:
    a variable already set wins. Returns the names it set; raises ConfigurationError like
    ``read_local_settings``."""
    target = os.environ if env is None else env
    added = []
    for name, value in read_local_settings(path).items():
        if name not in target:
            target[name] = value
            added.append(name)
    return added
