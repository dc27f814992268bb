"""The doctor's model call, one per API a deployment may declare (``PoolEntry.api``): a 1-token chat completion,
or a minimal Responses call (a tiny input, a small ``max_output_tokens``, ``store=False`` so nothing is kept).
Each returns what the answer says about the model; each raises what the SDK raised, for ``openai_probe`` to map
to the fix. ``refuses_chat`` recognises Azure's answer to Chat Completions on a Responses-only model, and
``responses_fix`` says how to declare such a deployment."""

from __future__ import annotations

import openai
from openai import AsyncOpenAI

from shared.jobs import Api

# Enough for a reasoning model to show its reasoning tokens; at most this many are billed. The Responses API's
# smallest max_output_tokens is 16 as well.
PROBE_TOKENS = 16
REASONING_FAMILIES = ("gpt-5", "o1", "o3", "o4")
CHAT_BUDGET = "max_tokens is sent as that"
RESPONSES_BUDGET = "sent as max_output_tokens, as max_tokens is"
# What the service says, lower case, when a model takes the Responses API only: Azure's 400 OperationNotSupported
# carries the first; OpenAI's own 404 says the second (whether Azure v1 ever sends it is unconfirmed, so both count).
CHAT_REFUSALS = (
    "the chatcompletion operation does not work with the specified model",
    "only supported in v1/responses",
)


def describe(model: str, reasoning_tokens: int, budget: str) -> str:
    """The model that answered, and what a reasoning model means for jobs (``budget``: how the job's
    max_completion_tokens goes out)."""
    if reasoning_tokens or model.startswith(REASONING_FAMILIES):
        return (
            f"model {model}, a reasoning model ({reasoning_tokens} reasoning tokens in the probe): jobs must use "
            f"max_completion_tokens ({budget}) and may not set temperature, top_p or stop"
        )
    return f"model {model}"


async def chat_once(deployment: str, client: AsyncOpenAI) -> str:
    """One chat completion on ``deployment``; describe the model that answered."""
    completion = await client.chat.completions.create(
        model=deployment,
        messages=[{"role": "user", "content": "ping"}],
        max_completion_tokens=PROBE_TOKENS,  # reasoning models refuse max_tokens
    )
    details = completion.usage.completion_tokens_details if completion.usage else None
    return describe(completion.model, (details.reasoning_tokens if details else None) or 0, CHAT_BUDGET)


async def responses_once(deployment: str, client: AsyncOpenAI) -> str:
    """One Responses call on ``deployment``, stored nowhere; describe the model that answered. A reasoning model
    may spend the whole budget thinking (status ``incomplete``): the call was still served, which is the point."""
    response = await client.responses.create(
        model=deployment, input="ping", max_output_tokens=PROBE_TOKENS, store=False
    )
    details = response.usage.output_tokens_details if response.usage else None
    reasoning_tokens = (details.reasoning_tokens if details else None) or 0
    return describe(response.model, reasoning_tokens, RESPONSES_BUDGET)


async def probe_once(api: Api, deployment: str, client: AsyncOpenAI) -> str:
    """The call of the API the deployment declares."""
    if api == "responses":
        return f"through the Responses API, {await responses_once(deployment, client)}"
    return await chat_once(deployment, client)


def refuses_chat(exc: Exception) -> bool:
    """Whether a chat call's error says the model is served through the Responses API only."""
    if not isinstance(exc, openai.BadRequestError | openai.NotFoundError):
        return False
    body = exc.body if isinstance(exc.body, dict) else {}
    said = f"{body.get('message', '')} {exc.message}".lower()
    return exc.code == "OperationNotSupported" or any(marker in said for marker in CHAT_REFUSALS)


def responses_fix(deployment: str, pooled: bool, endpoint: str | None = None) -> str:
    """How to declare ``deployment`` as a Responses deployment, in the setting that declares it."""
    if pooled:
        on = f" on {endpoint}" if endpoint else ""
        return (
            f'add "api": "responses" to the AZURE_OPENAI_POOL entry of deployment {deployment}{on} (infra/: azd env '
            "set AZURE_OPENAI_API responses, then azd provision)"
        )
    return (
        "set AZURE_OPENAI_API=responses (every deployment of AZURE_OPENAI_ENDPOINT is then called through the "
        'Responses API; to mix the two APIs, list the deployments in AZURE_OPENAI_POOL, each with its "api")'
    )
