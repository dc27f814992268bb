"""Azure OpenAI data-plane emulator: chat completions behind Entra ID auth, RBAC, quotas and faults.

It answers what the real service answers to the openai SDK, including the awkward parts the
worker must survive: disabled keys, wrong audiences, role assignments that take minutes to
propagate, 429s with long ``retry-after``, 5xx, dropped connections, stalls and content filters.
Answers are a pure function of the request (``answer_for``), so tests can assert exact content.

Run standalone: ``python -m emulators.aoai --port 0 --grant <oid>`` prints the endpoint to export.
Control API (no auth; the real service has no ``/_emulator`` prefix): see ``app.create_app``.

Modules: ``config`` (what can be tuned), ``answers`` (deterministic replies and token counts),
``rates`` (sliding-window quotas), ``state`` (the live state), ``app`` (the aiohttp app,
``start``) and ``cli`` (``main``). This package re-exports what tests, bench and ``make run`` use.
"""

from emulators.aoai.answers import (
    answer_for,
    count_prompt_tokens,
    count_text_tokens,
    estimate_request_tokens,
    fill_schema,
)
from emulators.aoai.app import STATE, Running, start
from emulators.aoai.cli import main
from emulators.aoai.config import EmulatorConfig
from emulators.aoai.state import EmulatorState

__all__ = [
    "STATE",
    "EmulatorConfig",
    "EmulatorState",
    "Running",
    "answer_for",
    "count_prompt_tokens",
    "count_text_tokens",
    "estimate_request_tokens",
    "fill_schema",
    "main",
    "start",
]
