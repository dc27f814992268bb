"""The deployments the worker may call: ``AZURE_OPENAI_POOL`` (or ``AZURE_OPENAI_ENDPOINT`` with each allowed
deployment), the endpoints' v1 route and the token scope they take."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from shared.catalogue import is_responses_only
from shared.constants import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE, SCOPE_SUFFIX
from shared.errors import ConfigurationError
from shared.jobs import Api, ServiceTier
from shared.settings._read import truthy


def check_endpoint(endpoint: str, setting: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ConfigurationError(f"{setting} must be an https URL, got {endpoint!r}.")
    # A Foundry project's OpenAI-compatible URL is often copied whole (.../api/projects/<p>/openai/v1): the route
    # is v1_base_url's to add, so a copy that carries it must not get it twice.
    for route in ("/openai/v1", "/openai"):
        endpoint = endpoint.removesuffix(route)
    return endpoint


def v1_base_url(endpoint: str) -> str:
    """The v1 data-plane route of an endpoint (a resource's, or a Foundry project's ``.../api/projects/<p>``):
    no api-version; ``model`` is the deployment name."""
    return f"{endpoint.rstrip('/')}/openai/v1/"


def is_project_endpoint(endpoint: str) -> bool:
    """Whether ``endpoint`` is a Foundry project's (``.../api/projects/<project>``), which takes only
    ``AI_FOUNDRY_SCOPE`` tokens."""
    return "/api/projects/" in urlsplit(endpoint).path


def token_scope(env: Mapping[str, str]) -> str:
    """AZURE_OPENAI_TOKEN_SCOPE: an https URL ending in /.default (what get_token takes for a resource)."""
    scope = env.get("AZURE_OPENAI_TOKEN_SCOPE", "").strip() or COGNITIVE_SERVICES_SCOPE
    parts = urlsplit(scope)
    well_formed = parts.scheme == "https" and parts.hostname and not (parts.query or parts.fragment)
    if not well_formed or not parts.path.endswith(SCOPE_SUFFIX) or any(c.isspace() for c in scope):
        raise ConfigurationError(f"App setting AZURE_OPENAI_TOKEN_SCOPE has {scope!r}: {_SCOPE_RULE}")
    return scope


_SCOPE_RULE = (
    f"use an https URL ending in {SCOPE_SUFFIX}: {COGNITIVE_SERVICES_SCOPE} (Azure OpenAI, the default) or "
    f"{AI_FOUNDRY_SCOPE} (a Foundry project endpoint)"
)


class PoolEntry(BaseModel):
    """One deployment the worker may send a job to (``AZURE_OPENAI_POOL``). A job's ``deployment`` selects
    the entries whose ``name`` or ``deployment`` equals it: entries sharing a name (say ``chat``: PTU, then
    Standard, then another region) serve the same jobs and fail over to each other. ``priority`` 1 is tried
    first; ``weight`` spreads calls among entries of the same priority."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str
    deployment: str = Field(min_length=1)
    name: str = ""
    priority: int = Field(default=1, ge=1)
    weight: float = Field(default=1.0, gt=0)
    api: Api = "chat"  # the API this deployment serves (a Responses-only model: "responses")
    background: bool = False  # Responses jobs that do not say run in background mode
    service_tier: ServiceTier | None = None  # sent when a job names no tier

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        try:
            return check_endpoint(value, "endpoint")
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc

    @property
    def label(self) -> str:
        """The name a job may use for it (its deployment name unless named otherwise)."""
        return self.name or self.deployment

    @model_validator(mode="after")
    def _api_serves_the_model(self) -> PoolEntry:
        if self.api == "chat" and is_responses_only(self.deployment):
            raise ValueError(
                f"deployment {self.deployment!r} is a Responses-only model (Azure refuses Chat Completions for it): "
                'declare "api": "responses" for it (AZURE_OPENAI_API=responses without a pool)'
            )
        if self.background and self.api != "responses":
            raise ValueError(f'deployment {self.deployment!r}: background mode needs "api": "responses"')
        return self


_POOL = TypeAdapter(list[PoolEntry])


def pool_from_env(env: Mapping[str, str]) -> tuple[PoolEntry, ...]:
    raw = env.get("AZURE_OPENAI_POOL", "").strip()
    if not raw:
        return ()
    try:
        entries = _POOL.validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:3])
        raise ConfigurationError(
            "App setting AZURE_OPENAI_POOL must be a JSON list of objects with endpoint and deployment (optional "
            f"name, priority, weight, api, background, service_tier): {problems}"
        ) from exc
    if not entries:
        raise ConfigurationError("App setting AZURE_OPENAI_POOL is an empty list: list a deployment, or unset it.")
    return tuple(sorted(entries, key=lambda e: e.priority))


def single_endpoint_pool(env: Mapping[str, str], endpoint: str, allowed: tuple[str, ...]) -> tuple[PoolEntry, ...]:
    """Without AZURE_OPENAI_POOL: each allowed deployment on AZURE_OPENAI_ENDPOINT, serving AZURE_OPENAI_API
    (with AZURE_OPENAI_BACKGROUND and AZURE_OPENAI_SERVICE_TIER as their defaults)."""
    api = env.get("AZURE_OPENAI_API", "").strip() or "chat"
    tier = env.get("AZURE_OPENAI_SERVICE_TIER", "").strip() or None
    background = truthy(env.get("AZURE_OPENAI_BACKGROUND"))
    try:
        return tuple(
            PoolEntry.model_validate(
                {"endpoint": endpoint, "deployment": d, "api": api, "background": background, "service_tier": tier}
            )
            for d in allowed
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        setting = {"api": "AZURE_OPENAI_API", "service_tier": "AZURE_OPENAI_SERVICE_TIER"}.get(
            where, "AZURE_OPENAI_API"
        )
        raise ConfigurationError(f"App setting {setting}: {problem['msg'].removeprefix('Value error, ')}") from exc
