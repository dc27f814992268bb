"""The app's own settings: ``SETTINGS`` (every name the worker reads, with its description), the queue and
containers it shares with producers (``StorageNames``), and ``Settings``, read and checked at once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.catalogue import is_responses_only
from shared.constants import (
    AI_FOUNDRY_SCOPE,
    COGNITIVE_SERVICES_SCOPE,
    DEFAULT_JOBS_QUEUE,
    DEFAULT_PAYLOADS_CONTAINER,
    DEFAULT_RESULTS_CONTAINER,
)
from shared.errors import ConfigurationError, ContainerClashError
from shared.jobs import Api
from shared.settings._read import csv, environment, storage_name, truthy, whole_number
from shared.settings.pool import (
    PoolEntry,
    check_endpoint,
    pool_from_env,
    single_endpoint_pool,
    token_scope,
    v1_base_url,
)

DEFAULT_STAGING_CONTAINER = "staging"
BATCH_MAX_REQUESTS_PER_FILE = 50_000  # default; the service takes up to 100,000 (and 200 MB) per file
BATCH_SERVICE_MAX_REQUESTS = 100_000
# Default bound on a batch file's estimated enqueued tokens: half the smallest default enqueued-token quota
# documented (gpt-4o 200M; gpt-4o-mini 1B), so a file fits the quota with another one running.
BATCH_MAX_TOKENS_PER_FILE = 100_000_000
BatchOnFailure = Literal["restage", "live"]

# Name -> one-line description: docs/settings.md's table is generated from these (`make settings-table`).
SETTINGS: dict[str, str] = {
    "AzureWebJobsStorage": "Storage connection string (Azurite locally). Leave empty in Azure and use the __ settings.",
    "AzureWebJobsStorage__accountName": "Identity-based storage: the account name (public cloud endpoints).",
    "AzureWebJobsStorage__blobServiceUri": "Identity-based storage: blob endpoint, overrides accountName.",
    "AzureWebJobsStorage__queueServiceUri": "Identity-based storage: queue endpoint, overrides accountName.",
    "AzureWebJobsStorage__tableServiceUri": "Identity-based storage: table endpoint (used by the Functions host only).",
    "AzureWebJobsStorage__credential": "`managedidentity` in Azure only; never set it for local runs.",
    "AzureWebJobsStorage__clientId": "Client id of the user-assigned identity the host uses for storage.",
    "AZURE_OPENAI_ENDPOINT": "https://<resource>.openai.azure.com (custom subdomain, required for Entra auth), or a "
    "Foundry project's https://<resource>.services.ai.azure.com/api/projects/<project> (then set "
    "AZURE_OPENAI_TOKEN_SCOPE); the worker adds /openai/v1/ (a trailing /openai/v1 given here is dropped).",
    "AZURE_OPENAI_TOKEN_SCOPE": f"Entra ID scope of the model's tokens (default {COGNITIVE_SERVICES_SCOPE}); "
    f"{AI_FOUNDRY_SCOPE} for a Foundry project endpoint, which accepts no other audience.",
    "AZURE_OPENAI_DEPLOYMENT": "Deployment used when a job names none.",
    "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": "Comma-separated deployments a job may name (default: the default deployment).",
    "AZURE_OPENAI_TIMEOUT_SECONDS": "Per-request timeout for model calls.",
    "AZURE_OPENAI_MAX_RETRIES": "Retries the openai SDK itself makes (short 429 waits, 5xx, timeouts).",
    "JOBS_QUEUE": "Queue the trigger listens on; failures land in <JOBS_QUEUE>-poison.",
    "RESULTS_CONTAINER": "Blob container for results, one <id>.json per job.",
    "PAYLOADS_CONTAINER": "Blob container for job bodies too large for a queue message (claim check).",
    "REPLY_QUEUES_ALLOWED": "Comma-separated queue names a job may name as reply_to.",
    "MAX_PROMPT_CHARS": "Largest prompt (all message texts together) a job may carry.",
    "PERMISSION_RETRY_SECONDS": "How long PermissionDenied is retried (role assignments take up to ~10 min).",
    "THROTTLE_MAX_ATTEMPTS": "How many times a long-throttled job is re-enqueued before it fails.",
    "THROTTLE_MAX_DELAY_SECONDS": "Longest wait before a re-enqueued throttled job runs again (caps retry-after).",
    "MODEL_ADMISSION_WAIT_SECONDS": "Longest wait in the pacing gate before a model call, then a throttled re-enqueue "
    "(0: pacing off).",
    "PACING_SHARED_BUDGET": "true: every instance's pacing gate books the deployment's tokens in one ledger blob in "
    "STAGING_CONTAINER instead of guessing its share from the headers (default false; see scaling.md).",
    "AZURE_OPENAI_POOL": "JSON list of deployments to route over: endpoint, deployment, and optionally name (entries "
    "sharing a name fail over to each other), priority (1 first) and weight; unset: AZURE_OPENAI_ENDPOINT with "
    "each allowed deployment.",
    "MODEL_OUTAGE_TOLERANCE_SECONDS": "How long a job waits out a model outage (every deployment it may use failing) "
    "by re-enqueuing itself, before the host's own retries and the poison queue (0: at once).",
    "RETRY_MAX_ATTEMPTS": "Most re-enqueues of one job across every cause (throttling, a missing role, an outage), "
    "then it fails with the last cause.",
    "RETRY_MAX_SECONDS": "Longest time one job spends being re-enqueued across every cause, then it fails with the "
    "last cause.",
    "RECOVERY_SPREAD_SECONDS": "When a deployment answers again after an outage, the jobs waiting it out are made "
    "visible at once, spread over this many seconds (0: they wait out their backoff).",
    # The batch lane (shared/batch/): off while BATCH_DEPLOYMENT is empty.
    "BATCH_DEPLOYMENT": "GlobalBatch deployment on AZURE_OPENAI_ENDPOINT for jobs with lane batch; empty: batch lane "
    "off (such a job fails at once, batch_lane_off).",
    "STAGING_CONTAINER": "Worker-only blob container: retry state, staged batch jobs, manifests; producers hold no "
    "role on it.",
    "BATCH_SUBMIT_SCHEDULE": "NCRONTAB schedule of the timer that submits staged jobs as batch files (every 5 min).",
    "BATCH_COLLECT_SCHEDULE": "NCRONTAB schedule of the timer that polls submitted batches and stores their results "
    "(every minute).",
    "BATCH_ON_FAILURE": "`restage` or `live`: what a failed, expired or cancelled batch does with its jobs, once.",
    "BATCH_MAX_REQUESTS_PER_FILE": "Most requests in one batch file (the service takes up to 100,000 and 200 MB).",
    "BATCH_MAX_TOKENS_PER_FILE": "Most estimated enqueued tokens in one batch file (prompt + output budget, as the "
    "live lane estimates them): at most the batch deployment's enqueued-token quota.",
    "BATCH_API": "`chat` (the default) or `responses`: the API BATCH_DEPLOYMENT's request lines go to "
    "(/chat/completions or /v1/responses); a Responses-only model needs `responses`.",
    # The Responses API, background jobs and service tiers (shared/apis.py, shared/background.py, shared/tiers.py).
    "AZURE_OPENAI_API": "`chat` (Chat Completions, the default) or `responses`: the API the deployments of "
    "AZURE_OPENAI_ENDPOINT serve (a pool entry declares its own `api`); Responses-only models need `responses`.",
    "AZURE_OPENAI_BACKGROUND": "`true`: Responses jobs run in background mode unless they say otherwise (a pool "
    "entry declares its own `background`).",
    "AZURE_OPENAI_SERVICE_TIER": "Tier asked for when a job names none: auto, default, priority or flex (empty: "
    "none sent, the deployment's own; a pool entry declares its own `service_tier`).",
    "FLEX_MAX_WAIT_SECONDS": "How long a flex job without a deadline waits for flex capacity (re-enqueued) before it "
    "goes out on the default tier.",
    "BACKGROUND_MAX_SECONDS": "Longest a background response may run; then it is cancelled and the job fails "
    "(background_timeout).",
    "BACKGROUND_POLL_SECONDS": "First wait before a background response is checked; each later wait doubles.",
    "BACKGROUND_POLL_MAX_SECONDS": "Longest wait between two checks of a background response.",
    "AZURE_CLIENT_ID": "Client id of the user-assigned managed identity (unset: system-assigned / developer login).",
    "AZURE_TOKEN_CREDENTIALS": "Narrows DefaultAzureCredential: `dev` locally, `ManagedIdentityCredential` in Azure.",
    # Telemetry (shared/telemetry/): off unless the first of these or an OTLP endpoint is set.
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "`true` in Azure: Microsoft's Python worker sends traces and "
    "metrics to Application Insights (keyless); the app then configures nothing itself.",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "Outside Azure: OTLP/HTTP collector base URL (traces to /v1/traces, metrics to "
    "/v1/metrics); the app sets up the OpenTelemetry SDK once.",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "Full OTLP/HTTP URL for traces only (overrides the base URL for traces).",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "Full OTLP/HTTP URL for metrics only (overrides the base URL for metrics).",
    "OTEL_SERVICE_NAME": "service.name of the worker's telemetry when the app sets up the SDK (default "
    "keyless-openai-worker).",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "`true` puts prompts and answers on the chat spans "
    "(gen_ai.input.messages / gen_ai.output.messages); off by default, never in metrics or logs.",
}


_CLASHES = {
    frozenset({"RESULTS_CONTAINER", "PAYLOADS_CONTAINER"}): "producers, who write claim-check payloads, could "
    "write results",
    frozenset({"RESULTS_CONTAINER", "STAGING_CONTAINER"}): "producers, who read results, could read the worker's "
    "retry state and staged jobs (other producers' prompts)",
    frozenset({"PAYLOADS_CONTAINER", "STAGING_CONTAINER"}): "producers, who write claim-check payloads, could read "
    "and rewrite the worker's retry state, staged jobs and manifests",
}


def _refuse_clash(containers: Mapping[str, str]) -> None:
    """Raise ContainerClashError naming the first two of these settings (name -> container) that share a container."""
    seen: dict[str, str] = {}
    for setting, container in containers.items():
        other = seen.setdefault(container, setting)
        if other != setting:
            raise ContainerClashError(
                f"App settings {other} and {setting} both name container {container!r}: "
                f"{_CLASHES[frozenset({other, setting})]}. Give each its own container.",
                settings=(other, setting),
                container=container,
            )


@dataclass(frozen=True)
class StorageNames:
    """The queue and containers the worker and its producers share (what a producer needs to know)."""

    jobs_queue: str = DEFAULT_JOBS_QUEUE
    results_container: str = DEFAULT_RESULTS_CONTAINER
    payloads_container: str = DEFAULT_PAYLOADS_CONTAINER
    reply_queues_allowed: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageNames:
        """JOBS_QUEUE, RESULTS_CONTAINER, PAYLOADS_CONTAINER and REPLY_QUEUES_ALLOWED, checked against
        storage's naming rule, the two containers distinct; raise ConfigurationError naming the setting to fix
        (ContainerClashError naming both when the containers are one)."""
        env = environment() if env is None else env
        results = storage_name(env, "RESULTS_CONTAINER", DEFAULT_RESULTS_CONTAINER)
        payloads = storage_name(env, "PAYLOADS_CONTAINER", DEFAULT_PAYLOADS_CONTAINER)
        _refuse_clash({"RESULTS_CONTAINER": results, "PAYLOADS_CONTAINER": payloads})
        return cls(
            jobs_queue=storage_name(env, "JOBS_QUEUE", DEFAULT_JOBS_QUEUE),
            results_container=results,
            payloads_container=payloads,
            reply_queues_allowed=tuple(
                storage_name({"REPLY_QUEUES_ALLOWED": reply}, "REPLY_QUEUES_ALLOWED")
                for reply in csv(env.get("REPLY_QUEUES_ALLOWED"))
            ),
        )


@dataclass(frozen=True)
class Settings:
    openai_endpoint: str
    default_deployment: str
    allowed_deployments: tuple[str, ...]
    openai_timeout: float
    openai_max_retries: int
    jobs_queue: str
    results_container: str
    payloads_container: str
    reply_queues_allowed: tuple[str, ...]
    max_prompt_chars: int
    permission_retry_seconds: int
    throttle_max_attempts: int
    throttle_max_delay_seconds: int
    model_admission_wait_seconds: int = 60
    pacing_shared_budget: bool = False  # PACING_SHARED_BUDGET: the gates lease from a shared ledger (shared/budget.py)
    # Every deployment the worker may call, by priority: AZURE_OPENAI_POOL, else the endpoint's allowed ones.
    pool: tuple[PoolEntry, ...] = ()
    model_outage_tolerance_seconds: int = 1800
    # One bound per job across every cause of a re-enqueue (each cause has its own bound too).
    retry_max_attempts: int = 24
    retry_max_seconds: int = 7200
    # Jobs waiting out an outage are woken when their deployment answers again, over this many seconds.
    recovery_spread_seconds: int = 5
    # AZURE_OPENAI_TOKEN_SCOPE: one scope for every endpoint of the pool (the provider caches one token).
    token_scope: str = COGNITIVE_SERVICES_SCOPE

    # The batch lane (shared/batch/); its two timer schedules are read by the host, not here.
    batch_deployment: str = ""  # the GlobalBatch deployment; empty: the batch lane is off
    staging_container: str = DEFAULT_STAGING_CONTAINER
    batch_on_failure: BatchOnFailure = "restage"
    batch_max_requests_per_file: int = BATCH_MAX_REQUESTS_PER_FILE
    batch_max_tokens_per_file: int = BATCH_MAX_TOKENS_PER_FILE
    batch_api: Api = "chat"  # the API the batch deployment's request lines go to

    # Service tiers and background jobs (shared/tiers.py, shared/background.py).
    flex_max_wait_seconds: int = 600
    background_max_seconds: int = 3600
    background_poll_seconds: int = 5
    background_poll_max_seconds: int = 60

    @property
    def openai_base_url(self) -> str:
        """The v1 data-plane route of AZURE_OPENAI_ENDPOINT (``v1_base_url``)."""
        return v1_base_url(self.openai_endpoint)

    def entries_for(self, deployment: str | None) -> tuple[PoolEntry, ...]:
        """The pool entries a job naming ``deployment`` (None: the default) may be sent to, by priority."""
        wanted = deployment or self.default_deployment
        return tuple(e for e in self.pool if wanted in (e.label, e.deployment))

    @property
    def poison_queue(self) -> str:
        return f"{self.jobs_queue}-poison"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings; raise ConfigurationError naming the setting to fix (ContainerClashError
        naming both when two of RESULTS_CONTAINER, PAYLOADS_CONTAINER and STAGING_CONTAINER are one container)."""
        env = environment() if env is None else env
        pool = pool_from_env(env)
        endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip().rstrip("/") or (pool[0].endpoint if pool else "")
        if not endpoint:
            raise ConfigurationError(
                "App setting AZURE_OPENAI_ENDPOINT is not set: use https://<resource>.openai.azure.com "
                "(or run `make run`, which starts the local emulator)."
            )
        endpoint = check_endpoint(endpoint, "AZURE_OPENAI_ENDPOINT")
        deployment = env.get("AZURE_OPENAI_DEPLOYMENT", "").strip() or (pool[0].label if pool else "")
        if not deployment:
            raise ConfigurationError("App setting AZURE_OPENAI_DEPLOYMENT is not set: name the default deployment.")
        if pool:  # the pool says what a job may name: its entries' names and deployment names
            allowed = tuple(dict.fromkeys(n for e in pool for n in (e.label, e.deployment)))
            if deployment not in allowed:
                raise ConfigurationError(
                    f"AZURE_OPENAI_DEPLOYMENT={deployment!r} names no entry of AZURE_OPENAI_POOL "
                    f"(its names and deployments: {', '.join(allowed)})."
                )
        else:
            allowed = csv(env.get("AZURE_OPENAI_ALLOWED_DEPLOYMENTS")) or (deployment,)
            if deployment not in allowed:
                allowed = (deployment, *allowed)
        names = StorageNames.from_env(env)
        lane = _batch_lane(env)
        _refuse_clash(
            {
                "RESULTS_CONTAINER": names.results_container,
                "PAYLOADS_CONTAINER": names.payloads_container,
                "STAGING_CONTAINER": lane["staging_container"],
            }
        )
        return cls(
            openai_endpoint=endpoint,
            default_deployment=deployment,
            allowed_deployments=allowed,
            openai_timeout=float(whole_number(env, "AZURE_OPENAI_TIMEOUT_SECONDS", 60)),
            openai_max_retries=whole_number(env, "AZURE_OPENAI_MAX_RETRIES", 2),
            jobs_queue=names.jobs_queue,
            results_container=names.results_container,
            payloads_container=names.payloads_container,
            reply_queues_allowed=names.reply_queues_allowed,
            max_prompt_chars=whole_number(env, "MAX_PROMPT_CHARS", 200_000),
            permission_retry_seconds=whole_number(env, "PERMISSION_RETRY_SECONDS", 900),
            throttle_max_attempts=whole_number(env, "THROTTLE_MAX_ATTEMPTS", 8),
            throttle_max_delay_seconds=max(1, whole_number(env, "THROTTLE_MAX_DELAY_SECONDS", 300)),
            model_admission_wait_seconds=whole_number(env, "MODEL_ADMISSION_WAIT_SECONDS", 60),
            pacing_shared_budget=truthy(env.get("PACING_SHARED_BUDGET")),
            pool=pool or single_endpoint_pool(env, endpoint, allowed),
            model_outage_tolerance_seconds=whole_number(env, "MODEL_OUTAGE_TOLERANCE_SECONDS", 1800),
            retry_max_attempts=max(1, whole_number(env, "RETRY_MAX_ATTEMPTS", 24)),
            retry_max_seconds=max(1, whole_number(env, "RETRY_MAX_SECONDS", 7200)),
            recovery_spread_seconds=whole_number(env, "RECOVERY_SPREAD_SECONDS", 5),
            token_scope=token_scope(env),
            flex_max_wait_seconds=whole_number(env, "FLEX_MAX_WAIT_SECONDS", 600),
            background_max_seconds=max(1, whole_number(env, "BACKGROUND_MAX_SECONDS", 3600)),
            background_poll_seconds=max(1, whole_number(env, "BACKGROUND_POLL_SECONDS", 5)),
            background_poll_max_seconds=max(1, whole_number(env, "BACKGROUND_POLL_MAX_SECONDS", 60)),
            **lane,
        )


def _batch_lane(env: Mapping[str, str]) -> dict[str, Any]:
    """BATCH_DEPLOYMENT, STAGING_CONTAINER, BATCH_ON_FAILURE, BATCH_MAX_REQUESTS_PER_FILE,
    BATCH_MAX_TOKENS_PER_FILE and BATCH_API, checked."""
    deployment = env.get("BATCH_DEPLOYMENT", "").strip()
    if deployment and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", deployment):
        raise ConfigurationError(f"App setting BATCH_DEPLOYMENT has {deployment!r}: name a deployment of the resource.")
    api = env.get("BATCH_API", "").strip() or "chat"
    if api not in ("chat", "responses"):
        raise ConfigurationError(f"App setting BATCH_API is {api!r}: use chat or responses.")
    if api == "chat" and is_responses_only(deployment):
        raise ConfigurationError(
            f"App setting BATCH_API is chat, and BATCH_DEPLOYMENT {deployment!r} is a Responses-only model (Azure "
            "refuses Chat Completions for it): set BATCH_API=responses."
        )
    on_failure = env.get("BATCH_ON_FAILURE", "").strip() or "restage"
    if on_failure not in ("restage", "live"):
        raise ConfigurationError(f"App setting BATCH_ON_FAILURE is {on_failure!r}: use restage or live.")
    per_file = whole_number(env, "BATCH_MAX_REQUESTS_PER_FILE", BATCH_MAX_REQUESTS_PER_FILE)
    if not 1 <= per_file <= BATCH_SERVICE_MAX_REQUESTS:
        raise ConfigurationError(
            f"App setting BATCH_MAX_REQUESTS_PER_FILE is {per_file}: the service takes 1 to "
            f"{BATCH_SERVICE_MAX_REQUESTS:,} requests per file."
        )
    tokens = whole_number(env, "BATCH_MAX_TOKENS_PER_FILE", BATCH_MAX_TOKENS_PER_FILE)
    if tokens < 1:
        raise ConfigurationError(
            "App setting BATCH_MAX_TOKENS_PER_FILE is 0: set the batch deployment's enqueued-token quota (or less)."
        )
    return {
        "batch_deployment": deployment,
        "staging_container": staging_container(env),
        "batch_on_failure": on_failure,
        "batch_max_requests_per_file": per_file,
        "batch_max_tokens_per_file": tokens,
        "batch_api": api,
    }


def staging_container(env: Mapping[str, str] | None = None) -> str:
    """STAGING_CONTAINER, the worker-only container (retry store, staged batch jobs, manifests), checked."""
    return storage_name(environment() if env is None else env, "STAGING_CONTAINER", DEFAULT_STAGING_CONTAINER)
