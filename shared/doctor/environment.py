"""Where the doctor runs and what it was given: the settings, the container question, stray keys."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from shared.catalogue import is_responses_only
from shared.constants import STORAGE_CONNECTION
from shared.doctor.model import ENVIRONMENT, KEYS, SETTINGS, Check, Context
from shared.doctor.probes import responses_fix
from shared.errors import ConfigurationError, ContainerClashError
from shared.settings import Settings

PLATFORM_PREFIXES = ("WEBSITE_", "CONTAINER_", "GPG_")  # App Service / image variables, not app settings
SECRET_NAMES = ("AZURE_CLIENT_SECRET", "AZURE_OPENAI_AD_TOKEN", "AZURE_PASSWORD")
API_KEY_NAMES = ("AZURE_OPENAI_API_KEY", "OPENAI_API_KEY")
_KEY_VALUE = re.compile(r"(^|;)\s*(AccountKey|SharedAccessSignature|SharedAccessKey)\s*=|[?&;]sig=", re.IGNORECASE)
_CONTAINER_CGROUP = re.compile(r"docker|kubepods|containerd|libpod|lxc", re.IGNORECASE)
_SETTING_NAME = re.compile(r"\b([A-Z][A-Z0-9_]+[A-Z0-9])\b")
# How Settings words its refusal of a Responses-only deployment declared chat (PoolEntry's validator).
_RESPONSES_ONLY = re.compile(r"deployment '([^']+)' is a Responses-only model")


# --- Settings ------------------------------------------------------------------------------------------


async def check_settings(ctx: Context) -> Check:
    try:
        ctx.settings = Settings.from_env(ctx.env)
    except ContainerClashError as exc:
        first, second = exc.settings
        return SETTINGS.fail(
            "container_clash",
            f"{ctx.source}: {exc}",
            f"set {second} (or {first}) to a container of its own in {_settings_place(ctx)}: infra/ creates "
            "results, job-payloads and staging, and grants producers no role on staging",
        )
    except ConfigurationError as exc:
        declared_chat = _responses_only_declared_chat(ctx, str(exc))
        return declared_chat or SETTINGS.fail("settings_invalid", f"{ctx.source}: {exc}", _settings_fix(ctx, str(exc)))
    s = ctx.settings
    host = urlsplit(s.openai_endpoint).hostname or ""
    if host.endswith(".api.cognitive.microsoft.com"):
        ctx.settings = None  # calling it would only produce a confusing 401
        return SETTINGS.fail(
            "regional_endpoint",
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
    return SETTINGS.ok("\n".join(lines))


def _settings_place(ctx: Context) -> str:
    """Where the settings the doctor read are set."""
    return "local.settings.json Values" if ctx.options.settings_file else "the app settings (environment)"


def _settings_fix(ctx: Context, message: str) -> str:
    name = _SETTING_NAME.search(message)
    return f"set {name.group(1) if name else 'the setting named above'} in {_settings_place(ctx)}"


def _responses_only_declared_chat(ctx: Context, message: str) -> Check | None:
    """Settings refuse a deployment named like a Responses-only model but declared chat (``PoolEntry``): say which,
    why, and the one setting that declares it, rather than the generic fix."""
    match = _RESPONSES_ONLY.search(message)
    if match is None or not is_responses_only(match.group(1)):
        return None
    deployment = match.group(1)
    pooled = bool(ctx.env.get("AZURE_OPENAI_POOL", "").strip())
    declared = (
        'its AZURE_OPENAI_POOL entry declares "api": "chat" (the default)' if pooled else "AZURE_OPENAI_API is chat"
    )
    return SETTINGS.fail(
        "responses_only",
        f"{ctx.source}: deployment {deployment} is named like a model Azure serves through the Responses API only "
        f"(Chat Completions answer 400 OperationNotSupported), and {declared}: the worker refuses to start so that "
        f"no job is sent to Chat Completions (settings said: {message})",
        f"in {_settings_place(ctx)}: {responses_fix(deployment, pooled)}",
    )


def settings_file_failed(path: Path | None, problem: str) -> Check:
    """The report when local.settings.json cannot be used at all (nothing else is worth checking)."""
    return SETTINGS.fail("settings_file_invalid", problem, f"fix or remove {path}")


# --- Environment ---------------------------------------------------------------------------------------


def in_container(env: Mapping[str, str]) -> bool:
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


def _where(ctx: Context, container: bool) -> str:
    """Where this runs, as the Environment line says it."""
    az = shutil.which("az", path=ctx.env.get("PATH"))
    mi = ctx.managed_identity_environment
    where = "a container" if container else "not a container"
    if mi:
        where += f", managed-identity environment ({', '.join(mi)})"
    elif ctx.looks_like_azure:
        where += ", Azure app settings (--azure)" if ctx.options.azure else ", Azure host"
    return where + f", Azure CLI {'at ' + az if az else 'not installed'}"


async def check_environment(ctx: Context) -> Check:
    container = in_container(ctx.env)
    where = _where(ctx, container)
    if ctx.has_token:
        return ENVIRONMENT.ok(f"{where}; tokens come from {ctx.served_by}")
    if container and not ctx.managed_identity_environment:
        return ENVIRONMENT.fail(
            "container_without_credential",
            f"{where}, and no credential works: a container has no `az login` of yours and no managed identity. "
            "Options: (1) workload identity / a service principal for WorkloadIdentityCredential or "
            "EnvironmentCredential: AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_FEDERATED_TOKEN_FILE (federated, no "
            "secret) or AZURE_CLIENT_CERTIFICATE_PATH; (2) the Azure CLI in the image plus your token cache mounted: "
            "-v $HOME/.azure:/root/.azure with AZURE_TOKEN_CREDENTIALS=AzureCliCredential; (3) run it in Azure with "
            "a managed identity",
            'docker run -v "$HOME/.azure:/root/.azure" -e AZURE_TOKEN_CREDENTIALS=AzureCliCredential ... (image '
            "with az), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE",
        )
    return ENVIRONMENT.ok(f"{where}; see Credential for why no token was issued", reason="see_credential")


# --- Keys ----------------------------------------------------------------------------------------------


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


def _why_key(name: str) -> str:
    if name.upper() in API_KEY_NAMES:
        return f"{name} is set: ignored (the worker sends an Entra ID token, never an api-key)"
    if name.upper() == "AZURE_CLIENT_SECRET":
        return f"{name} is set: EnvironmentCredential would use a client secret (a key by another name)"
    return f"{name} holds a key, SAS or secret"


async def check_keys(ctx: Context) -> Check:
    names = key_settings(ctx.env)
    if not names:
        return KEYS.ok("no key, SAS or secret settings (Entra ID only)")
    where = "local.settings.json / the environment" if not ctx.looks_like_azure else "the app settings"
    return KEYS.warn(
        "key_in_settings",
        "\n".join(_why_key(name) for name in names),
        f"remove {', '.join(names)} from {where} and rotate what they held (no keys anywhere)",
    )
