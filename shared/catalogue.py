"""Which models Azure serves through the Responses API only, and which take flex processing: pure predicates on a
model (or deployment) name, the one copy of these facts that the worker's settings, its doctor and the emulator
all read.

Sources: the team's facts-api-surface.md, sections 3 (Responses-only models) and 4 (flex). A name may carry
its version (``gpt-5.1-codex-2025-11-13``) or not (``gpt-5.1-codex``); case and a trailing version are ignored.
"""

from __future__ import annotations

import re

# Azure's reasoning.md tables plus gpt-5.4-pro (a newer doc). o1-pro and gpt-5.5-pro are unconfirmed; gpt-5.5-pro is
# caught by the family rule below, o1-pro is not listed (assumed to keep Chat Completions).
RESPONSES_ONLY_MODELS = (
    "gpt-5.3-codex",
    "gpt-5.2-codex",
    "gpt-5.1-codex",
    "gpt-5.1-codex-max",
    "gpt-5.1-codex-mini",
    "gpt-5-pro",
    "gpt-5-codex",
    "codex-mini",
    "o3-pro",
    "gpt-5.4-pro",
)
# Flex processing (preview): Global Standard deployments of these model versions only.
FLEX_MODELS = {
    "gpt-5.6-sol": "2026-07-09",
    "gpt-5.6-luna": "2026-07-09",
    "gpt-5.6-terra": "2026-07-09",
    "gpt-6-astra": "2026-09-03",
}
_VERSION = re.compile(r"-(\d{4}-\d{2}-\d{2})$")


def split_version(model: str) -> tuple[str, str | None]:
    """``("gpt-5.6-sol", "2026-07-09")`` for ``gpt-5.6-sol-2026-07-09``; ``(name, None)`` when it has no version."""
    name = model.strip().lower()
    match = _VERSION.search(name)
    return (name[: match.start()], match.group(1)) if match else (name, None)


def is_responses_only(model: str) -> bool:
    """Whether Azure refuses Chat Completions for ``model`` (400 ``OperationNotSupported``): the listed models, and
    any ``-pro`` or ``-codex`` model of the gpt-5 line (gpt-5.5-pro, gpt-5.4-codex...), ``codex-mini*``."""
    name, _ = split_version(model)
    if name in RESPONSES_ONLY_MODELS or name.startswith("codex-mini"):
        return True
    return name.startswith("gpt-5") and (name.endswith("-pro") or "-codex" in name)


def supports_flex(model: str) -> bool:
    """Whether ``model`` takes ``service_tier: "flex"``: a listed model, at its listed version when one is given."""
    name, version = split_version(model)
    return name in FLEX_MODELS and version in (None, FLEX_MODELS[name])
