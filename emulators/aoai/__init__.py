"""Azure OpenAI data-plane emulator: chat completions behind Entra ID auth, RBAC, quotas and faults.

It answers what the real service answers to the openai SDK, including the awkward parts the
worker must survive: disabled keys, wrong audiences, role assignments that take minutes to
propagate, 429s with long ``retry-after``, 5xx, dropped connections, stalls and content filters.
Answers are a pure function of the request (``answer_for``), so tests can assert exact content.

Run standalone: ``python -m emulators.aoai --port 0 --grant <oid>`` prints the endpoint to export.
Control API (no auth; the real service has no ``/_emulator`` prefix): see ``app.create_app``.

A deployment's *model* decides its rules: reasoning families (gpt-5*, o1*, o3*, o4*; ``is_reasoning_model``)
refuse ``max_tokens``, non-default ``temperature``/``top_p``, ``stop``, ``logit_bias``... with Azure's 400 bodies
and spend ``REASONING_TOKENS[reasoning_effort]`` out of ``max_completion_tokens`` before answering (a small budget
gives HTTP 200, empty content, ``finish_reason: "length"``); gpt-4.1-class models take the classic parameters.
Admission charges prompt estimate + ``max_completion_tokens`` (or ``max_tokens``, or the configured default), and
every data-plane answer naming a deployment carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.
Each deployment has its own limits and window; each emulator instance is one resource (start several for regions).
A deployment can be taken down for a while (``Deployment.outage``: 503, stall or dropped connection) and can show
two reported quirks: ``-1``/``0`` rate-limit headers and 429s without ``retry-after`` (see ``config.Deployment``).
Chat completions are also served on a Foundry project's route (``/api/projects/<project>/openai/v1/...``): the same
deployments, but only for tokens with the ``https://ai.azure.com`` audience (its 401 names that audience).

Modules: ``config`` (what can be tuned), ``models`` (known models and each family's rules), ``answers``
(deterministic replies and token counts), ``rates`` (sliding-window quotas and their headers), ``state`` (the live
state), ``dataplane`` (auth, validation, error bodies and the completion, which both route modules use), ``app`` (the
aiohttp app and its chat route, ``start``), ``batches`` and ``batch_routes`` (Files and Batches) and ``cli``
(``main``). This package re-exports what tests, bench and ``make run`` use.
"""

from emulators.aoai.answers import (
    answer_for,
    count_prompt_tokens,
    count_text_tokens,
    estimate_request_tokens,
    fill_schema,
)
from emulators.aoai.app import Running, start
from emulators.aoai.cli import main
from emulators.aoai.config import OUTAGE_MODES, Deployment, EmulatorConfig, Outage, OutageMode
from emulators.aoai.dataplane import STATE
from emulators.aoai.models import KNOWN_MODELS, REASONING_TOKENS, is_reasoning_model, is_responses_only, supports_flex
from emulators.aoai.state import EmulatorState

__all__ = [
    "KNOWN_MODELS",
    "OUTAGE_MODES",
    "REASONING_TOKENS",
    "STATE",
    "Deployment",
    "EmulatorConfig",
    "EmulatorState",
    "Outage",
    "OutageMode",
    "Running",
    "answer_for",
    "count_prompt_tokens",
    "count_text_tokens",
    "estimate_request_tokens",
    "fill_schema",
    "is_reasoning_model",
    "is_responses_only",
    "main",
    "start",
    "supports_flex",
]
