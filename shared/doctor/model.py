"""What the doctor's checks share: the report line (:class:`Check`), each check declared once
(:class:`CheckKind`), the run's options and what the checks learn on the way (:class:`Context`)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from azure.identity.aio import DefaultAzureCredential

from shared.constants import COGNITIVE_SERVICES_SCOPE, brief
from shared.errors import ConfigurationError
from shared.settings import Settings, token_scope
from shared.storage_clients import StorageEndpoints

Status = Literal["ok", "fail", "warn", "skip"]
Outcome = Literal["served", "unavailable", "failed"]

MI_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "IMDS_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE")
AZURE_HOST_VARIABLES = ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID")  # set by App Service / Functions
UNKNOWN_PRINCIPAL = "<principal object id>"
_REASON = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, what was seen, why that status, and how to fix it."""

    check: str  # stable id for scripts: settings, credential, scope, openai, storage, ...
    title: str
    status: Status
    reason: str  # stable snake_case code for why it has this status (docs/troubleshooting.md lists them)
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            "check": self.check,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "fix": self.fix,
        }


COMMON_REASONS = ("ok", "check_crashed")  # any check: healthy, or the check itself raised


@dataclass(frozen=True)
class CheckKind:
    """A check declared once: its id for scripts, its title for people, and every reason it can give.

    Its methods make its report lines, so no call site repeats the id or title, and a reason that is
    not declared here (a typo scripts would never match) fails at once."""

    id: str
    title: str
    reasons: tuple[str, ...]

    def __post_init__(self) -> None:
        if bad := [r for r in self.reasons if not _REASON.match(r)]:
            raise ValueError(f"{self.id}: reasons are snake_case codes, got {bad}")

    def _check(self, status: Status, reason: str, detail: str, fix: str | None) -> Check:
        if reason not in self.reasons and reason not in COMMON_REASONS:
            raise ValueError(f"{self.id}: undeclared reason {reason!r}")
        return Check(self.id, self.title, status, reason, detail, fix)

    def ok(self, detail: str, reason: str = "ok") -> Check:
        return self._check("ok", reason, detail, None)

    def fail(self, reason: str, detail: str, fix: str | None = None) -> Check:
        return self._check("fail", reason, detail, fix)

    def warn(self, reason: str, detail: str, fix: str) -> Check:
        return self._check("warn", reason, detail, fix)

    def skip(self, reason: str, detail: str) -> Check:
        return self._check("skip", reason, detail, None)


# The checks, in the order they run and are reported, each with the reasons it gives besides "ok".
SETTINGS = CheckKind(
    "settings",
    "Settings",
    ("settings_invalid", "container_clash", "regional_endpoint", "settings_file_invalid", "responses_only"),
)
CREDENTIAL = CheckKind(
    "credential",
    "Credential",
    (
        "token_credentials_invalid",
        "client_id_not_attached",
        "managed_identity_failed",
        "az_token_failed",
        "service_principal_refused",
        "credential_failed",
        "chain_excludes_managed_identity",
        "az_not_logged_in",
        "managed_identity_outside_azure",
        "container_without_credential",
        "no_managed_identity",
        "az_not_installed",
        "no_credential",
    ),
)
SCOPE = CheckKind("scope", "Scope", ("no_token", "wrong_audience"))
OPENAI = CheckKind(
    "openai",
    "Azure OpenAI",
    (
        "settings_failed",
        "no_token",
        "ok_after_wait",
        "role_missing",
        "role_missing_after_wait",
        "api_key_sent",
        "wrong_audience",
        "token_rejected",
        "deployment_not_found",
        "endpoint_not_found",
        "throttled",
        "probe_refused",
        "responses_only",
        "unreachable",
        "service_error",
        "public_access_disabled",
        "credential_failed",
        "unexpected_error",
        "batch_role_missing",
        "batch_unavailable",
    ),
)
STORAGE = CheckKind(
    "storage",
    "Storage settings",
    (
        "storage_not_configured",
        "development_storage",
        "development_storage_in_azure",
        "storage_account_key",
        "storage_sas",
        "connection_string_without_credential",
        "managed_identity_credential_locally",
    ),
)
STORAGE_ACCESS = CheckKind(
    "storage-access",
    "Storage access",
    (
        "storage_settings_failed",
        "settings_failed",
        "no_token",
        "container_not_created",
        "queue_not_found",
        "container_not_found",
        "public_access_disabled",
        "storage_role_missing",
        "storage_forbidden",
        "no_storage_token",
        "storage_unreachable",
        "https_required",
        "unexpected_error",
    ),
)
ENVIRONMENT = CheckKind("environment", "Environment", ("container_without_credential", "see_credential"))
KEYS = CheckKind("keys", "Keys in settings", ("key_in_settings",))


@dataclass(frozen=True)
class Attempt:
    """What one credential of the chain did, in the SDK's own words."""

    credential: str
    outcome: Outcome
    message: str = ""


@dataclass(frozen=True)
class Options:
    settings_file: Path | None = None
    scope: str | None = None  # --scope: the token scope to test; None: the app's AZURE_OPENAI_TOKEN_SCOPE
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
    def app_scope(self) -> str:
        """The scope the worker asks for (AZURE_OPENAI_TOKEN_SCOPE; the default while that setting is invalid)."""
        if self.settings is not None:
            return self.settings.token_scope
        try:  # another setting may be what failed: the scope is still the one configured
            return token_scope(self.env)
        except ConfigurationError:
            return COGNITIVE_SERVICES_SCOPE

    @property
    def scope(self) -> str:
        """The scope this run asks tokens for: ``--scope``, else the app's."""
        return self.options.scope or self.app_scope

    @property
    def managed_identity_environment(self) -> list[str]:
        return [name for name in MI_VARIABLES if self.env.get(name)]

    @property
    def azure_host_variables(self) -> list[str]:
        return [name for name in AZURE_HOST_VARIABLES if self.env.get(name)]

    @property
    def looks_like_azure(self) -> bool:
        return self.options.azure or bool(self.managed_identity_environment or self.azure_host_variables)

    @property
    def principal(self) -> str:
        """``oid`` (plus upn or appid) of the token in use, for messages."""
        who = self.claims.get("upn") or (f"app {self.claims['appid']}" if self.claims.get("appid") else "")
        return f"{self.oid} ({who})" if who else self.oid

    @property
    def oid(self) -> str:
        return str(self.claims.get("oid", UNKNOWN_PRINCIPAL))


_LINKS = re.compile(
    r"\s*(Visit \S+ to troubleshoot this issue\.?"
    r"|See the troubleshooting guide for more information: \S+?\.(?=\s|$)"
    r"|To mitigate this issue, please refer to the troubleshooting guidelines here at \S+?\.?(?=\s|$))"
)


def one_line(text: object, limit: int = 260) -> str:
    """:func:`brief`, without the SDK's troubleshooting links (the doctor says what to do instead)."""
    return brief(_LINKS.sub("", brief(text, limit=sys.maxsize)), limit)
