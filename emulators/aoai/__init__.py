"""Azure OpenAI data-plane emulator: chat completions and the Responses API behind Entra ID auth, RBAC, quotas and
faults.

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

The Responses API (``responses``): ``POST /openai/v1/responses``, ``GET|DELETE /openai/v1/responses/{id}``,
``POST /openai/v1/responses/{id}/cancel`` (also on the project route), through the same gate as chat (``gate``: auth,
deployment, outage, body checks, tier, faults, flex capacity, one quota per deployment across both APIs and every
tier). Models the catalogue calls Responses-only (``is_responses_only``: the ``-codex`` and ``-pro`` lines, o3-pro...)
refuse chat completions with Azure's 400 ``OperationNotSupported``. ``service_tier`` (body, or the overriding
``x-ms-service-tier`` header) is echoed as served on both APIs; flex only on ``supports_flex`` models. Global Batch
takes ``/v1/responses`` lines too. Knobs (``EmulatorConfig`` unless said; ``PATCH /_emulator/config`` or
``PATCH /_emulator/deployments/{d}``):

- ``background_queued_seconds`` (0.2) and ``background_seconds`` (2): a ``background: true`` response is ``queued``,
  then ``in_progress``, then done; a prompt containing ``background_fail_trigger`` (``TRIGGER_BACKGROUND_FAIL``) ends
  ``failed`` (``server_error``), one containing ``background_stuck_trigger`` (``TRIGGER_BACKGROUND_STUCK``) never
  leaves ``in_progress`` until cancelled.
- ``Deployment.service_tier`` (``default``): the tier ``auto`` means for it (``default`` or ``priority``).
- ``Deployment.flex_unavailable_until`` (epoch seconds, None): until then flex requests get 429
  ``ResourceUnavailable`` (``tiers.FLEX_UNAVAILABLE``: not billed, no ``retry-after``; the quota's 429 has code
  ``"429"``).
- ``filter_trigger_prompt`` / ``filter_trigger_output`` (both APIs, ``filters``) and ``filter_category`` (``hate``) /
  ``filter_severity`` (``high``): the category the filter reports.

Stats (``GET /_emulator/stats``): ``responses`` (created, background, retrieves, cancels, deletes, stored, each by
tier), ``by_tier`` (answers and tokens per tier with its ``price`` multiplier: flex 0.5, priority 2 assumed),
``flex_unavailable`` (flex 429s; ``throttled`` counts the quota's only). ``docs/emulator-responses.md`` shows them.

Modules: ``config`` (what can be tuned), ``catalogue`` (which models are Responses-only or take flex: pure, for the
worker to reuse), ``models`` (known models and each family's rules), ``answers`` (deterministic replies and token
counts), ``rates`` (sliding-window quotas and their headers), ``tiers`` (service tiers), ``filters`` (the content
filter's bodies), ``state`` (the live state), ``dataplane`` (auth, validation, error bodies and the chat completion),
``gate`` (the one path of a model call), ``app`` (the aiohttp app and its chat route, ``start``), ``response_objects``,
``response_store`` and ``responses`` (the Responses API), ``batches`` and ``batch_routes`` (Files and Batches) and
``cli`` (``main``). This package re-exports what tests, bench and ``make run`` use.
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
from emulators.aoai.models import KNOWN_MODELS, REASONING_TOKENS, is_reasoning_model
from emulators.aoai.state import EmulatorState
from shared.catalogue import is_responses_only, supports_flex

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
