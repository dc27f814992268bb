"""Names and values that never change between deployments: one home for each (cheap to import: no SDKs)."""

from __future__ import annotations

import re

# Entra ID scopes of Azure OpenAI. A token for any other audience is refused with 401.
# The app asks for AZURE_OPENAI_TOKEN_SCOPE (shared/settings/), by default the classic one; a Foundry project
# endpoint (https://<resource>.services.ai.azure.com/api/projects/<project>) accepts only the ai.azure.com audience.
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
AI_FOUNDRY_SCOPE = "https://ai.azure.com/.default"
SCOPE_SUFFIX = "/.default"
# Azure's 401 names the audience(s) it takes: "... audience is incorrect (https://cognitiveservices.azure.com), ..."
# and, on endpoints that take either, "(https://cognitiveservices.azure.com/ or https://ai.azure.com/)".
_AUDIENCE_NAMED = re.compile(r"audience is incorrect \(([^)]*)\)", re.IGNORECASE)
STORAGE_CONNECTION = "AzureWebJobsStorage"

# --- Data-plane roles --------------------------------------------------------------------------------
# Built-in role names as `az role assignment create --role` takes them; the ids are the same in every
# tenant (infra/app/rbac.bicep grants by id; tests/infra checks each id against ROLE_IDS).
OPENAI_USER_ROLE = "Cognitive Services OpenAI User"  # call the model (the worker, a developer)
BLOB_OWNER_ROLE = "Storage Blob Data Owner"  # the Functions host's own blobs (leases, deployment package)
BLOB_CONTRIBUTOR_ROLE = "Storage Blob Data Contributor"  # a producer writing claim-check payloads
BLOB_READER_ROLE = "Storage Blob Data Reader"  # a producer reading results
QUEUE_CONTRIBUTOR_ROLE = "Storage Queue Data Contributor"  # the worker: trigger, re-enqueue, poison, notices
QUEUE_SENDER_ROLE = "Storage Queue Data Message Sender"  # a producer submitting jobs
QUEUE_PROCESSOR_ROLE = "Storage Queue Data Message Processor"  # a producer following its reply queue
TABLE_CONTRIBUTOR_ROLE = "Storage Table Data Contributor"  # the Functions host (timers, diagnostics)
METRICS_PUBLISHER_ROLE = "Monitoring Metrics Publisher"  # Application Insights without a key
ROLE_IDS = {
    OPENAI_USER_ROLE: "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    BLOB_OWNER_ROLE: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    BLOB_CONTRIBUTOR_ROLE: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    BLOB_READER_ROLE: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    QUEUE_CONTRIBUTOR_ROLE: "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    QUEUE_SENDER_ROLE: "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    QUEUE_PROCESSOR_ROLE: "8a0f0c08-91a1-4084-bc3d-661d67233fed",
    TABLE_CONTRIBUTOR_ROLE: "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    METRICS_PUBLISHER_ROLE: "3913510d-42f4-4e42-8a64-420c390055eb",
}
# x-ms-error-code of a storage 403 that means "this identity has no data role here"
# (AuthorizationFailure is also what a storage firewall answers to a network it does not admit).
STORAGE_PERMISSION_CODES = ("AuthorizationPermissionMismatch", "AuthorizationFailure")

# --- Queue and container names -----------------------------------------------------------------------
DEFAULT_JOBS_QUEUE = "jobs"
DEFAULT_RESULTS_CONTAINER = "results"
DEFAULT_PAYLOADS_CONTAINER = "job-payloads"
DEFAULT_REPLY_QUEUE = "job-replies"
# The batch lane's blobs in the worker-only container (STAGING_CONTAINER, beside the retry store's
# ``retries/``): staged jobs and manifests (shared/batch/records.py); ``status`` counts them too.
STAGED_PREFIX = "jobs/"
MANIFEST_PREFIX = "batches/"
# Storage's rule for queue and container names: 3-63 lower-case letters, digits and hyphens, starting
# and ending with a letter or digit, no two hyphens in a row.
# NAME_PATTERN is also the JSON Schema's (no look-ahead there), so the double-hyphen rule is separate.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
NAME_RULE = "3-63 lower-case letters, digits and single hyphens"
_NAME = re.compile(NAME_PATTERN)


def is_valid_name(name: str) -> bool:
    """True when ``name`` may name a queue or a blob container."""
    return _NAME.match(name) is not None and "--" not in name


# --- Token audiences -----------------------------------------------------------------------------------


def audience_of(scope: str) -> str:
    """``https://x/.default`` -> ``https://x``: the ``aud`` a token asked for with that scope carries."""
    return scope.removesuffix(SCOPE_SUFFIX).rstrip("/")


def audiences_named(message: str) -> tuple[str, ...]:
    """The audiences an Azure OpenAI 401 says it accepts (none when the message names none)."""
    found = _AUDIENCE_NAMED.search(message)
    if found is None:
        return ()
    return tuple(url.rstrip("/") for url in re.findall(r"https://[^\s,)]+", found.group(1)))


# --- Azurite -------------------------------------------------------------------------------------------
# Azurite's published development account (the same on every machine; not a secret). The
# Functions host understands the `UseDevelopmentStorage=true` shorthand; the Python SDK does
# not, so it is expanded here to what it means.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(blob: str, queue: str, table: str) -> str:
    """The development account's connection string for Azurite at these service URLs."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={blob};QueueEndpoint={queue};TableEndpoint={table};"
    )


DEVELOPMENT_STORAGE = azurite_connection_string(
    *(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}" for port in (10000, 10001, 10002))
)


def is_development_shorthand(connection_string: str) -> bool:
    """True for ``UseDevelopmentStorage=true`` however it is spaced or cased."""
    return connection_string.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true"


# --- Text ---------------------------------------------------------------------------------------------


def brief(text: object, limit: int = 300) -> str:
    """One line of at most ``limit`` characters: an exception's message, or any text, for logs and errors."""
    if isinstance(text, BaseException):
        text = getattr(text, "message", None) or str(text) or type(text).__name__
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
