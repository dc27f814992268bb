"""What one submit tick did (``SubmitReport``): ``submitter`` and its ``claims`` count into it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SubmitReport:
    """What one tick did (tests and the bench read it; the log says it in one line)."""

    manifests: int = 0  # new manifests made
    resumed: int = 0  # manifests an earlier tick had left part-way
    claimed: int = 0  # jobs this tick claimed
    submitted: list[str] = field(default_factory=list)  # batch ids created (or adopted) this tick
    uploads: int = 0
    reused_uploads: int = 0
    busy: int = 0  # manifests another instance holds
    skipped_finished: int = 0  # staged jobs whose result was final already
    deferred: int = 0  # manifests left for the next tick (throttled, a missing role, quota, a failure)
    waiting_files: int = 0  # manifests whose file was not processed yet: the next tick looks again
    failed_jobs: int = 0  # jobs failed alone: a staged copy that does not parse, a request that cannot be encoded
    dismantled: int = 0  # the lane is off: manifests not yet submitted, taken apart
    to_live: int = 0  # the lane is off: staged jobs sent to the live queue (BATCH_ON_FAILURE=live)
    lane_off: int = 0  # the lane is off: staged jobs failed with batch_lane_off
