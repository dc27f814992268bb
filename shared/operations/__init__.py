"""Operating the worker from a shell, keyless and storage only: what ``status`` and ``replay`` do.

Both use the worker's own settings (``AzureWebJobsStorage`` or its identity-based ``__`` settings,
``JOBS_QUEUE``, ``RESULTS_CONTAINER``, ``PAYLOADS_CONTAINER``, ``STAGING_CONTAINER``) and sign in as
producers do (``DefaultAzureCredential``). Roles, on the storage account or narrower: *Storage Queue Data
Contributor* on the jobs queue and ``<queue>-poison``, *Storage Blob Data Reader* on the results, payloads
and worker-only (staging) containers (``azd up`` grants the person running it more: Contributor on both
services of the account).

- ``status``: each queue's approximate depth and the age of the message at its head; the results
  stored in the last N minutes by status, and the failed ones by error code; what the worker-only
  container holds: jobs staged for the batch lane (and the oldest one's age), batches out and being
  submitted (its manifests, by state), jobs waiting in the retry store.
- ``replay``: moves poisoned messages back to the jobs queue, never one whose job already succeeded.
  A message is sent to the jobs queue before it is deleted from the poison queue, so a crash in
  between duplicates it rather than loses it (the worker's idempotency by job id makes the
  duplicate harmless); the worker replaces a failed result when the job runs again. A replayed job that still
  waits in the retry store because its pointer never went out (every send failed until the host poisoned the
  message) gets that pointer sent by the worker, due when its retry state says (``shared.delivery``).
"""

from shared.operations.client import PEEK_MAX, READ_CONCURRENCY, REPLAY_VISIBILITY, Operations
from shared.operations.reports import (
    Action,
    QueueState,
    ReplayItem,
    ReplayReport,
    ReplayRules,
    ResultCounts,
    Status,
    WorkerStore,
)

__all__ = [
    "PEEK_MAX",
    "READ_CONCURRENCY",
    "REPLAY_VISIBILITY",
    "Action",
    "Operations",
    "QueueState",
    "ReplayItem",
    "ReplayReport",
    "ReplayRules",
    "ResultCounts",
    "Status",
    "WorkerStore",
]
