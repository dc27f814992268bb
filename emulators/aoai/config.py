"""What the emulator can be told: its deployments, role grants, quotas, latency and faults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emulators.aoai.models import KNOWN_MODELS
from emulators.aoai.models import model_for as _model_for

__all__ = [
    "KNOWN_MODELS",
    "OUTAGE_MODES",
    "BatchConfig",
    "Deployment",
    "DeploymentTier",
    "EmulatorConfig",
    "Outage",
    "OutageMode",
]

OutageMode = Literal["503", "timeout", "connection_drop"]
DeploymentTier = Literal["default", "priority"]  # a deployment's own tier (Azure's properties.service_tier)
FilterCategory = Literal["hate", "self_harm", "sexual", "violence"]
Severity = Literal["low", "medium", "high"]
OUTAGE_MODES: tuple[OutageMode, ...] = ("503", "timeout", "connection_drop")


class Outage(BaseModel):
    """A deployment down until ``until`` (epoch seconds), then answering normally again (the field may stay).

    ``"503"``: ``{"error": {"code": "ServiceUnavailable", "message": "The service is temporarily unable to process
    your request. Try again later."}}`` (the ``fault_503`` body; assumed, not taken from a captured Azure 503);
    ``"timeout"``: the request stalls until the outage ends (or the
    server stops), then the connection closes without an answer; ``"connection_drop"``: closed at once.
    Requests it fails are checked after auth and the deployment lookup, never reach admission (no quota spent)
    and are counted in ``by_status`` (``"503"`` or ``"dropped"``)."""

    model_config = ConfigDict(extra="forbid")
    mode: OutageMode = "503"
    until: float


class Deployment(BaseModel):
    """One model deployment; ``model`` decides its rules (``models.is_reasoning_model``); ``tpm``/``rpm``
    override the emulator-wide limits for it. Each deployment has its own rate window and headers.

    ``outage`` takes it down for a while (``Outage``). Two quirks reported against Azure, per deployment because
    they were seen on one model/API (gpt-4.1, Responses API, 2025-11; openai/openai-dotnet#838):
    ``unreported_rate_headers`` sends the ``x-ratelimit-*`` headers as ``-1`` (limit, remaining) and ``0``
    (reset) while still enforcing the real limits; ``omit_retry_after`` drops ``retry-after`` and
    ``retry-after-ms`` from its 429s (the SDK then falls back to its own backoff).

    ``service_tier`` is the tier a request with ``service_tier`` ``auto`` (or none) is served on. While
    ``flex_unavailable_until`` (epoch seconds) is in the future, flex requests get the flex 429 (``tiers``), not
    billed and not charged to the quota; other tiers are served as usual."""

    model_config = ConfigDict(extra="forbid")
    model: str
    tpm: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    outage: Outage | None = None
    unreported_rate_headers: bool = False
    omit_retry_after: bool = False
    service_tier: DeploymentTier = "default"
    flex_unavailable_until: float | None = None


class BatchConfig(BaseModel):
    """The Files and Batches APIs (``batches`` module docstring): which deployments are Global Batch ones, the
    service's limits, the simulated timing and the failures to inject. A batch takes all of it when it is created
    (its schedule is fixed then), so a change applies to the batches created afterwards."""

    model_config = ConfigDict(extra="forbid")
    # Deployment name -> its enqueued-token limit (None = unlimited). Only these take batch files; each must also
    # be in ``EmulatorConfig.deployments`` (its model decides the answers). A list means no limits.
    deployments: dict[str, int | None] = Field(default_factory=dict)
    # Azure's documented limits (global-batch-limits): per file, and input files per resource without/with expiry.
    max_requests_per_file: int = Field(default=100_000, ge=1)
    max_file_bytes: int = Field(default=200_000_000, ge=1)
    max_input_files: int = Field(default=500, ge=0)
    max_input_files_with_expiry: int = Field(default=10_000, ge=0)
    # A new upload reads "pending" for ``file_processing_seconds`` (Azure processes a file before a batch may use
    # it; creating one earlier is refused), then "processed", or "error" (its status_details ``file_error``) when
    # ``file_error`` is set at upload.
    file_processing_seconds: float = Field(default=1, ge=0)
    file_error: str | None = None
    # Simulated durations (seconds) of validating, in_progress (the requests are done evenly over it), finalizing
    # and cancelling; ``expire_after_seconds`` expires a batch still in progress that long after it started.
    validating_seconds: float = Field(default=0, ge=0)
    processing_seconds: float = Field(default=1, ge=0)
    finalizing_seconds: float = Field(default=0, ge=0)
    cancelling_seconds: float = Field(default=0, ge=0)
    expire_after_seconds: float | None = Field(default=None, ge=0)
    # Per-request failures: these custom_ids, plus each other request with probability ``fail_fraction`` (drawn
    # from ``fail_seed`` and the custom_id, so the same file fails the same lines), land in the error file.
    fail_custom_ids: list[str] = Field(default_factory=list)
    fail_fraction: float = Field(default=0, ge=0, le=1)
    fail_seed: int = 0
    fail_code: str = "server_error"
    # A whole batch failing at validation with this code (None = only real validation errors fail a batch).
    fail_batches_code: str | None = None
    shuffle_seed: int | None = 0  # output order: shuffled by this seed and the file's custom_ids; None = file order

    @field_validator("deployments", mode="before")
    @classmethod
    def _deployment_list(cls, value: Any) -> Any:
        return dict.fromkeys(value) if isinstance(value, list | tuple | set) else value


class EmulatorConfig(BaseModel):
    """Everything tunable at runtime (``PATCH /_emulator/config`` validates against this)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    deployments: dict[str, Deployment] = Field(
        default_factory=lambda: {"gpt-4o-mini": Deployment(model=_model_for("gpt-4o-mini"))}
    )
    # principal oid -> epoch seconds from which "Cognitive Services OpenAI User" is effective.
    grants: dict[str, float] = Field(default_factory=dict)
    grant_any: bool = False
    permission_denied_status: Literal[401, 403] = 401  # Azure usually answers 401; 403 is also reported
    api_key_status: Literal[401, 403] = 403  # disableLocalAuth: public reports show 403 AuthenticationTypeDisabled
    tpm: int | None = Field(default=None, ge=1)  # per deployment; None = unlimited
    rpm: int | None = Field(default=None, ge=1)
    default_max_tokens: int = Field(default=4096, ge=1)  # completion budget estimated when a request sets none
    rate_window_seconds: float = Field(default=60, gt=0)  # Azure's is 60 s; tests shrink it to see quota free up
    retry_after_override_seconds: float | None = Field(default=None, gt=0)
    latency_ms: float = Field(default=0, ge=0)
    per_token_ms: float = Field(default=0, ge=0)
    fault_seed: int = 0
    fault_500: float = Field(default=0, ge=0, le=1)
    fault_503: float = Field(default=0, ge=0, le=1)
    fault_drop: float = Field(default=0, ge=0, le=1)
    fault_stall: float = Field(default=0, ge=0, le=1)
    stall_seconds: float = Field(default=3600, ge=0)
    filter_trigger_prompt: str = "TRIGGER_PROMPT_FILTER"
    filter_trigger_output: str = "TRIGGER_OUTPUT_FILTER"
    # The category (and its severity) the content filter reports as filtered, on both APIs (``filters``).
    filter_category: FilterCategory = "hate"
    filter_severity: Severity = "high"
    # Background responses (``responses``): queued this long, then in_progress this long, then done. A prompt with
    # ``background_fail_trigger`` ends failed (server_error); one with ``background_stuck_trigger`` never finishes.
    background_queued_seconds: float = Field(default=0.2, ge=0)
    background_seconds: float = Field(default=2, ge=0)
    background_fail_trigger: str = "TRIGGER_BACKGROUND_FAIL"
    background_stuck_trigger: str = "TRIGGER_BACKGROUND_STUCK"
    system_fingerprint: str = "fp_b705f0c291"
    batch: BatchConfig = Field(default_factory=BatchConfig)

    @field_validator("deployments", mode="before")
    @classmethod
    def _deployment_names(cls, value: Any) -> Any:
        # Accept ["gpt-4o-mini"] or {"name": "model"} as shorthands for {"name": {"model": ...}}.
        if isinstance(value, list | tuple):
            value = {name: None for name in value}
        if isinstance(value, dict):
            return {
                k: {"model": v or _model_for(k)} if v is None or isinstance(v, str) else v for k, v in value.items()
            }
        return value

    @field_validator("grants", mode="before")
    @classmethod
    def _grant_list(cls, value: Any) -> Any:
        return dict.fromkeys(value, 0.0) if isinstance(value, list | tuple | set) else value
