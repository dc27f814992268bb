"""Storage settings (which connection form, and keys, SAS, dev storage in Azure, ``__credential``
set locally) and Storage access (send+delete a queue message, upload+read+delete a probe blob)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.constants import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    BLOB_OWNER_ROLE,
    QUEUE_CONTRIBUTOR_ROLE,
    STORAGE_CONNECTION,
    STORAGE_PERMISSION_CODES,
    is_development_shorthand,
)
from shared.doctor.model import STORAGE, STORAGE_ACCESS, Check, Context, one_line
from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.storage_clients import StorageEndpoints

PROBE_TEXT = "python -m shared doctor: storage probe (deleted at once)"
UNKNOWN_ACCOUNT = "<storage account>"
FIX_FIRST = "the storage settings must be fixed first"
IDENTITY_ROLES = f"'{BLOB_OWNER_ROLE}' and '{QUEUE_CONTRIBUTOR_ROLE}'"
_FAST: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10, "read_timeout": 30}
# The x-ms-error-code storage answers a request from a network its firewall does not admit: public
# network access disabled (infra's vnetEnabled) or an IP not in the rules. A missing data role is
# AuthorizationPermissionMismatch instead.
NETWORK_REFUSED_CODE = "AuthorizationFailure"
YOUR_IP = "<your public IP>"


def _parse_connection_string(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in value.split(";"):
        name, sep, rest = item.partition("=")
        if sep:
            parts[name.strip().lower()] = rest.strip()
    return parts


def _is_dev_storage(connection_string: str) -> bool:
    if is_development_shorthand(connection_string):
        return True
    parts = _parse_connection_string(connection_string)
    return parts.get("accountname") == AZURITE_ACCOUNT and parts.get("accountkey") == AZURITE_KEY


def _account_name(url: str | None) -> str:
    if not url:
        return UNKNOWN_ACCOUNT
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("127.0.0.1", "localhost"):
        return parts.path.strip("/").split("/")[0] or AZURITE_ACCOUNT
    return host.split(".")[0] or UNKNOWN_ACCOUNT


def _azure_reason(ctx: Context) -> str:
    """Why the settings are judged as Azure app settings, for the message."""
    if ctx.options.azure:
        return " (--azure)"
    found = ctx.managed_identity_environment + ctx.azure_host_variables
    return f" ({', '.join(found)} set)" if found else ""


# --- Storage settings ----------------------------------------------------------------------------------


async def check_storage(ctx: Context) -> Check:
    env = ctx.env
    try:
        ctx.storage = StorageEndpoints.from_settings(env=env)
    except ConfigurationError as exc:
        ctx.storage_problem = "storage is not configured"
        return STORAGE.fail(
            "storage_not_configured",
            str(exc),
            f"set {STORAGE_CONNECTION}__accountName (Azure) or {STORAGE_CONNECTION}=UseDevelopmentStorage=true (local)",
        )
    if ctx.storage.connection_string:
        return _check_connection_string(ctx, ctx.storage.connection_string)
    form = (
        f"identity-based: {STORAGE_CONNECTION}__queueServiceUri={ctx.storage.queue_url}, "
        f"__blobServiceUri={ctx.storage.blob_url}"
    )
    credential_setting = env.get(f"{STORAGE_CONNECTION}__credential", "").strip()
    if credential_setting.lower() == "managedidentity" and not ctx.looks_like_azure:
        ctx.storage_problem = FIX_FIRST
        return STORAGE.fail(
            "managed_identity_credential_locally",
            f"{form}; {STORAGE_CONNECTION}__credential=managedidentity is set but this is a local run: locally the "
            "identity is yours (az login), and the Functions host fails to get a managed-identity token",
            f"remove {STORAGE_CONNECTION}__credential from local.settings.json (keep it in Azure app settings only)",
        )
    extra = f", __credential={credential_setting}" if credential_setting else ""
    return STORAGE.ok(f"{form}{extra}")


def _check_connection_string(ctx: Context, connection_string: str) -> Check:
    """A connection string is fine only for the Azurite development account, and only locally."""
    raw = ctx.env.get(STORAGE_CONNECTION, "").strip()
    if _is_dev_storage(raw):
        if not ctx.looks_like_azure:
            return STORAGE.ok(
                f"connection string {STORAGE_CONNECTION}: the Azurite development account (fine locally; its key is "
                f"public). In Azure use {STORAGE_CONNECTION}__accountName with a managed identity instead",
                reason="development_storage",
            )
        ctx.storage_problem = FIX_FIRST
        return STORAGE.fail(
            "development_storage_in_azure",
            f"{STORAGE_CONNECTION} is the Azurite development account connection string (an account key), "
            "but these settings look like Azure" + _azure_reason(ctx),
            f"in Azure remove {STORAGE_CONNECTION} and set {STORAGE_CONNECTION}__accountName=<account> "
            f"(+ __credential=managedidentity) with roles {IDENTITY_ROLES}",
        )
    ctx.storage_problem = FIX_FIRST
    parts = _parse_connection_string(connection_string)
    if "accountkey" in parts or "sharedaccesssignature" in parts or "sig=" in raw.lower():
        key = "accountkey" in parts
        kind = "an account key (AccountKey=)" if key else "a SAS (SharedAccessSignature=)"
        where = "app settings" if ctx.looks_like_azure else "local.settings.json"
        return STORAGE.fail(
            "storage_account_key" if key else "storage_sas",
            f"{STORAGE_CONNECTION} is a connection string with {kind} for account "
            f"{parts.get('accountname', '?')}: no keys anywhere",
            f"remove {STORAGE_CONNECTION} from the {where}; set {STORAGE_CONNECTION}__accountName="
            f"{parts.get('accountname', '<account>')} and grant the identity {IDENTITY_ROLES}, then rotate the key",
        )
    return STORAGE.fail(
        "connection_string_without_credential",
        f"{STORAGE_CONNECTION} is a connection string with no credential in it",
        f"use identity-based {STORAGE_CONNECTION}__accountName (or __queueServiceUri and __blobServiceUri)",
    )


# --- Storage access ------------------------------------------------------------------------------------


def _not_probed(ctx: Context) -> Check | None:
    """The skip line when an earlier check leaves nothing to probe with, else None."""
    if ctx.storage is None or ctx.storage_problem:
        return STORAGE_ACCESS.skip(
            "storage_settings_failed", f"not probed: {ctx.storage_problem or 'no storage settings'}"
        )
    if ctx.settings is None:
        return STORAGE_ACCESS.skip("settings_failed", "settings are incomplete (Settings failed)")
    if ctx.storage.connection_string is None and (ctx.credential is None or not ctx.has_token):
        return STORAGE_ACCESS.skip("no_token", "identity-based storage needs a token (Credential failed)")
    return None


async def check_storage_access(ctx: Context) -> Check:
    if (skipped := _not_probed(ctx)) is not None:
        return skipped
    assert ctx.storage is not None and ctx.settings is not None
    settings = ctx.settings
    who = f" as {ctx.principal}" if ctx.storage.connection_string is None else " with the connection string"
    step = "queue"
    try:
        await _probe_queue(ctx.storage, ctx.credential, settings)
        step = "blob"
        if not await _probe_blob(ctx.storage, ctx.credential, settings):
            return STORAGE_ACCESS.warn(
                "container_not_created",
                f"queue '{settings.jobs_queue}': send+delete ok{who}; container "
                f"'{settings.results_container}' does not exist yet (the worker creates it on first result)",
                f"create it with the infrastructure, or grant '{BLOB_OWNER_ROLE}' so the worker can",
            )
    except Exception as exc:
        return _storage_failed(ctx, exc, step)
    return STORAGE_ACCESS.ok(
        f"queue '{settings.jobs_queue}': send+delete ok; container '{settings.results_container}': "
        f"write+read+delete of _doctor/<uuid> ok{who}"
    )


async def _probe_queue(storage: StorageEndpoints, credential: Any, settings: Settings) -> None:
    async with storage.queue_service(credential) as queues:
        queue = queues.get_queue_client(settings.jobs_queue)
        sent = await queue.send_message(
            PROBE_TEXT, visibility_timeout=59, time_to_live=60, **_FAST
        )  # invisible, and gone within a minute even if the delete below never happens
        await queue.delete_message(sent.id, sent.pop_receipt, **_FAST)


async def _probe_blob(storage: StorageEndpoints, credential: Any, settings: Settings) -> bool:
    """Write, read back and delete a ``_doctor/<uuid>`` blob; False when the container does not exist."""
    async with storage.blob_service(credential) as blobs:
        container = blobs.get_container_client(settings.results_container)
        name = f"_doctor/{uuid.uuid4()}"
        try:
            await container.upload_blob(name, PROBE_TEXT.encode(), overwrite=False, **_FAST)
        except ResourceNotFoundError:
            return False
        try:
            data = await (await container.download_blob(name, **_FAST)).readall()
        finally:
            await container.delete_blob(name, **_FAST)
    if data != PROBE_TEXT.encode():
        raise ValueError("the probe blob read back different bytes")
    return True


def _storage_failed(ctx: Context, exc: Exception, step: str) -> Check:
    assert ctx.settings is not None and ctx.storage is not None
    queue = step == "queue"
    kind, name = ("queue", ctx.settings.jobs_queue) if queue else ("container", ctx.settings.results_container)
    target = f"{kind} '{name}'"
    url = ctx.storage.queue_url if queue else ctx.storage.blob_url
    if url is None and ctx.storage.connection_string:
        url = _conn_endpoint(ctx.storage.connection_string, step)
    account = _account_name(url)
    code = getattr(exc, "error_code", None)
    if isinstance(exc, ResourceNotFoundError):
        return STORAGE_ACCESS.fail(
            f"{kind}_not_found",
            f"{target} does not exist ({code or '404'})",
            f"create it: az storage {kind} create --name {name} --account-name {account} --auth-mode login "
            "(or deploy the infrastructure; locally `make run` creates it)",
        )
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        return _forbidden(ctx, exc, code, target, account, QUEUE_CONTRIBUTOR_ROLE if queue else BLOB_OWNER_ROLE)
    if isinstance(exc, ClientAuthenticationError):
        return STORAGE_ACCESS.fail(
            "no_storage_token", f"no token for storage: {one_line(exc.message or str(exc))}", "see Credential above"
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError | OSError):
        return STORAGE_ACCESS.fail(
            "storage_unreachable",
            f"cannot reach {url or 'the storage endpoint'}: {one_line(str(exc))}",
            f"check {STORAGE_CONNECTION}__accountName / __queueServiceUri / __blobServiceUri; locally start Azurite "
            "(`make run` or `python -m emulators.azurite`)",
        )
    if isinstance(exc, ValueError) and "https" in str(exc).lower():
        return STORAGE_ACCESS.fail(
            "https_required", one_line(str(exc)), "identity-based storage needs https:// service URIs"
        )
    return STORAGE_ACCESS.fail("unexpected_error", f"{target}: {type(exc).__name__}: {one_line(str(exc))}")


def _forbidden(ctx: Context, exc: HttpResponseError, code: str | None, target: str, account: str, role: str) -> Check:
    if code == NETWORK_REFUSED_CODE:
        return _network_refused(ctx, target, account, role)
    if code in STORAGE_PERMISSION_CODES:
        return STORAGE_ACCESS.fail(
            "storage_role_missing",
            f"403 {code} on {target}: principal {ctx.principal} lacks '{role}' on account {account}",
            f'az role assignment create --assignee {ctx.oid} --role "{role}" --scope $(az storage account show '
            f"--name {account} --query id -o tsv)",
        )
    return STORAGE_ACCESS.fail(
        "storage_forbidden",
        f"403 {code or ''} on {target}: the token or key was refused: {one_line(exc.message or str(exc))}",
        "identity-based storage needs a token for https://storage.azure.com from the account's tenant; "
        "check the account's 'Allow storage account key access' / tenant",
    )


def _conn_endpoint(connection_string: str, step: str) -> str:
    parts = _parse_connection_string(connection_string)
    if endpoint := parts.get("queueendpoint" if step == "queue" else "blobendpoint"):
        return endpoint
    return f"https://{parts.get('accountname', UNKNOWN_ACCOUNT)}.core.windows.net"


def _network_refused(ctx: Context, target: str, account: str, role: str) -> Check:
    """403 AuthorizationFailure: the account does not take requests from this network."""
    detail = (
        f"403 {NETWORK_REFUSED_CODE} on {target}: account {account} refuses this network (which says nothing about "
        f"the role yet): its public network access is disabled (private endpoints only: infra's vnetEnabled) or its "
        f"firewall does not admit this address. Inside the VNet the name must resolve to the private endpoint "
        f"(privatelink DNS zone linked to the VNet); once the network is let in, a missing '{role}' shows as "
        "AuthorizationPermissionMismatch"
    )
    if ctx.looks_like_azure:
        return STORAGE_ACCESS.fail(
            "public_access_disabled",
            detail,
            "the app reaches storage only through its private endpoints: check the Function App's VNet integration "
            "(virtualNetworkSubnetId) and that the privatelink.blob/queue/table zones are linked to that VNet "
            "(docs/deploy.md#private-networking)",
        )
    return STORAGE_ACCESS.fail(
        "public_access_disabled",
        detail,
        f"run it from inside the VNet (or a VNet peered with it), or let your IP in for a while: "
        f"az storage account update -n {account} --public-network-access Enabled --default-action Deny && "
        f"az storage account network-rule add --account-name {account} --ip-address {YOUR_IP}; and afterwards: "
        f"az storage account network-rule remove --account-name {account} --ip-address {YOUR_IP} && "
        f"az storage account update -n {account} --public-network-access Disabled",
    )
