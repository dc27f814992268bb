"""One credential, one Azure OpenAI (v1) client and the storage clients, created once per process.

Everything authenticates through a single async ``DefaultAzureCredential``: the Function
App's managed identity in Azure, the developer's ``az login`` on a laptop. The same code
runs in both places; only the environment differs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue.aio import QueueServiceClient
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from shared import budget, telemetry
from shared.pacing import Pacer
from shared.routing import Router
from shared.settings import Settings, TelemetrySettings, v1_base_url
from shared.storage_clients import StorageEndpoints, create_credential

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything the worker holds for the life of the process."""

    settings: Settings
    credential: DefaultAzureCredential
    openai: AsyncOpenAI
    queues: QueueServiceClient
    blobs: BlobServiceClient
    identity: dict[str, Any]  # ids from the token in use (never the token), filled on first call
    in_flight: set[str] = field(default_factory=set)
    pacer: Pacer = field(default_factory=Pacer)  # the admission gates of this process (shared/pacing/)
    # The clients of the pool's other endpoints, by endpoint (``openai`` serves AZURE_OPENAI_ENDPOINT).
    other_clients: dict[str, AsyncOpenAI] = field(default_factory=dict)
    router: Router = field(init=False)  # the pool's circuits and failover (shared/routing.py)
    _ready: set[str] = field(default_factory=set)
    _no_retries: dict[int, AsyncOpenAI] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.router = Router(self.pacer)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        settings = Settings.from_env(env)
        telemetry.configure(
            TelemetrySettings.from_env(env)
        )  # first use: decided once per process, before the clients exist
        credential = create_credential(env)
        storage = StorageEndpoints.from_settings(env=env)
        identity: dict[str, Any] = {}
        blobs = storage.blob_service(credential)
        share = None
        if settings.pacing_shared_budget:  # one ledger per deployment in the worker-only container
            share = budget.sharing(blobs.get_container_client(settings.staging_container))
        pacer = Pacer(max_hold=settings.throttle_max_delay_seconds, share=share)
        # One token serves every resource of the pool: one scope (AZURE_OPENAI_TOKEN_SCOPE) for all of them.
        provider = _token_provider(credential, identity, settings.token_scope)
        others = {e.endpoint for e in settings.pool} - {settings.openai_endpoint}
        return cls(
            settings=settings,
            credential=credential,
            openai=create_openai_client(settings, provider, pacer=pacer),
            queues=storage.queue_service(credential),
            blobs=blobs,
            identity=identity,
            pacer=pacer,
            other_clients={o: create_openai_client(settings, provider, pacer=pacer, endpoint=o) for o in others},
        )

    def client(self, endpoint: str, *, sdk_retries: bool = True) -> AsyncOpenAI:
        """The v1 client for a pool entry's endpoint; without ``sdk_retries`` a copy (same connections)
        that makes no retries of its own, for a call that can fail over to another deployment instead."""
        client = self.other_clients.get(endpoint, self.openai)
        if sdk_retries:
            return client
        if id(client) not in self._no_retries:
            self._no_retries[id(client)] = client.with_options(max_retries=0)
        return self._no_retries[id(client)]

    def results(self) -> ContainerClient:
        return self.blobs.get_container_client(self.settings.results_container)

    async def ensure_once(self, key: str, create: Callable[[], Awaitable[Any]]) -> None:
        """Create a container or queue the first time this process needs it (infra normally has)."""
        if key in self._ready:
            return
        with contextlib.suppress(ResourceExistsError):
            await create()
        self._ready.add(key)

    async def close(self) -> None:
        await self.openai.close()
        for client in self.other_clients.values():
            await client.close()
        await self.queues.close()
        await self.blobs.close()
        await self.credential.close()


def create_openai_client(
    settings: Settings,
    token_provider: Callable[[], Awaitable[str]],
    *,
    max_retries: int | None = None,
    pacer: Pacer | None = None,
    endpoint: str | None = None,
) -> AsyncOpenAI:
    """The Azure OpenAI v1 client: ``{endpoint}/openai/v1/`` (default AZURE_OPENAI_ENDPOINT; a Foundry project's
    endpoint too), authenticated with an Entra token for ``settings.token_scope``.

    The token provider goes in ``api_key``: the plain ``AsyncOpenAI`` awaits it on every attempt and
    sends ``Authorization: Bearer <token>``. (The same callable given to ``AsyncAzureOpenAI`` as
    ``api_key`` would be sent as an ``api-key`` header, which keyless Azure OpenAI refuses.)

    With a ``pacer``, every response (the SDK's own retries included) feeds its admission gates.
    """
    hooks: list[Callable[[Any], Awaitable[None]]] = [pacer.on_response] if pacer is not None else []
    if telemetry.current().enabled:  # every 429 counted, the SDK's own retries included (they raise nothing)
        hooks.append(_count_throttled)
    return AsyncOpenAI(
        base_url=v1_base_url(endpoint) if endpoint else settings.openai_base_url,
        api_key=token_provider,
        timeout=settings.openai_timeout,
        max_retries=settings.openai_max_retries if max_retries is None else max_retries,
        http_client=DefaultAsyncHttpxClient(
            event_hooks={"request": [pacer.on_request] if pacer is not None else [], "response": hooks}
        )
        if hooks
        else None,
    )


async def _count_throttled(response: Any) -> None:
    """httpx response hook: count a 429 by the deployment it was for (the ``model`` of the v1 request body)."""
    if response.status_code != 429:
        return
    try:
        deployment = str(json.loads(response.request.content).get("model") or "unknown")
    except (ValueError, AttributeError, TypeError, RuntimeError):  # RuntimeError: a streamed upload (Files API)
        deployment = "unknown"
    telemetry.current().throttled(deployment)


def _token_provider(
    credential: DefaultAzureCredential, identity: dict[str, Any], scope: str
) -> Callable[[], Awaitable[str]]:
    """The SDK's caching provider for ``scope``, noting once which credential answered and for whom."""
    inner = get_bearer_token_provider(credential, scope)

    async def provider() -> str:
        token = await inner()
        if not identity:
            identity.update(identity_from_token(token))
            served_by = getattr(credential, "_successful_credential", None) or credential
            logger.info(
                "Azure OpenAI token from %s for principal %s (%s)",
                type(served_by).__name__,
                identity.get("oid", "?"),
                identity.get("upn") or identity.get("appid", "?"),
            )
        return token

    return provider


def identity_from_token(token: str) -> dict[str, Any]:
    """Who the token says we are: the ids needed to grant a role, never the token itself."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {"oid": "unknown"}
    return {k: claims[k] for k in ("oid", "appid", "upn", "tid", "aud", "idtyp") if k in claims}


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, created on first use so a missing setting fails one invocation
    with a clear error instead of breaking function indexing."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_env()
    return _runtime


async def close_runtime() -> None:
    """Close the process-wide clients (hosts that can tell us they are stopping call this)."""
    global _runtime
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        await runtime.close()
