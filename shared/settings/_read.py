"""How an app setting's text becomes a value: the one place the process environment is read.

Each reader takes the mapping to read (the callers default it to ``environment()``) and raises
ConfigurationError naming the setting to fix."""

from __future__ import annotations

import os
from collections.abc import Mapping

from shared.constants import NAME_RULE, is_valid_name
from shared.errors import ConfigurationError


def environment() -> Mapping[str, str]:
    """The process environment, where the host puts the app settings: the one place it is read."""
    return os.environ


def csv(value: str | None) -> tuple[str, ...]:
    """A comma-separated setting's items, blanks dropped."""
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"App setting {name}={raw!r} must be a whole number.") from exc
    if value < 0:
        raise ConfigurationError(f"App setting {name} must not be negative (got {value}).")
    return value


def storage_name(env: Mapping[str, str], setting: str, default: str | None = None) -> str:
    """A queue or container name, checked against storage's naming rule."""
    name = env.get(setting, "").strip() or default or ""
    if not is_valid_name(name):
        raise ConfigurationError(f"App setting {setting} has {name!r}: queue and container names are {NAME_RULE}.")
    return name
