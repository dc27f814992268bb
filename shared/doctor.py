"""``python -m shared doctor``: find what is wrong with a keyless setup, the way it actually breaks.

It reads the settings the worker reads (the environment, plus ``local.settings.json`` ``Values``
the way Core Tools applies them: a variable already in the environment wins) and runs the
checks below in order. Each returns a :class:`Check` (ok / fail / warn / skip, what was seen,
and a one-line fix); a check that needs an earlier one that failed is skipped, saying why.

- settings:       ``Settings.from_env`` accepts them.
- credential:     which credential of ``DefaultAzureCredential``'s chain served a token, why
                  the ones before it did not (their own exceptions), and who the token is for.
- scope:          the token's ``aud`` is Azure OpenAI's audience.
- openai:         a 1-token chat completion on the configured deployment; 401/403/404 and
                  connection errors are mapped to the setting or role to fix (``--wait``
                  retries PermissionDenied while a role assignment propagates).
- storage:        which connection form is in use; keys, SAS, dev storage in Azure,
                  ``__credential`` set locally.
- storage-access: send+delete a queue message, upload+read+delete a ``_doctor/<uuid>`` blob.
- environment:    a container with no way to get a token, and what to do about it.
- keys:           key or secret settings that the worker ignores and should not exist.

Nothing here prints a token, a key or a secret: only setting names and token claims that
identify a principal (oid, appid/upn, tid, aud).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, cast
from urllib.parse import urlsplit

import openai
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
from openai import AsyncAzureOpenAI

from shared.connections import StorageEndpoints, create_credential, identity_from_token
from shared.constants import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    BLOB_OWNER_ROLE,
    COGNITIVE_SERVICES_SCOPE,
    OPENAI_USER_ROLE,
    QUEUE_CONTRIBUTOR_ROLE,
    STORAGE_CONNECTION,
    STORAGE_PERMISSION_CODES,
    is_development_shorthand,
)
from shared.errors import ConfigurationError
from shared.settings import Settings, read_local_settings

Status = Literal["ok", "fail", "warn", "skip"]

EXPECTED_AUDIENCE = COGNITIVE_SERVICES_SCOPE.removesuffix("/.default")
DEFAULT_WAIT_SECONDS = 600.0
MAX_WAIT_SECONDS = 3600.0
WAIT_INTERVALS = (5.0, 7.0, 10.0)  # then 10 s each time
PROBE_TEXT = "python -m shared doctor: storage probe (deleted at once)"
MI_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "IMDS_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE")
AZURE_HOST_VARIABLES = ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID")  # set by App Service / Functions
PLATFORM_PREFIXES = ("WEBSITE_", "CONTAINER_", "GPG_")  # App Service / image variables, not app settings
SECRET_NAMES = ("AZURE_CLIENT_SECRET", "AZURE_OPENAI_AD_TOKEN", "AZURE_PASSWORD")
_KEY_VALUE = re.compile(r"(^|;)\s*(AccountKey|SharedAccessSignature|SharedAccessKey)\s*=|[?&;]sig=", re.IGNORECASE)
_CONTAINER_CGROUP = re.compile(r"docker|kubepods|containerd|libpod|lxc", re.IGNORECASE)


# --- Records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what was seen, and how to fix it."""

    check: str  # stable id for scripts: settings, credential, scope, openai, storage, ...
    title: str
    status: Status
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Attempt:
    """What one credential of the chain did, in the SDK's own words."""

    credential: str
    outcome: Literal["served", "unavailable", "failed"]
    message: str = ""


@dataclass(frozen=True)
class Options:
    settings_file: Path | None = None
    scope: str = COGNITIVE_SERVICES_SCOPE
    wait: float = 0.0  # seconds to keep retrying PermissionDenied; 0 = do not wait
    azure: bool = False  # judge the settings as Azure app settings even without an Azure environment
    openai_resource_id: str | None = None


@dataclass
class Context:
    """What the checks learn, in order; later checks read what earlier ones found."""

    env: dict[str, str]
    options: Options
    source: str
    shadowed: list[str] = field(default_factory=list)
    settings: Settings | None = None
    credential: DefaultAzureCredential | None = None
    attempts: list[Attempt] = field(default_factory=list)
    served_by: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    storage: StorageEndpoints | None = None
    storage_problem: str | None = None  # why storage access is not probed
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    @property
    def has_token(self) -> bool:
        return self.served_by is not None

    @property
    def managed_identity_environment(self) -> list[str]:
        return [name for name in MI_VARIABLES if self.env.get(name)]

    @property
    def looks_like_azure(self) -> bool:
        return self.options.azure or bool(
            self.managed_identity_environment or any(self.env.get(n) for n in AZURE_HOST_VARIABLES)
        )

    @property
    def principal(self) -> str:
        """``oid`` (plus upn or appid) of the token in use, for messages."""
        oid = self.claims.get("oid", "<principal object id>")
        who = self.claims.get("upn") or (f"app {self.claims['appid']}" if self.claims.get("appid") else "")
        return f"{oid} ({who})" if who else str(oid)

    @property
    def oid(self) -> str:
        return str(self.claims.get("oid", "<principal object id>"))


# --- Settings ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def applied(values: Mapping[str, str]) -> Iterator[list[str]]:
    """Put settings-file values into ``os.environ`` for the run (azure-identity reads it directly).

    Like Core Tools, a variable already in the environment wins; yields the names applied."""
    added = [name for name in values if name not in os.environ]
    for name in added:
        os.environ[name] = values[name]
    try:
        yield added
    finally:
        for name in added:
            os.environ.pop(name, None)


async def check_settings(ctx: Context) -> Check:
    try:
        ctx.settings = Settings.from_env(ctx.env)
    except ConfigurationError as exc:
        return Check("settings", "Settings", "fail", f"{ctx.source}: {exc}", _settings_fix(ctx, str(exc)))
    s = ctx.settings
    host = urlsplit(s.openai_endpoint).hostname or ""
    if host.endswith(".api.cognitive.microsoft.com"):
        ctx.settings = None  # calling it would only produce a confusing 401
        return Check(
            "settings",
            "Settings",
            "fail",
            f"AZURE_OPENAI_ENDPOINT={s.openai_endpoint} is a regional endpoint: Entra ID tokens need the "
            "resource's custom subdomain",
            "set AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com (az cognitiveservices account show "
            "-n <resource> -g <resource-group> --query properties.endpoint)",
        )
    lines = [
        f"{ctx.source}: endpoint {s.openai_endpoint}, deployment {s.default_deployment}, "
        f"queue {s.jobs_queue}, results {s.results_container}"
    ]
    if ctx.shadowed:
        lines.append(f"already in the environment, so not taken from the file: {', '.join(sorted(ctx.shadowed))}")
    return Check("settings", "Settings", "ok", "\n".join(lines))


def _settings_fix(ctx: Context, message: str) -> str:
    where = "local.settings.json Values" if ctx.options.settings_file else "the app settings (environment)"
    name = re.search(r"\b([A-Z][A-Z0-9_]+[A-Z0-9])\b", message)
    return f"set {name.group(1) if name else 'the setting named above'} in {where}"


# --- 1. Credential ----------------------------------------------------------------------------------


class _Recorder:
    """Stands in for one credential of the chain and keeps what it raised or that it served.

    ``DefaultAzureCredential`` itself still runs the chain (its order, ``AZURE_TOKEN_CREDENTIALS``,
    its rules for which errors end the chain), so the diagnosis is what the worker experiences."""

    def __init__(self, inner: Any, log: list[Attempt]) -> None:
        self._inner = inner
        self._log: list[Attempt] | None = log
        self._credential_name = getattr(inner, "_credential_name", None) or type(inner).__name__

    def stop_recording(self) -> None:
        self._log = None

    def _note(self, outcome: Literal["served", "unavailable", "failed"], message: str = "") -> None:
        if self._log is not None:
            self._log.append(Attempt(self._credential_name, outcome, message))

    def _failed(self, exc: Exception) -> None:
        outcome: Literal["unavailable", "failed"] = (
            "unavailable" if isinstance(exc, CredentialUnavailableError) else "failed"
        )
        self._note(outcome, _one_line(getattr(exc, "message", None) or str(exc) or type(exc).__name__))

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        try:
            token = cast(AccessToken, await self._inner.get_token(*scopes, **kwargs))
        except Exception as exc:
            self._failed(exc)
            raise
        self._note("served")
        return token

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        try:
            if hasattr(self._inner, "get_token_info"):
                info = cast(AccessTokenInfo, await self._inner.get_token_info(*scopes, options=options))
            else:
                token = await self._inner.get_token(*scopes, **(options or {}))
                info = AccessTokenInfo(token.token, token.expires_on)
        except Exception as exc:
            self._failed(exc)
            raise
        self._note("served")
        return info

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> _Recorder:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()


_LINKS = re.compile(
    r"\s*(Visit \S+ to troubleshoot this issue\.?"
    r"|See the troubleshooting guide for more information: \S+?\.(?=\s|$)"
    r"|To mitigate this issue, please refer to the troubleshooting guidelines here at \S+?\.?(?=\s|$))"
)


def _one_line(text: str, limit: int = 260) -> str:
    """One line, without the SDK's troubleshooting links (the doctor says what to do instead)."""
    text = _LINKS.sub("", " ".join(text.split())).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chain_setting(env: Mapping[str, str]) -> str:
    return env.get("AZURE_TOKEN_CREDENTIALS", "").strip()


def _client_id(env: Mapping[str, str]) -> tuple[str | None, str]:
    """The user-assigned client id ``create_credential`` passes, and which setting it came from."""
    for name in ("AZURE_CLIENT_ID", f"{STORAGE_CONNECTION}__clientId"):
        if env.get(name):
            return env[name], name
    return None, ""


def _mi_transport(env: Mapping[str, str]) -> str:
    """Which managed-identity protocol azure-identity picks from this environment (its order)."""
    if env.get("IDENTITY_ENDPOINT") and env.get("IDENTITY_HEADER"):
        if env.get("IDENTITY_SERVER_THUMBPRINT"):
            return "Service Fabric endpoint"
        return "App Service/Functions identity endpoint"
    if env.get("IDENTITY_ENDPOINT") and env.get("IMDS_ENDPOINT"):
        return "Azure Arc endpoint"
    if env.get("MSI_ENDPOINT"):
        return "MSI_ENDPOINT (Cloud Shell / legacy App Service)"
    if env.get("AZURE_FEDERATED_TOKEN_FILE"):
        return "workload identity (AZURE_FEDERATED_TOKEN_FILE)"
    return "IMDS (Azure VM instance metadata)"


def _who(claims: Mapping[str, Any]) -> str:
    parts = []
    if claims.get("upn"):
        parts.append(f"user {claims['upn']}")
    elif claims.get("appid"):
        parts.append(f"app {claims['appid']}")
    parts.append(f"oid {claims.get('oid', '?')}")
    parts.append(f"tid {claims.get('tid', '?')}")
    return ", ".join(parts)


async def check_credential(ctx: Context) -> Check:
    title = "Credential"
    chain = _chain_setting(ctx.env)
    try:
        credential = create_credential(ctx.env)
    except ValueError as exc:  # AZURE_TOKEN_CREDENTIALS names no credential
        return Check(
            "credential",
            title,
            "fail",
            f"DefaultAzureCredential refused AZURE_TOKEN_CREDENTIALS={chain!r}: {_one_line(str(exc))}",
            "set AZURE_TOKEN_CREDENTIALS to dev (laptop), ManagedIdentityCredential (Azure), prod, "
            "or one credential's class name",
        )
    ctx.credential = credential
    # The chain's public ``credentials`` (azure-identity 1.27): wrap each to keep its own exception.
    chained = getattr(credential, "credentials", None)
    recorders = [_Recorder(c, ctx.attempts) for c in chained] if isinstance(chained, tuple | list) else []
    if recorders:
        credential.credentials = tuple(recorders)  # the same credentials, in the same order
    narrowed = f" (AZURE_TOKEN_CREDENTIALS={chain})" if chain else ""
    try:
        token = await credential.get_token(ctx.options.scope)
    except ClientAuthenticationError as exc:
        if not ctx.attempts:  # no recorders: fall back to the chain's own summary
            ctx.attempts.extend(_attempts_from_message(exc.message or ""))
        return _credential_failed(ctx, narrowed)
    finally:
        for recorder in recorders:
            recorder.stop_recording()
    ctx.claims = identity_from_token(token.token)
    successful = getattr(credential, "_successful_credential", None)
    served = next(
        (a.credential for a in reversed(ctx.attempts) if a.outcome == "served"),
        getattr(successful, "_credential_name", None) or type(successful or credential).__name__,
    )
    ctx.served_by = served
    how = ""
    if served == "ManagedIdentityCredential":
        client_id, source = _client_id(ctx.env)
        kind = f"user-assigned, client id {client_id} from {source}" if client_id else "system-assigned"
        how = f" ({_mi_transport(ctx.env)}, {kind})"
    lines = [f"{served}{how} served a token for {_who(ctx.claims)}"]
    if recorders:
        lines.append(f"chain{narrowed}: {' > '.join(r._credential_name for r in recorders)}")
    before = [a for a in ctx.attempts if a.outcome != "served"]
    lines += [f"  before it, {a.credential}: {a.message}" for a in before]
    return Check("credential", title, "ok", "\n".join(lines))


def _attempts_from_message(message: str) -> list[Attempt]:
    """``Name: reason`` lines of ChainedTokenCredential's "Attempted credentials:" summary."""
    found = re.findall(r"^\t(\w+): (.*)$", message, flags=re.MULTILINE)
    return [Attempt(name, "unavailable", _one_line(reason)) for name, reason in found]


def _credential_failed(ctx: Context, narrowed: str) -> Check:
    title = "Credential"
    lines = [f"no credential in DefaultAzureCredential's chain{narrowed} could get a token:"]
    lines += [f"  {a.credential}: {a.outcome}: {a.message}" for a in ctx.attempts]
    names = {a.credential: a for a in ctx.attempts}
    chain = _chain_setting(ctx.env).lower()
    hard = next((a for a in ctx.attempts if a.outcome == "failed"), None)
    cli = names.get("AzureCliCredential")
    mi = names.get("ManagedIdentityCredential")
    client_id, source = _client_id(ctx.env)
    if hard is not None and hard.credential == "ManagedIdentityCredential":
        fix = (
            f"{source}={client_id} is not a user-assigned identity attached to this app: attach it, or fix/unset "
            f"{source}"
            if client_id
            else "enable the app's system-assigned identity (az functionapp identity assign -n <app> -g <rg>)"
        )
    elif hard is not None and hard.credential == "AzureCliCredential":
        fix = "`az account get-access-token --resource https://cognitiveservices.azure.com` fails: run `az login`"
    elif hard is not None and hard.credential == "EnvironmentCredential":
        fix = "the service principal in AZURE_TENANT_ID/AZURE_CLIENT_ID/... was refused: fix or remove those variables"
    elif hard is not None:
        fix = f"{hard.credential} failed: {hard.message}"
    elif ctx.managed_identity_environment and mi is None:
        fix = (
            f"AZURE_TOKEN_CREDENTIALS={_chain_setting(ctx.env)} leaves out the managed identity this environment has: "
            "set AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential in Azure"
        )
    elif cli is not None and "az login" in cli.message:
        fix = "run `az login` (add --tenant <tenant id> if the OpenAI resource is in another tenant)"
    elif chain == "managedidentitycredential" and not ctx.managed_identity_environment and not ctx.looks_like_azure:
        fix = "no managed identity exists locally: set AZURE_TOKEN_CREDENTIALS=dev and run `az login`"
    elif _in_container(ctx.env):
        fix = "a container has no az login and no managed identity: see Environment below"
    elif ctx.looks_like_azure:
        fix = "give the app a managed identity (az functionapp identity assign -n <app> -g <rg>)"
    elif cli is not None and "not found" in cli.message.lower():
        fix = "install the Azure CLI and run `az login` (or set AZURE_TOKEN_CREDENTIALS to the tool you use)"
    else:
        fix = "run `az login`, or set AZURE_TOKEN_CREDENTIALS=dev so developer tools are tried"
    return Check("credential", title, "fail", "\n".join(lines), fix)


# --- 2. Scope ---------------------------------------------------------------------------------------


async def check_scope(ctx: Context) -> Check:
    title = "Scope"
    if not ctx.has_token:
        return Check("scope", title, "skip", "no token to inspect (Credential failed)")
    audience = str(ctx.claims.get("aud", ""))
    scope = ctx.options.scope
    override = "" if scope == COGNITIVE_SERVICES_SCOPE else f" (--scope overrides the app's {COGNITIVE_SERVICES_SCOPE})"
    if audience.rstrip("/") == EXPECTED_AUDIENCE:
        return Check("scope", title, "ok", f"token audience {audience} (scope {scope}){override}")
    return Check(
        "scope",
        title,
        "fail",
        f"token audience is {audience or '<none>'} from scope {scope}{override}; "
        f"Azure OpenAI accepts only {EXPECTED_AUDIENCE} and answers 401 to anything else",
        f"request the token with scope {COGNITIVE_SERVICES_SCOPE} (shared.connections.COGNITIVE_SERVICES_SCOPE)",
    )


# --- 3. Azure OpenAI --------------------------------------------------------------------------------


def _service_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _one_line(body["message"])
    return _one_line(exc.message)


def _openai_resource_scope(ctx: Context) -> str:
    """``--scope`` for ``az role assignment create``: the OpenAI resource, never the subscription."""
    if ctx.options.openai_resource_id:
        return ctx.options.openai_resource_id
    assert ctx.settings is not None
    host = urlsplit(ctx.settings.openai_endpoint).hostname or ""
    name, _, domain = host.partition(".")
    if domain in ("openai.azure.com", "cognitiveservices.azure.com", "services.ai.azure.com"):
        return f"$(az cognitiveservices account show --name {name} --resource-group <resource-group> --query id -o tsv)"
    return '"<OpenAI resource id>"'


async def _chat_once(ctx: Context, client: AsyncAzureOpenAI) -> None:
    assert ctx.settings is not None
    await client.chat.completions.create(
        model=ctx.settings.default_deployment,
        messages=[{"role": "user", "content": "ping"}],
        max_tokens=1,
    )


def _is_permission_denied(exc: Exception) -> bool:
    return isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError) and (
        exc.code == "PermissionDenied"
    )


async def check_openai(ctx: Context) -> Check:
    title = "Azure OpenAI"
    if ctx.settings is None:
        return Check("openai", title, "skip", "settings are incomplete (Settings failed)")
    if ctx.credential is None or not ctx.has_token:
        return Check("openai", title, "skip", "no token (Credential failed)")
    settings = ctx.settings
    where = f"{settings.openai_endpoint}, deployment {settings.default_deployment}"
    client = AsyncAzureOpenAI(
        azure_endpoint=settings.openai_endpoint,
        api_version=settings.api_version,
        azure_ad_token_provider=get_bearer_token_provider(ctx.credential, ctx.options.scope),
        max_retries=0,
        timeout=min(settings.openai_timeout, 30.0),
    )
    started = time.monotonic()
    async with client:
        try:
            await _chat_once(ctx, client)
        except Exception as exc:
            if not (_is_permission_denied(exc) and ctx.options.wait > 0):
                return _openai_failed(ctx, exc, where)
            try:
                await _wait_for_role(ctx, client, started, exc)
            except Exception as again:
                return _openai_failed(ctx, again, where, waited=time.monotonic() - started)
            return Check(
                "openai",
                title,
                "ok",
                f"{where} answered after the role took effect ({time.monotonic() - started:.0f} s of --wait) "
                f"for {ctx.principal}",
            )
    return Check("openai", title, "ok", f"{where} answered a 1-token completion for {ctx.principal}")


async def _wait_for_role(ctx: Context, client: AsyncAzureOpenAI, started: float, denied: Exception) -> None:
    """Retry while PermissionDenied, with a countdown on stderr, until ``--wait`` runs out.

    Returns once a call succeeds; raises the last error (PermissionDenied when time ran out)."""
    deadline = started + ctx.options.wait
    attempt = 1
    tty = ctx.stderr.isatty()
    while (left := deadline - time.monotonic()) > 0:
        delay = min(WAIT_INTERVALS[min(attempt - 1, len(WAIT_INTERVALS) - 1)], left)
        note = f"  PermissionDenied (attempt {attempt}): the role may still be propagating; retrying in"
        if tty:  # a live countdown
            ticks = math.ceil(delay)
            for remaining in range(ticks, 0, -1):
                ctx.stderr.write(f"\r{note} {remaining:3d} s, {deadline - time.monotonic():4.0f} s left ")
                ctx.stderr.flush()
                await asyncio.sleep(min(1.0, delay - (ticks - remaining)))
            ctx.stderr.write("\n")
        else:  # one line per retry, for logs
            ctx.stderr.write(f"{note} {delay:.0f} s, {left:.0f} s left\n")
            ctx.stderr.flush()
            await asyncio.sleep(delay)
        attempt += 1
        try:
            await _chat_once(ctx, client)
        except Exception as exc:
            if not _is_permission_denied(exc):
                raise
            denied = exc
            continue
        ctx.stderr.write(f"  attempt {attempt}: the role is in effect\n")
        ctx.stderr.flush()
        return
    raise denied


def _openai_failed(ctx: Context, exc: Exception, where: str, waited: float | None = None) -> Check:
    title = "Azure OpenAI"
    assert ctx.settings is not None
    settings = ctx.settings
    if _is_permission_denied(exc):
        assert isinstance(exc, openai.APIStatusError)
        still = f"; still denied after {waited:.0f} s of --wait" if waited is not None else ""
        advice = "" if waited is not None else "; rerun with --wait to retry until it applies"
        return Check(
            "openai",
            title,
            "fail",
            f"{exc.status_code} PermissionDenied from {where}: {_service_message(exc)}\n"
            f"principal {ctx.principal} lacks the '{OPENAI_USER_ROLE}' role on the Azure OpenAI resource{still}. "
            f"A new role assignment takes up to ~10 minutes to apply{advice}",
            f'az role assignment create --assignee {ctx.oid} --role "{OPENAI_USER_ROLE}" '
            f"--scope {_openai_resource_scope(ctx)}",
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        if exc.code in ("AuthenticationTypeDisabled",):
            return Check(
                "openai",
                title,
                "fail",
                f"{exc.status_code} {exc.code}: {_service_message(exc)}",
                "the request carried an api-key header: remove AZURE_OPENAI_API_KEY / api_key and use Entra ID",
            )
        audience = str(ctx.claims.get("aud", "?"))
        if audience.rstrip("/") != EXPECTED_AUDIENCE:
            why = f"the token's audience is {audience}, not {EXPECTED_AUDIENCE} (see Scope)"
            fix = f"request the token with scope {COGNITIVE_SERVICES_SCOPE}"
        else:
            why = (
                "the token has the right audience, so it is expired or from another tenant than the resource "
                f"(token tid {ctx.claims.get('tid', '?')})"
            )
            fix = "`az login --tenant <the OpenAI resource's tenant id>` (or check this machine's clock)"
        return Check("openai", title, "fail", f"{exc.status_code} from {where}: {_service_message(exc)}\n{why}", fix)
    if isinstance(exc, openai.NotFoundError):
        if exc.code == "DeploymentNotFound":
            return Check(
                "openai",
                title,
                "fail",
                f"404 DeploymentNotFound: no deployment named '{settings.default_deployment}' on "
                f"{settings.openai_endpoint}: {_service_message(exc)}",
                "set AZURE_OPENAI_DEPLOYMENT to a deployment name listed by `az cognitiveservices account "
                "deployment list -n <resource> -g <resource-group> --query [].name`",
            )
        return Check(
            "openai",
            title,
            "fail",
            f"404 from {settings.openai_endpoint}/openai/deployments/...: {_service_message(exc)} "
            f"(api-version {settings.api_version})",
            "set AZURE_OPENAI_ENDPOINT to https://<resource>.openai.azure.com (no path) and "
            "AZURE_OPENAI_API_VERSION to a GA version such as 2024-10-21",
        )
    if isinstance(exc, openai.RateLimitError):
        return Check(
            "openai",
            title,
            "warn",
            f"authorized, but throttled (429): {_service_message(exc)}",
            "nothing to fix for auth; raise the deployment's TPM quota if this persists",
        )
    if isinstance(exc, openai.BadRequestError):
        return Check(
            "openai",
            title,
            "warn",
            f"authorized; the deployment refused the 1-token probe (400 {exc.code}): {_service_message(exc)}",
            "nothing to fix for auth; check the deployment's model accepts max_tokens",
        )
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        cause = exc.__cause__ or exc
        return Check(
            "openai",
            title,
            "fail",
            f"cannot reach {settings.openai_endpoint}: {_one_line(str(cause) or type(cause).__name__)}",
            "check AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com, the custom subdomain) and that "
            "this network can reach it (private endpoint, firewall, DNS)",
        )
    if isinstance(exc, openai.APIStatusError):
        return Check(
            "openai",
            title,
            "fail",
            f"{exc.status_code} from {where}: {_service_message(exc)}",
            "the service is failing; retry later and check the resource's health in the portal",
        )
    if isinstance(exc, ClientAuthenticationError):
        return Check(
            "openai",
            title,
            "fail",
            f"the credential failed while calling: {_one_line(exc.message)}",
            "see Credential above",
        )
    return Check("openai", title, "fail", f"{type(exc).__name__}: {_one_line(str(exc))}", "see the error above")


# --- 4. Storage -------------------------------------------------------------------------------------


def _is_dev_storage(connection_string: str) -> bool:
    if is_development_shorthand(connection_string):
        return True
    parts = _parse_connection_string(connection_string)
    return parts.get("accountname") == AZURITE_ACCOUNT and parts.get("accountkey") == AZURITE_KEY


def _parse_connection_string(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in value.split(";"):
        name, sep, rest = item.partition("=")
        if sep:
            parts[name.strip().lower()] = rest.strip()
    return parts


def _account_name(url: str | None) -> str:
    if not url:
        return "<storage account>"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("127.0.0.1", "localhost"):
        return parts.path.strip("/").split("/")[0] or AZURITE_ACCOUNT
    return host.split(".")[0] or "<storage account>"


async def check_storage(ctx: Context) -> Check:
    title = "Storage settings"
    env = ctx.env
    try:
        ctx.storage = StorageEndpoints.from_settings(env=env)
    except ConfigurationError as exc:
        ctx.storage_problem = "storage is not configured"
        return Check(
            "storage",
            title,
            "fail",
            str(exc),
            f"set {STORAGE_CONNECTION}__accountName (Azure) or {STORAGE_CONNECTION}=UseDevelopmentStorage=true (local)",
        )
    raw = env.get(STORAGE_CONNECTION, "").strip()
    credential_setting = env.get(f"{STORAGE_CONNECTION}__credential", "").strip()
    where = "app settings" if ctx.looks_like_azure else "local.settings.json"
    if ctx.storage.connection_string:
        parts = _parse_connection_string(ctx.storage.connection_string)
        if _is_dev_storage(raw):
            if ctx.looks_like_azure:
                ctx.storage_problem = "the storage settings must be fixed first"
                return Check(
                    "storage",
                    title,
                    "fail",
                    f"{STORAGE_CONNECTION} is the Azurite development account connection string (an account key), "
                    "but these settings look like Azure" + _azure_reason(ctx),
                    f"in Azure remove {STORAGE_CONNECTION} and set {STORAGE_CONNECTION}__accountName=<account> "
                    f"(+ __credential=managedidentity) with roles '{BLOB_OWNER_ROLE}' and '{QUEUE_CONTRIBUTOR_ROLE}'",
                )
            return Check(
                "storage",
                title,
                "ok",
                f"connection string {STORAGE_CONNECTION}: the Azurite development account (fine locally; its key is "
                f"public). In Azure use {STORAGE_CONNECTION}__accountName with a managed identity instead",
            )
        ctx.storage_problem = "the storage settings must be fixed first"
        if "accountkey" in parts or "sharedaccesssignature" in parts or "sig=" in raw.lower():
            kind = "an account key (AccountKey=)" if "accountkey" in parts else "a SAS (SharedAccessSignature=)"
            return Check(
                "storage",
                title,
                "fail",
                f"{STORAGE_CONNECTION} is a connection string with {kind} for account "
                f"{parts.get('accountname', '?')}: no keys anywhere",
                f"remove {STORAGE_CONNECTION} from the {where}; set {STORAGE_CONNECTION}__accountName="
                f"{parts.get('accountname', '<account>')} and grant the identity '{BLOB_OWNER_ROLE}' and "
                f"'{QUEUE_CONTRIBUTOR_ROLE}', "
                "then rotate the key",
            )
        return Check(
            "storage",
            title,
            "fail",
            f"{STORAGE_CONNECTION} is a connection string with no credential in it",
            f"use identity-based {STORAGE_CONNECTION}__accountName (or __queueServiceUri and __blobServiceUri)",
        )
    form = (
        f"identity-based: {STORAGE_CONNECTION}__queueServiceUri={ctx.storage.queue_url}, "
        f"__blobServiceUri={ctx.storage.blob_url}"
    )
    if credential_setting.lower() == "managedidentity" and not ctx.looks_like_azure:
        ctx.storage_problem = "the storage settings must be fixed first"
        return Check(
            "storage",
            title,
            "fail",
            f"{form}; {STORAGE_CONNECTION}__credential=managedidentity is set but this is a local run: locally the "
            "identity is yours (az login), and the Functions host fails to get a managed-identity token",
            f"remove {STORAGE_CONNECTION}__credential from local.settings.json (keep it in Azure app settings only)",
        )
    extra = f", __credential={credential_setting}" if credential_setting else ""
    return Check("storage", title, "ok", f"{form}{extra}")


def _azure_reason(ctx: Context) -> str:
    if ctx.options.azure:
        return " (--azure)"
    found = ctx.managed_identity_environment + [n for n in AZURE_HOST_VARIABLES if ctx.env.get(n)]
    return f" ({', '.join(found)} set)" if found else ""


async def check_storage_access(ctx: Context) -> Check:
    title = "Storage access"
    if ctx.storage is None or ctx.storage_problem:
        return Check("storage-access", title, "skip", f"not probed: {ctx.storage_problem or 'no storage settings'}")
    if ctx.settings is None:
        return Check("storage-access", title, "skip", "settings are incomplete (Settings failed)")
    identity_based = ctx.storage.connection_string is None
    if identity_based and (ctx.credential is None or not ctx.has_token):
        return Check("storage-access", title, "skip", "identity-based storage needs a token (Credential failed)")
    settings = ctx.settings
    credential: Any = ctx.credential
    who = f" as {ctx.principal}" if identity_based else " with the connection string"
    step = "queue"
    try:
        async with ctx.storage.queue_service(credential) as queues:
            queue = queues.get_queue_client(settings.jobs_queue)
            sent = await queue.send_message(
                PROBE_TEXT, visibility_timeout=59, time_to_live=60, **_FAST
            )  # invisible, and gone within a minute even if the delete below never happens
            await queue.delete_message(sent.id, sent.pop_receipt, **_FAST)
        step = "blob"
        async with ctx.storage.blob_service(credential) as blobs:
            container = blobs.get_container_client(settings.results_container)
            name = f"_doctor/{uuid.uuid4()}"
            try:
                await container.upload_blob(name, PROBE_TEXT.encode(), overwrite=False, **_FAST)
            except ResourceNotFoundError:
                return Check(
                    "storage-access",
                    title,
                    "warn",
                    f"queue '{settings.jobs_queue}': send+delete ok{who}; container "
                    f"'{settings.results_container}' does not exist yet (the worker creates it on first result)",
                    f"create it with the infrastructure, or grant '{BLOB_OWNER_ROLE}' so the worker can",
                )
            try:
                data = await (await container.download_blob(name, **_FAST)).readall()
            finally:
                await container.delete_blob(name, **_FAST)
            if data != PROBE_TEXT.encode():
                raise ValueError("the probe blob read back different bytes")
    except Exception as exc:
        return _storage_failed(ctx, exc, step)
    return Check(
        "storage-access",
        title,
        "ok",
        f"queue '{settings.jobs_queue}': send+delete ok; container '{settings.results_container}': "
        f"write+read+delete of _doctor/<uuid> ok{who}",
    )


_FAST: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10, "read_timeout": 30}


def _storage_failed(ctx: Context, exc: Exception, step: str) -> Check:
    title = "Storage access"
    assert ctx.settings is not None and ctx.storage is not None
    target = (
        f"queue '{ctx.settings.jobs_queue}'" if step == "queue" else f"container '{ctx.settings.results_container}'"
    )
    url = ctx.storage.queue_url if step == "queue" else ctx.storage.blob_url
    role = QUEUE_CONTRIBUTOR_ROLE if step == "queue" else BLOB_OWNER_ROLE
    if url is None and ctx.storage.connection_string:
        url = _conn_endpoint(ctx, step)
    account = _account_name(url)
    code = getattr(exc, "error_code", None)
    if isinstance(exc, ResourceNotFoundError):
        kind, name = (
            ("queue", ctx.settings.jobs_queue) if step == "queue" else ("container", ctx.settings.results_container)
        )
        return Check(
            "storage-access",
            title,
            "fail",
            f"{target} does not exist ({code or '404'})",
            f"create it: az storage {kind} create --name {name} --account-name {account} --auth-mode login "
            "(or deploy the infrastructure; locally `make run` creates it)",
        )
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        if code in STORAGE_PERMISSION_CODES:
            return Check(
                "storage-access",
                title,
                "fail",
                f"403 {code} on {target}: principal {ctx.principal} lacks '{role}' on account {account}",
                f'az role assignment create --assignee {ctx.oid} --role "{role}" --scope $(az storage account show '
                f"--name {account} --query id -o tsv)",
            )
        return Check(
            "storage-access",
            title,
            "fail",
            f"403 {code or ''} on {target}: the token or key was refused: {_one_line(exc.message or str(exc))}",
            "identity-based storage needs a token for https://storage.azure.com from the account's tenant; "
            "check the account's 'Allow storage account key access' / tenant",
        )
    if isinstance(exc, ClientAuthenticationError):
        return Check(
            "storage-access",
            title,
            "fail",
            f"no token for storage: {_one_line(exc.message or str(exc))}",
            "see Credential above",
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError | OSError):
        return Check(
            "storage-access",
            title,
            "fail",
            f"cannot reach {url or 'the storage endpoint'}: {_one_line(str(exc))}",
            f"check {STORAGE_CONNECTION}__accountName / __queueServiceUri / __blobServiceUri; locally start Azurite "
            "(`make run` or `python -m emulators.azurite`)",
        )
    if isinstance(exc, ValueError) and "https" in str(exc).lower():
        return Check(
            "storage-access",
            title,
            "fail",
            f"{_one_line(str(exc))}",
            "identity-based storage needs https:// service URIs",
        )
    return Check("storage-access", title, "fail", f"{target}: {type(exc).__name__}: {_one_line(str(exc))}")


def _conn_endpoint(ctx: Context, step: str) -> str:
    assert ctx.storage is not None and ctx.storage.connection_string is not None
    parts = _parse_connection_string(ctx.storage.connection_string)
    if endpoint := parts.get("queueendpoint" if step == "queue" else "blobendpoint"):
        return endpoint
    return f"https://{parts.get('accountname', '<storage account>')}.core.windows.net"


# --- 5. Environment ---------------------------------------------------------------------------------


def _in_container(env: Mapping[str, str]) -> bool:
    override = env.get("DOCTOR_ASSUME_CONTAINER", "").strip().lower()
    if override in ("1", "true", "yes"):
        return True
    if override in ("0", "false", "no"):
        return False
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists() or env.get("KUBERNETES_SERVICE_HOST"):
        return True
    try:
        return _CONTAINER_CGROUP.search(Path("/proc/1/cgroup").read_text()) is not None
    except OSError:
        return False


async def check_environment(ctx: Context) -> Check:
    title = "Environment"
    container = _in_container(ctx.env)
    az = shutil.which("az", path=ctx.env.get("PATH"))
    mi = ctx.managed_identity_environment
    where = "a container" if container else "not a container"
    if mi:
        where += f", managed-identity environment ({', '.join(mi)})"
    elif ctx.looks_like_azure:
        where += ", Azure app settings (--azure)" if ctx.options.azure else ", Azure host"
    where += f", Azure CLI {'at ' + az if az else 'not installed'}"
    if ctx.has_token:
        return Check("environment", title, "ok", f"{where}; tokens come from {ctx.served_by}")
    if container and not mi:
        return Check(
            "environment",
            title,
            "fail",
            f"{where}, and no credential works: a container has no `az login` of yours and no managed identity. "
            "Options: (1) workload identity / a service principal for WorkloadIdentityCredential or "
            "EnvironmentCredential: AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_FEDERATED_TOKEN_FILE (federated, no "
            "secret) or AZURE_CLIENT_CERTIFICATE_PATH; (2) the Azure CLI in the image plus your token cache mounted: "
            "-v $HOME/.azure:/root/.azure with AZURE_TOKEN_CREDENTIALS=AzureCliCredential; (3) run it in Azure with "
            "a managed identity",
            'docker run -v "$HOME/.azure:/root/.azure" -e AZURE_TOKEN_CREDENTIALS=AzureCliCredential ... (image '
            "with az), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE",
        )
    return Check("environment", title, "ok", f"{where}; see Credential for why no token was issued")


def key_settings(env: Mapping[str, str]) -> list[str]:
    """Names of settings that hold a key, SAS or secret (values are never returned)."""
    found: set[str] = set()
    for raw_name, value in env.items():
        name = raw_name.removeprefix("APPSETTING_")
        upper = name.upper()
        if upper.startswith(PLATFORM_PREFIXES) or name == STORAGE_CONNECTION:
            continue  # platform variables; the storage connection has its own check
        if upper.endswith("_KEY") or "API_KEY" in upper or upper in SECRET_NAMES or _KEY_VALUE.search(value or ""):
            found.add(name)
    return sorted(found)


async def check_keys(ctx: Context) -> Check:
    title = "Keys in settings"
    names = key_settings(ctx.env)
    if not names:
        return Check("keys", title, "ok", "no key, SAS or secret settings (Entra ID only)")
    where = "local.settings.json / the environment" if not ctx.looks_like_azure else "the app settings"
    details = []
    for name in names:
        if name.upper() in ("AZURE_OPENAI_API_KEY", "OPENAI_API_KEY"):
            details.append(f"{name} is set: ignored (the worker sends an Entra ID token, never an api-key)")
        elif name.upper() == "AZURE_CLIENT_SECRET":
            details.append(f"{name} is set: EnvironmentCredential would use a client secret (a key by another name)")
        else:
            details.append(f"{name} holds a key, SAS or secret")
    return Check(
        "keys",
        title,
        "warn",
        "\n".join(details),
        f"remove {', '.join(names)} from {where} and rotate what they held (no keys anywhere)",
    )


# --- Sequence and rendering -------------------------------------------------------------------------

CHECKS: tuple[Callable[[Context], Awaitable[Check]], ...] = (
    check_settings,
    check_credential,
    check_scope,
    check_openai,
    check_storage,
    check_storage_access,
    check_environment,
    check_keys,
)


async def diagnose(ctx: Context) -> list[Check]:
    """Run every check in order; a check that crashes is reported, not raised."""
    results: list[Check] = []
    try:
        for check in CHECKS:
            try:
                results.append(await check(ctx))
            except Exception as exc:  # a doctor that dies mid-way helps no one
                name = check.__name__.removeprefix("check_").replace("_", "-")
                results.append(Check(name, name.title(), "fail", f"the check itself failed: {exc!r}"))
    finally:
        if ctx.credential is not None:
            await ctx.credential.close()
    return results


SYMBOLS: dict[Status, str] = {"ok": "✓", "fail": "✗", "warn": "!", "skip": "-"}
ASCII: dict[Status, str] = {"ok": "OK", "fail": "XX", "warn": "!!", "skip": "--"}


def render_table(checks: Sequence[Check], out: TextIO) -> None:
    symbols = SYMBOLS
    try:
        "".join(SYMBOLS.values()).encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        symbols = ASCII
    width = max(len(c.title) for c in checks) + 2
    for check in checks:
        lines = check.detail.splitlines() or [""]
        out.write(f"{symbols[check.status]} {check.title:<{width}}{lines[0]}\n")
        pad = " " * (len(symbols[check.status]) + 1 + width)
        for line in lines[1:]:
            out.write(f"{pad}{line}\n")
        if check.fix and check.status in ("fail", "warn"):
            out.write(f"{pad}fix: {check.fix}\n")
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "fail", "warn", "skip")}
    out.write(f"\n{counts['fail']} failed, {counts['warn']} warning(s), {counts['ok']} ok, {counts['skip']} skipped\n")


def render_json(checks: Sequence[Check], out: TextIO) -> None:
    json.dump([c.as_json() for c in checks], out, indent=2, ensure_ascii=False)
    out.write("\n")


def exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0


# --- Command line -----------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="Check the keyless setup (identity, scope, Azure OpenAI role, storage, keys) and say the fix.",
        description="Find what is wrong with a keyless setup (identity, token scope, the Azure OpenAI role, "
        "storage, keys) and say the exact fix. Reads the settings the worker reads.",
        epilog="Exit code 1 when any check fails (warnings do not fail). Never prints a token, key or secret.",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        metavar="FILE",
        help="local.settings.json whose Values to use (default: ./local.settings.json if present; "
        "variables already in the environment win)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of {check, status, detail, fix}")
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=DEFAULT_WAIT_SECONDS,
        default=0.0,
        metavar="SECONDS",
        help=f"on PermissionDenied keep retrying until the role applies (default {DEFAULT_WAIT_SECONDS:.0f} s)",
    )
    parser.add_argument(
        "--scope",
        default=COGNITIVE_SERVICES_SCOPE,
        help=f"token scope to test (default: the app's {COGNITIVE_SERVICES_SCOPE})",
    )
    parser.add_argument(
        "--azure",
        action="store_true",
        help="judge the settings as Azure app settings (dev storage and key connection strings fail)",
    )
    parser.add_argument(
        "--openai-resource-id",
        default=None,
        metavar="ID",
        help="the Azure OpenAI resource id to put in the role-assignment command",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = Options(
        settings_file=args.settings,
        scope=args.scope,
        wait=max(0.0, min(float(args.wait or 0.0), MAX_WAIT_SECONDS)),
        azure=args.azure,
        openai_resource_id=args.openai_resource_id,
    )
    checks = run_doctor(options)
    (render_json if args.json else render_table)(checks, sys.stdout)
    sys.stdout.flush()
    return exit_code(checks)


def run_doctor(options: Options, stderr: TextIO | None = None) -> list[Check]:
    """Load settings the way the host does, then run every check (synchronously, for the CLI)."""
    path = options.settings_file
    if path is None and Path("local.settings.json").is_file():
        path = Path("local.settings.json")
    values: dict[str, str] = {}
    problem: str | None = None
    if path is not None:
        try:
            values = read_local_settings(path)
        except ConfigurationError as exc:
            problem = str(exc)
    source = f"{path} + environment" if path is not None else "environment"
    with applied(values) as added:
        ctx = Context(
            env=dict(os.environ),
            options=dataclasses.replace(options, settings_file=path),
            source=source,
            shadowed=[n for n in values if n not in added],
            stderr=stderr or sys.stderr,
        )
        if problem is not None:
            return [Check("settings", "Settings", "fail", problem, f"fix or remove {path}")]
        return asyncio.run(diagnose(ctx))
