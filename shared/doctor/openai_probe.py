"""Azure OpenAI: each deployment the worker may call (the pool's entries, else AZURE_OPENAI_ENDPOINT's deployments)
probed through the API it declares (``probes``: a 1-token chat completion, or a minimal Responses call), through the
same SDK path as the worker; each way it fails is mapped to the setting or role to fix (``--wait`` retries
PermissionDenied while a role assignment propagates). A deployment declared chat whose model takes the Responses
API only (Azure's 400 OperationNotSupported) is named with the setting that declares it."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from urllib.parse import urlsplit

import openai
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import get_bearer_token_provider
from openai import AsyncOpenAI

from shared.connections import create_openai_client
from shared.constants import OPENAI_USER_ROLE, SCOPE_SUFFIX, audiences_named
from shared.doctor.batch_probe import check_batch
from shared.doctor.credential import expected_audience, scope_fix, wrong_audience
from shared.doctor.model import OPENAI, Check, Context, one_line
from shared.doctor.probes import probe_once, refuses_chat, responses_fix, responses_once
from shared.jobs import Api
from shared.settings import Settings

WAIT_INTERVALS = (5.0, 7.0, 10.0)  # then 10 s each time
OPENAI_HOST_DOMAINS = ("openai.azure.com", "cognitiveservices.azure.com", "services.ai.azure.com")
NO_AUTH_PROBLEM = "nothing to fix for auth"
ROUTES: dict[Api, str] = {"chat": "chat/completions", "responses": "responses"}
REFUSAL_ADVICE: dict[Api, str] = {
    "chat": "check the deployment's model accepts max_completion_tokens",
    "responses": "check the deployment's model takes the Responses API (else declare it chat: AZURE_OPENAI_API, or "
    'its AZURE_OPENAI_POOL entry\'s "api")',
}


def _service_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return one_line(body["message"])
    return one_line(exc.message)


def _openai_resource_scope(ctx: Context, settings: Settings) -> str:
    """``--scope`` for ``az role assignment create``: the OpenAI resource, never the subscription."""
    if ctx.options.openai_resource_id:
        return ctx.options.openai_resource_id
    host = urlsplit(settings.openai_endpoint).hostname or ""
    name, _, domain = host.partition(".")
    if domain in OPENAI_HOST_DOMAINS:
        return f"$(az cognitiveservices account show --name {name} --resource-group <resource-group> --query id -o tsv)"
    return '"<OpenAI resource id>"'


def _is_permission_denied(exc: Exception) -> bool:
    return isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError) and (
        exc.code == "PermissionDenied"
    )


async def check_openai(ctx: Context) -> Check:
    """Probe every deployment the worker may call, each through the API it declares: the identity needs the role
    on each resource, and a failover target that refuses, or a deployment declared with the wrong API, is found
    now, not in an outage or on the first job."""
    if ctx.settings is None:
        return OPENAI.skip("settings_failed", "settings are incomplete (Settings failed)")
    if ctx.credential is None or not ctx.has_token:
        return OPENAI.skip("no_token", "no token (Credential failed)")
    settings = ctx.settings
    pooled = bool(ctx.env.get("AZURE_OPENAI_POOL", "").strip())
    entries = list(dict.fromkeys((e.endpoint, e.deployment, e.api) for e in settings.pool))
    # The batch lane's APIs are checked once, with the first deployment on the batch lane's own resource.
    batch_entry = next((i for i, entry in enumerate(entries) if entry[0] == settings.openai_endpoint), None)
    checks = []
    for index, (endpoint, deployment, api) in enumerate(entries):
        one = dataclasses.replace(settings, openai_endpoint=endpoint, default_deployment=deployment)
        if index != batch_entry:
            one = dataclasses.replace(one, batch_deployment="")
        checks.append(await _check_deployment(ctx, one, api, pooled))
    if len(checks) == 1:
        return checks[0]
    source = "AZURE_OPENAI_POOL" if pooled else "AZURE_OPENAI_ALLOWED_DEPLOYMENTS"
    worst = next((c for c in checks if c.status == "fail"), None) or next((c for c in checks if c.status != "ok"), None)
    if worst is None:
        return OPENAI.ok(f"every deployment of {source} ({len(checks)}):\n" + "\n".join(c.detail for c in checks))
    index = checks.index(worst)
    return dataclasses.replace(worst, detail=f"{source} entry {index + 1} of {len(checks)}: {worst.detail}")


async def _check_deployment(ctx: Context, settings: Settings, api: Api, pooled: bool) -> Check:
    """The probe of one deployment, ``settings.openai_endpoint`` / ``default_deployment``, through ``api``."""
    assert ctx.credential is not None
    where = f"{settings.openai_endpoint}, deployment {settings.default_deployment}"
    client = create_openai_client(
        dataclasses.replace(settings, openai_timeout=min(settings.openai_timeout, 30.0)),
        get_bearer_token_provider(ctx.credential, ctx.scope),
        max_retries=0,
    )
    started = time.monotonic()
    async with client:
        try:
            served = await probe_once(api, settings.default_deployment, client)
        except Exception as exc:
            if api == "chat" and refuses_chat(exc):
                return await _declared_chat(settings, client, exc, where, pooled)
            if not (_is_permission_denied(exc) and ctx.options.wait > 0):
                return _openai_failed(ctx, settings, exc, where, api=api)
            try:
                served = await _wait_for_role(ctx, settings, client, api, started, exc)
            except Exception as again:
                return _openai_failed(ctx, settings, again, where, waited=time.monotonic() - started, api=api)
            waited = OPENAI.ok(
                f"{where} answered after the role took effect ({time.monotonic() - started:.0f} s of --wait) "
                f"for {ctx.principal}; {served}",
                reason="ok_after_wait",
            )
            return await check_batch(ctx, settings, client, waited)
        return await check_batch(ctx, settings, client, OPENAI.ok(f"{where} answered for {ctx.principal}; {served}"))


async def _declared_chat(
    settings: Settings, client: AsyncOpenAI, refusal: Exception, where: str, pooled: bool
) -> Check:
    """A deployment declared chat whose model takes the Responses API only: every job sent to it would fail
    ``responses_only``. A Responses call says whether declaring it so is the whole fix."""
    assert isinstance(refusal, openai.APIStatusError)
    deployment = settings.default_deployment
    try:
        confirmed = f"a Responses call to it answered: {await responses_once(deployment, client)}"
    except Exception as exc:
        confirmed = f"a Responses call to it failed too ({type(exc).__name__}: {one_line(str(exc))})"
    return OPENAI.fail(
        "responses_only",
        f"{refusal.status_code} {refusal.code or ''} from {where}: {_service_message(refusal)}\n"
        f"its model takes the Responses API only, and the deployment is declared chat: every job sent to it would "
        f"fail responses_only; {confirmed}",
        responses_fix(deployment, pooled, settings.openai_endpoint),
    )


async def _count_down(ctx: Context, note: str, delay: float, left: float) -> None:
    """Sleep ``delay`` seconds saying so on stderr: a live countdown on a terminal, one line in logs."""
    if not ctx.stderr.isatty():
        ctx.stderr.write(f"{note} {delay:.0f} s, {left:.0f} s left\n")
        ctx.stderr.flush()
        await asyncio.sleep(delay)
        return
    deadline = time.monotonic() + left
    ticks = math.ceil(delay)
    for remaining in range(ticks, 0, -1):
        ctx.stderr.write(f"\r{note} {remaining:3d} s, {deadline - time.monotonic():4.0f} s left ")
        ctx.stderr.flush()
        await asyncio.sleep(min(1.0, delay - (ticks - remaining)))
    ctx.stderr.write("\n")


async def _wait_for_role(
    ctx: Context, settings: Settings, client: AsyncOpenAI, api: Api, started: float, denied: Exception
) -> str:
    """Retry while PermissionDenied, with a countdown on stderr, until ``--wait`` runs out.

    Returns once a call succeeds; raises the last error (PermissionDenied when time ran out)."""
    deadline = started + ctx.options.wait
    attempt = 1
    while (left := deadline - time.monotonic()) > 0:
        delay = min(WAIT_INTERVALS[min(attempt - 1, len(WAIT_INTERVALS) - 1)], left)
        note = f"  PermissionDenied (attempt {attempt}): the role may still be propagating; retrying in"
        await _count_down(ctx, note, delay, left)
        attempt += 1
        try:
            served = await probe_once(api, settings.default_deployment, client)
        except Exception as exc:
            if not _is_permission_denied(exc):
                raise
            denied = exc
            continue
        ctx.stderr.write(f"  attempt {attempt}: the role is in effect\n")
        ctx.stderr.flush()
        return served
    raise denied


def _openai_failed(
    ctx: Context, settings: Settings, exc: Exception, where: str, waited: float | None = None, api: Api = "chat"
) -> Check:
    if isinstance(exc, openai.APIStatusError) and _is_permission_denied(exc):
        return _role_missing(ctx, settings, exc, where, waited)
    if isinstance(exc, openai.PermissionDeniedError) and _network_refused(exc):
        return _public_access_disabled(ctx, settings, exc, where)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return _unauthorized(ctx, exc, where)
    if isinstance(exc, openai.NotFoundError):
        return _not_found(settings, exc, api)
    return _other_failure(settings, exc, where, api)


def _role_missing(
    ctx: Context, settings: Settings, exc: openai.APIStatusError, where: str, waited: float | None
) -> Check:
    still = f"; still denied after {waited:.0f} s of --wait" if waited is not None else ""
    advice = "" if waited is not None else "; rerun with --wait to retry until it applies"
    return OPENAI.fail(
        "role_missing" if waited is None else "role_missing_after_wait",
        f"{exc.status_code} PermissionDenied from {where}: {_service_message(exc)}\n"
        f"principal {ctx.principal} lacks the '{OPENAI_USER_ROLE}' role on the Azure OpenAI resource{still}. "
        f"A new role assignment takes up to ~10 minutes to apply{advice}",
        f'az role assignment create --assignee {ctx.oid} --role "{OPENAI_USER_ROLE}" '
        f"--scope {_openai_resource_scope(ctx, settings)}",
    )


def _unauthorized(ctx: Context, exc: openai.AuthenticationError | openai.PermissionDeniedError, where: str) -> Check:
    """401/403 other than PermissionDenied: the request's credential itself was refused."""
    if exc.code == "AuthenticationTypeDisabled":
        return OPENAI.fail(
            "api_key_sent",
            f"{exc.status_code} {exc.code}: {_service_message(exc)}",
            "the request carried an api-key header: remove AZURE_OPENAI_API_KEY / api_key and use Entra ID",
        )
    detail = f"{exc.status_code} from {where}: {_service_message(exc)}"
    audience = str(ctx.claims.get("aud", "")).rstrip("/")
    # The 401 names the audiences the endpoint takes: that, not a guess from its URL, says which scope to set.
    if (accepted := audiences_named(_service_message(exc))) and audience not in accepted:
        return OPENAI.fail(
            "wrong_audience",
            f"{detail}\nthe endpoint takes tokens for {' or '.join(accepted)}; this one's audience is "
            f"{audience or '?'} (scope {ctx.scope})",
            scope_fix(ctx, f"{accepted[0]}{SCOPE_SUFFIX}"),
        )
    if not accepted and wrong_audience(ctx) is not None:
        return OPENAI.fail(
            "wrong_audience",
            f"{detail}\nthe token's audience is {audience or '?'}, not {expected_audience(ctx)} (see Scope)",
            scope_fix(ctx, f"{expected_audience(ctx)}{SCOPE_SUFFIX}"),
        )
    return OPENAI.fail(
        "token_rejected",
        f"{detail}\nthe token has the right audience, so it is expired or from another tenant than the resource "
        f"(token tid {ctx.claims.get('tid', '?')})",
        "`az login --tenant <the OpenAI resource's tenant id>` (or check this machine's clock)",
    )


def _not_found(settings: Settings, exc: openai.NotFoundError, api: Api) -> Check:
    if exc.code == "DeploymentNotFound":
        return OPENAI.fail(
            "deployment_not_found",
            f"404 DeploymentNotFound: no deployment named '{settings.default_deployment}' on "
            f"{settings.openai_endpoint}: {_service_message(exc)}",
            "set AZURE_OPENAI_DEPLOYMENT to a deployment name listed by `az cognitiveservices account "
            "deployment list -n <resource> -g <resource-group> --query [].name`",
        )
    return OPENAI.fail(
        "endpoint_not_found",
        f"404 from {settings.openai_base_url}{ROUTES[api]}: {_service_message(exc)}",
        "set AZURE_OPENAI_ENDPOINT to https://<resource>.openai.azure.com (no path: the worker adds /openai/v1/), "
        "or a Foundry project's https://<resource>.services.ai.azure.com/api/projects/<project>",
    )


def _other_failure(settings: Settings, exc: Exception, where: str, api: Api) -> Check:
    """Authorized but refused (warnings), unreachable, failing, or an error of the credential while calling."""
    if isinstance(exc, openai.RateLimitError):
        return OPENAI.warn(
            "throttled",
            f"authorized, but throttled (429): {_service_message(exc)}",
            f"{NO_AUTH_PROBLEM}; raise the deployment's TPM quota if this persists",
        )
    if isinstance(exc, openai.BadRequestError):
        return OPENAI.warn(
            "probe_refused",
            f"authorized; the deployment refused the probe (400 {exc.code}): {_service_message(exc)}",
            f"{NO_AUTH_PROBLEM}; {REFUSAL_ADVICE[api]}",
        )
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        cause = exc.__cause__ or exc
        return OPENAI.fail(
            "unreachable",
            f"cannot reach {settings.openai_endpoint}: {one_line(str(cause) or type(cause).__name__)}",
            "check AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com, the custom subdomain) and that "
            "this network can reach it (private endpoint, firewall, DNS)",
        )
    if isinstance(exc, openai.APIStatusError):
        return OPENAI.fail(
            "service_error",
            f"{exc.status_code} from {where}: {_service_message(exc)}",
            "the service is failing; retry later and check the resource's health in the portal",
        )
    if isinstance(exc, ClientAuthenticationError):
        return OPENAI.fail(
            "credential_failed",
            f"the credential failed while calling: {one_line(exc.message)}",
            "see Credential above",
        )
    return OPENAI.fail("unexpected_error", f"{type(exc).__name__}: {one_line(str(exc))}", "see the error above")


# What Azure OpenAI says (403) to a request from a network it does not admit: public network access
# disabled (infra's vnetEnabled: private endpoint only) or an IP outside its network rules. Matched
# on the message, lower case: the wording is as publicly reported, not confirmed against documentation.
NETWORK_REFUSALS = (
    "public access is disabled",
    "virtual network/firewall rules",
    "not from an approved private",
)


def _network_refused(exc: openai.PermissionDeniedError) -> bool:
    said = f"{_service_message(exc)} {exc.message}".lower()
    return any(marker in said for marker in NETWORK_REFUSALS)


def _public_access_disabled(ctx: Context, settings: Settings, exc: openai.PermissionDeniedError, where: str) -> Check:
    detail = (
        f"{exc.status_code} from {where}: {_service_message(exc)}\n"
        "the account refuses this network (which says nothing about the token or role yet): public network "
        "access is disabled (private endpoint only: infra's vnetEnabled) or its firewall does not admit this "
        "address. Inside the VNet the endpoint must resolve to the private endpoint (privatelink.openai.azure.com "
        "linked to the VNet)"
    )
    if ctx.looks_like_azure:
        return OPENAI.fail(
            "public_access_disabled",
            detail,
            "the app reaches Azure OpenAI only through its private endpoint: check the Function App's VNet "
            "integration (virtualNetworkSubnetId) and that privatelink.openai.azure.com and "
            "privatelink.cognitiveservices.azure.com are linked to that VNet (docs/deploy.md#private-networking)",
        )
    host = urlsplit(settings.openai_endpoint).hostname or ""
    name = host.partition(".")[0] if host.partition(".")[2] in OPENAI_HOST_DOMAINS else "<resource>"
    resource = _openai_resource_scope(ctx, settings)
    rule = f"-g <resource-group> -n {name} --ip-address <your public IP>"
    return OPENAI.fail(
        "public_access_disabled",
        detail,
        "run it from inside the VNet (or a VNet peered with it), or let your IP in for a while: "
        f"az resource update --ids {resource} --set properties.publicNetworkAccess=Enabled && "
        f"az cognitiveservices account network-rule add {rule}; and afterwards: "
        f"az cognitiveservices account network-rule remove {rule} && "
        f"az resource update --ids {resource} --set properties.publicNetworkAccess=Disabled",
    )
