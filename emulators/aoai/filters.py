"""Azure's content filter as both APIs report it (facts-api-surface.md section 5), triggered by the configured
strings: ``EmulatorConfig.filter_trigger_prompt`` anywhere in the prompt blocks it before generation;
``filter_trigger_output`` in the generated text cuts the answer where the trigger starts (the text before it is the
partial answer, possibly empty). The flagged category and severity are ``filter_category``/``filter_severity``.

- Chat, prompt blocked: 400 with Azure's captured body (singular ``content_filter_result`` in ``innererror``).
- Chat, answer cut: 200, ``finish_reason: "content_filter"``, the partial content, the choice's
  ``content_filter_results`` with the category flagged; ``prompt_filter_results`` as on every answer.
- Responses, prompt blocked: 400 ``content_filter`` (type ``invalid_request_error``) with
  ``content_filters: [{blocked: true, source_type: "prompt", content_filter_results}]`` in the error, no innererror.
- Responses, answer cut: ``status: "incomplete"``, ``incomplete_details.reason: "content_filter"``, the partial text,
  and a ``{blocked: true, source_type: "completion", ...}`` entry in ``content_filters``.

Our assumptions (unconfirmed): the Responses prompt 400 carries the chat message and ``param: null``; the filtered
Responses payload (the facts call it unconfirmed) is the success items' shape with ``blocked: true``; successful
live responses carry two non-blocked entries (the SPEC marks ``content_filters`` required), batch ones ``null``.
"""

from __future__ import annotations

from typing import Any

from emulators.aoai.config import EmulatorConfig

CATEGORIES = ("hate", "self_harm", "sexual", "violence")
FILTERED_PROMPT = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify "
    "your prompt and retry. To learn more about our content filtering policies please read our documentation: "
    "https://go.microsoft.com/fwlink/?linkid=2198766"
)
NOT_DETECTED = {"filtered": False, "detected": False}


def _categories(config: EmulatorConfig, flagged: bool) -> dict[str, Any]:
    results: dict[str, Any] = {name: {"filtered": False, "severity": "safe"} for name in CATEGORIES}
    if flagged:
        results[config.filter_category] = {"filtered": True, "severity": config.filter_severity}
    return results


def prompt_results(config: EmulatorConfig, flagged: bool = False) -> dict[str, Any]:
    """A prompt's ``content_filter_results``: the four categories and the jailbreak check."""
    return {**_categories(config, flagged), "jailbreak": dict(NOT_DETECTED)}


def completion_results(config: EmulatorConfig, flagged: bool = False) -> dict[str, Any]:
    """An answer's ``content_filter_results``: the four categories and the protected-material checks."""
    return {
        **_categories(config, flagged),
        "protected_material_text": dict(NOT_DETECTED),
        "protected_material_code": dict(NOT_DETECTED),
    }


def prompt_blocked(config: EmulatorConfig, prompt: str) -> bool:
    return bool(config.filter_trigger_prompt) and config.filter_trigger_prompt in prompt


def cut(config: EmulatorConfig, text: str) -> str | None:
    """The partial answer the output filter leaves of ``text`` (before the trigger), or None when it passes."""
    trigger = config.filter_trigger_output
    return text[: text.index(trigger)] if trigger and trigger in text else None


def chat_prompt_refusal(config: EmulatorConfig) -> dict[str, Any]:
    """The chat 400 body, key for key as captured (openai/openai-dotnet#55; Azure/azure-sdk-for-go#23936)."""
    inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": prompt_results(config, flagged=True)}
    return {
        "error": {
            "message": FILTERED_PROMPT,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": inner,
        }
    }


def chat_prompt_annotations(config: EmulatorConfig) -> list[dict[str, Any]]:
    return [{"prompt_index": 0, "content_filter_results": prompt_results(config)}]


def responses_prompt_refusal(config: EmulatorConfig) -> dict[str, Any]:
    entry = {"blocked": True, "source_type": "prompt", "content_filter_results": prompt_results(config, flagged=True)}
    return {
        "error": {
            "message": FILTERED_PROMPT,
            "type": "invalid_request_error",
            "param": None,
            "code": "content_filter",
            "content_filters": [entry],
        }
    }


def _offsets(length: int) -> dict[str, int]:
    return {"start_offset": 0, "end_offset": length, "check_offset": 0}


def responses_entries(config: EmulatorConfig, prompt: str, text: str, blocked: bool) -> list[dict[str, Any]]:
    """A response's ``content_filters``: the prompt's entry and the completion's (``blocked`` when cut)."""
    return [
        {
            "blocked": False,
            "source_type": "prompt",
            "content_filter_results": prompt_results(config),
            "content_filter_offsets": _offsets(len(prompt)),
        },
        {
            "blocked": blocked,
            "source_type": "completion",
            "content_filter_results": completion_results(config, flagged=blocked),
            "content_filter_offsets": _offsets(len(text)),
        },
    ]
