"""What a deployment's *model* allows: reasoning families (gpt-5*, o1*, o3*, o4*) versus gpt-4.1-class chat models.

The family is decided from the model name, never the deployment name (a deployment can be called anything).

Reasoning models, as Azure answers them (sources: /work/shared/facts-models-and-quota.md, section 3):

- refuse ``max_tokens`` (use ``max_completion_tokens``), any ``temperature``/``top_p`` but 1, and ``stop``,
  ``logit_bias``, ``presence_penalty``, ``frequency_penalty``, ``logprobs``, ``top_logprobs``, each with Azure's
  400 body (``unsupported_parameter`` / ``unsupported_value``). One error per request, in ``REFUSED`` order.
- take ``reasoning_effort`` in ``REASONING_TOKENS`` (default ``medium``) and ``verbosity`` in ``VERBOSITIES``.
  Not modelled: per-model subsets (e.g. gpt-5.4-mini without ``minimal``, gpt-5.1 defaulting to ``none``).
- think first: a fixed number of reasoning tokens per effort (``REASONING_TOKENS``, the emulator's own numbers),
  spent out of ``max_completion_tokens`` before any answer, so a small budget returns HTTP 200 with empty content
  and ``finish_reason: "length"`` (the empty-output trap).

gpt-4.1-class models keep the emulator's earlier behaviour (``max_tokens``, ``temperature``, ``stop``... accepted).

Responses-only models (``catalogue.is_responses_only``: the gpt-5 ``-codex``/``-pro`` lines, codex-mini, o3-pro) are
reasoning models that refuse chat completions with Azure's 400 ``OperationNotSupported`` (``chat_refusal``); the
flex models (``catalogue.supports_flex``) are known with their versions. gpt-6* models follow the reasoning rules.

Our assumptions, not confirmed by a source: ``reasoning_effort`` on a non-reasoning model is refused as
``unsupported_parameter``; an unknown ``reasoning_effort``/``verbosity`` value is refused as ``invalid_value``
("Invalid value: 'x'. Supported values are: ..."); a non-reasoning model accepts only ``verbosity: "medium"``
(``unsupported_value``, as OpenAI's API answers gpt-4.1 publicly reported).
"""

from __future__ import annotations

import json
from typing import Any

from shared.catalogue import FLEX_MODELS, is_responses_only, split_version

# Deployment name -> the versioned model name Azure reports in ``model`` for it (facts file, section 1).
# o4-mini's version is illustrative: the facts file gives none for it.
KNOWN_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5.4-mini": "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano": "gpt-5.4-nano-2026-03-17",
    "gpt-5.5": "gpt-5.5-2026-04-24",
    "o4-mini": "o4-mini-2025-04-16",
    **{name: f"{name}-{version}" for name, version in FLEX_MODELS.items()},  # the flex models (catalogue)
}
REASONING_PREFIXES = ("gpt-5", "gpt-6", "o1", "o3", "o4")

# Azure's 400 for Chat Completions on a Responses-only model (facts-api-surface.md section 3), model substituted.
OPERATION_NOT_SUPPORTED = (
    "The chatCompletion operation does not work with the specified model, {model}. Please choose a different model "
    "and try again. You can learn more about which models can be used with each operation here: "
    "https://go.microsoft.com/fwlink/?linkid=2197993 ."
)

# reasoning_effort -> reasoning tokens spent before answering (deterministic; our choice, not Azure's numbers).
REASONING_TOKENS = {"none": 0, "minimal": 16, "low": 64, "medium": 256, "high": 1024, "xhigh": 2048}
DEFAULT_EFFORT = "medium"
VERBOSITIES = ("low", "medium", "high")

# Refused on reasoning models when present (not null), checked in this order; None = "only the default (1)".
REFUSED: dict[str, str | None] = {
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead.",
    "temperature": None,
    "top_p": None,
    **{
        name: f"Unsupported parameter: '{name}' is not supported with this model."
        for name in ("stop", "logit_bias", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")
    },
}


def model_for(deployment: str) -> str:
    """The versioned model a deployment named like a known model runs; otherwise the name itself."""
    return KNOWN_MODELS.get(deployment, deployment)


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` (e.g. ``gpt-5.4-mini-2026-03-17``, ``o4-mini``, ``codex-mini``) follows the reasoning rules."""
    return model.strip().lower().startswith(REASONING_PREFIXES) or is_responses_only(model)


def chat_refusal(model: str) -> dict[str, Any] | None:
    """Azure's ``OperationNotSupported`` body when ``model`` is served through the Responses API only."""
    if not is_responses_only(model):
        return None
    name, _ = split_version(model)
    return {"error": {"code": "OperationNotSupported", "message": OPERATION_NOT_SUPPORTED.format(model=name)}}


def param_error(code: str, param: str, message: str) -> dict[str, Any]:
    """An Azure 400 body for a parameter, in the order Azure writes its keys."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def format_value(value: Any) -> str:
    """A value as the service quotes it in messages: ``0``, ``0.5``, ``2`` (integral floats without ``.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value)


def listed(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _choice(body: dict[str, Any], param: str, allowed: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    value = body.get(param)
    if value is None or value in allowed:
        return None
    message = f"Invalid value: '{format_value(value)}'. Supported values are: {listed(allowed)}."
    return param_error("invalid_value", param, message)


def _reasoning_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    for param, message in REFUSED.items():
        value = body.get(param)
        if value is None:
            continue
        if message is not None:
            return param_error("unsupported_parameter", param, message)
        if value != 1 or isinstance(value, bool):
            return param_error(
                "unsupported_value",
                param,
                f"Unsupported value: '{param}' does not support {format_value(value)} with this model. "
                "Only the default (1) value is supported.",
            )
    return None


def _chat_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    if body.get("reasoning_effort") is not None:
        message = "Unsupported parameter: 'reasoning_effort' is not supported with this model."
        return param_error("unsupported_parameter", "reasoning_effort", message)
    verbosity = body.get("verbosity")
    if verbosity is not None and verbosity != "medium":
        message = (
            f"Unsupported value: 'verbosity' does not support '{format_value(verbosity)}' with this model. "
            "Supported values are: 'medium'."
        )
        return param_error("unsupported_value", "verbosity", message)
    return None


def refusal(body: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The 400 body ``model`` answers ``body`` with, or None if the model takes these parameters."""
    if not is_reasoning_model(model):
        return _chat_refusal(body)
    return (
        _reasoning_refusal(body)
        or _choice(body, "reasoning_effort", list(REASONING_TOKENS))
        or _choice(body, "verbosity", VERBOSITIES)
    )


def reasoning_tokens(body: dict[str, Any], model: str) -> int:
    """Reasoning tokens ``model`` wants to spend on an accepted ``body`` (before its budget caps them)."""
    if not is_reasoning_model(model):
        return 0
    return REASONING_TOKENS[body.get("reasoning_effort") or DEFAULT_EFFORT]
