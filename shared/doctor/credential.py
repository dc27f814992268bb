"""Credential and Scope: which credential of ``DefaultAzureCredential``'s chain serves a token (and
why the ones before it did not), who the token is for, and whether its audience is Azure OpenAI's."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError

from shared.connections import identity_from_token
from shared.constants import AI_FOUNDRY_SCOPE, SCOPE_SUFFIX, audience_of
from shared.doctor.environment import in_container
from shared.doctor.model import CREDENTIAL, SCOPE, Attempt, Check, Context, Outcome, one_line
from shared.settings import is_project_endpoint, user_assigned_client_id
from shared.storage_clients import create_credential

IDENTITY_ASSIGN = "az functionapp identity assign -n <app> -g <rg>"
# A credential that raised (rather than said "unavailable") ends the chain: what its failure means.
_HARD_FAILURES = {
    "AzureCliCredential": (
        "az_token_failed",
        "`az account get-access-token --resource {resource}` fails: run `az login`",
    ),
    "EnvironmentCredential": (
        "service_principal_refused",
        "the service principal in AZURE_TENANT_ID/AZURE_CLIENT_ID/... was refused: fix or remove those variables",
    ),
}


class _Recorder:
    """Stands in for one credential of the chain and keeps what it raised or that it served.

    ``DefaultAzureCredential`` itself still runs the chain (its order, ``AZURE_TOKEN_CREDENTIALS``,
    its rules for which errors end the chain), so the diagnosis is what the worker experiences."""

    def __init__(self, inner: Any, log: list[Attempt]) -> None:
        self._inner = inner
        self._log: list[Attempt] | None = log
        # The name azure-identity itself reads from each credential (its error summary and logs).
        self._credential_name: str = getattr(inner, "_credential_name", None) or type(inner).__name__

    @property
    def name(self) -> str:
        return self._credential_name

    def stop_recording(self) -> None:
        self._log = None

    def _note(self, outcome: Outcome, message: str = "") -> None:
        if self._log is not None:
            self._log.append(Attempt(self._credential_name, outcome, message))

    def _failed(self, exc: Exception) -> None:
        self._note("unavailable" if isinstance(exc, CredentialUnavailableError) else "failed", one_line(exc))

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


def _chain_setting(env: Mapping[str, str]) -> str:
    return env.get("AZURE_TOKEN_CREDENTIALS", "").strip()


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


# --- Credential ----------------------------------------------------------------------------------------


async def check_credential(ctx: Context) -> Check:
    chain = _chain_setting(ctx.env)
    try:
        credential = create_credential(ctx.env)
    except ValueError as exc:  # AZURE_TOKEN_CREDENTIALS names no credential
        return CREDENTIAL.fail(
            "token_credentials_invalid",
            f"DefaultAzureCredential refused AZURE_TOKEN_CREDENTIALS={chain!r}: {one_line(str(exc))}",
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
        token = await credential.get_token(ctx.scope)
    except ClientAuthenticationError as exc:
        if not ctx.attempts:  # no recorders: fall back to the chain's own summary
            ctx.attempts.extend(_attempts_from_message(exc.message or ""))
        return _credential_failed(ctx, narrowed)
    finally:
        for recorder in recorders:
            recorder.stop_recording()
    ctx.claims = identity_from_token(token.token)
    successful = getattr(credential, "_successful_credential", None)
    ctx.served_by = next(
        (a.credential for a in reversed(ctx.attempts) if a.outcome == "served"),
        getattr(successful, "_credential_name", None) or type(successful or credential).__name__,
    )
    lines = [f"{ctx.served_by}{_managed_identity_kind(ctx)} served a token for {_who(ctx.claims)}"]
    if recorders:
        lines.append(f"chain{narrowed}: {' > '.join(r.name for r in recorders)}")
    lines += [f"  before it, {a.credential}: {a.message}" for a in ctx.attempts if a.outcome != "served"]
    return CREDENTIAL.ok("\n".join(lines))


def _managed_identity_kind(ctx: Context) -> str:
    """`` (transport, system- or user-assigned)`` when a managed identity served, else nothing."""
    if ctx.served_by != "ManagedIdentityCredential":
        return ""
    client_id, source = user_assigned_client_id(ctx.env)
    kind = f"user-assigned, client id {client_id} from {source}" if client_id else "system-assigned"
    return f" ({_mi_transport(ctx.env)}, {kind})"


def _attempts_from_message(message: str) -> list[Attempt]:
    """``Name: reason`` lines of ChainedTokenCredential's "Attempted credentials:" summary."""
    found = re.findall(r"^\t(\w+): (.*)$", message, flags=re.MULTILINE)
    return [Attempt(name, "unavailable", one_line(reason)) for name, reason in found]


def _credential_failed(ctx: Context, narrowed: str) -> Check:
    lines = [f"no credential in DefaultAzureCredential's chain{narrowed} could get a token:"]
    lines += [f"  {a.credential}: {a.outcome}: {a.message}" for a in ctx.attempts]
    hard = next((a for a in ctx.attempts if a.outcome == "failed"), None)
    reason, fix = _hard_failure(ctx, hard) if hard is not None else _no_credential(ctx)
    return CREDENTIAL.fail(reason, "\n".join(lines), fix)


def _hard_failure(ctx: Context, hard: Attempt) -> tuple[str, str]:
    """Reason and fix when a credential raised, which ends the chain: that credential is the one to fix."""
    if hard.credential == "ManagedIdentityCredential":
        client_id, source = user_assigned_client_id(ctx.env)
        if client_id:
            return (
                "client_id_not_attached",
                f"{source}={client_id} is not a user-assigned identity attached to this app: attach it, or fix/unset "
                f"{source}",
            )
        return "managed_identity_failed", f"enable the app's system-assigned identity ({IDENTITY_ASSIGN})"
    reason, fix = _HARD_FAILURES.get(
        hard.credential, ("credential_failed", f"{hard.credential} failed: {hard.message}")
    )
    return reason, fix.replace("{resource}", audience_of(ctx.scope))


def _no_credential(ctx: Context) -> tuple[str, str]:
    """Reason and fix when every credential was unavailable, most specific first."""
    names = {a.credential: a for a in ctx.attempts}
    cli = names.get("AzureCliCredential")
    chain = _chain_setting(ctx.env)
    if ctx.managed_identity_environment and "ManagedIdentityCredential" not in names:
        return (
            "chain_excludes_managed_identity",
            f"AZURE_TOKEN_CREDENTIALS={chain} leaves out the managed identity this environment has: "
            "set AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential in Azure",
        )
    if cli is not None and "az login" in cli.message:
        return (
            "az_not_logged_in",
            "run `az login` (add --tenant <tenant id> if the OpenAI resource is in another tenant)",
        )
    if chain.lower() == "managedidentitycredential" and not ctx.looks_like_azure:
        return (
            "managed_identity_outside_azure",
            "no managed identity exists locally: set AZURE_TOKEN_CREDENTIALS=dev and run `az login`",
        )
    if in_container(ctx.env):
        return (
            "container_without_credential",
            "a container has no az login and no managed identity: see Environment below",
        )
    if ctx.looks_like_azure:
        return (
            "no_managed_identity",
            f"give the app a managed identity ({IDENTITY_ASSIGN})",
        )
    if cli is not None and "not found" in cli.message.lower():
        return (
            "az_not_installed",
            "install the Azure CLI and run `az login` (or set AZURE_TOKEN_CREDENTIALS to the tool you use)",
        )
    return "no_credential", "run `az login`, or set AZURE_TOKEN_CREDENTIALS=dev so developer tools are tried"


# --- Scope ---------------------------------------------------------------------------------------------


def expected_audience(ctx: Context) -> str:
    """The audience the configured endpoint takes: ai.azure.com for a Foundry project endpoint (it takes no
    other), else that of the app's AZURE_OPENAI_TOKEN_SCOPE."""
    if ctx.settings is not None and is_project_endpoint(ctx.settings.openai_endpoint):
        return audience_of(AI_FOUNDRY_SCOPE)
    return audience_of(ctx.app_scope)


def wrong_audience(ctx: Context) -> str | None:
    """The token's audience when it is not the one the endpoint takes, else None."""
    audience = str(ctx.claims.get("aud", ""))
    return None if audience.rstrip("/") == expected_audience(ctx) else audience


def scope_fix(ctx: Context, scope: str) -> str:
    """How to get tokens for ``scope``: set AZURE_OPENAI_TOKEN_SCOPE, unless the app asks for it already."""
    if scope != ctx.app_scope:
        return f"set AZURE_OPENAI_TOKEN_SCOPE={scope} in the app settings (now {ctx.app_scope})"
    if ctx.scope != scope:
        return (
            f"request the token with scope {scope}, the app's AZURE_OPENAI_TOKEN_SCOPE (--scope asked for {ctx.scope})"
        )
    return f"request the token with scope {scope} (AZURE_OPENAI_TOKEN_SCOPE)"


async def check_scope(ctx: Context) -> Check:
    if not ctx.has_token:
        return SCOPE.skip("no_token", "no token to inspect (Credential failed)")
    scope = ctx.scope
    override = "" if scope == ctx.app_scope else f" (--scope overrides the app's {ctx.app_scope})"
    audience = wrong_audience(ctx)
    if audience is None:
        return SCOPE.ok(f"token audience {ctx.claims.get('aud', '')} (scope {scope}){override}")
    expected = expected_audience(ctx)
    if ctx.settings is not None and is_project_endpoint(ctx.settings.openai_endpoint):
        wanted = f"AZURE_OPENAI_ENDPOINT is a Foundry project endpoint, which takes only {expected}"
    else:
        wanted = f"the app asks for {expected} (AZURE_OPENAI_TOKEN_SCOPE {ctx.app_scope})"
    return SCOPE.fail(
        "wrong_audience",
        f"token audience is {audience or '<none>'} from scope {scope}{override}; {wanted}, and Azure OpenAI "
        "answers 401 to an audience it does not take",
        scope_fix(ctx, f"{expected}{SCOPE_SUFFIX}"),
    )
