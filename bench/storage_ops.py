"""Azure Storage requests per job, from the files ``bench.counted_host`` writes (one per worker process).

The worker's requests (the app's own: results, payloads, retry state, re-enqueues, replies, any shared
budget) and the host's (queue polling, deleting or hiding a message after an invocation, poison copies) are
reported apart: the host's depend on how long the queue sits empty, not on the app.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUCKET_S = 0.1  # bench.counted_host counts per tenth of a second
COUNTS_FILE = "storage-requests.json"


def counts_path(log_path: Path) -> Path:
    """Where the counted host beside ``log_path`` (its worker.log) writes its counts."""
    return log_path.parent / COUNTS_FILE


def read_counts(path: Path, since: float, until: float) -> Counter[tuple[str, str]]:
    """(worker or host, operation) -> requests made from ``since`` to ``until`` (epoch s) in one file."""
    counts: Counter[tuple[str, str]] = Counter()
    for t, who, op, n in json.loads(path.read_text()):
        if since - BUCKET_S < t <= until:
            counts[(who, op)] += n
    return counts


def summary(paths: Sequence[Path], jobs: int, since: float, until: float) -> dict[str, Any]:
    """Requests per job, the worker's and the host's, from every process that wrote its counts (a process
    killed before it could is left out, and ``counted_processes`` says so)."""
    total: Counter[tuple[str, str]] = Counter()
    counted = 0
    for path in paths:
        if path.exists():
            total += read_counts(path, since, until)
            counted += 1
    worker = {op: n for (who, op), n in sorted(total.items()) if who == "worker"}
    host = {op: n for (who, op), n in sorted(total.items()) if who == "host"}
    per_job = (lambda n: n / jobs) if jobs else (lambda n: 0.0)
    return {
        "counted_processes": counted,
        "processes": len(paths),
        "worker_requests": sum(worker.values()),
        "worker_requests_per_job": per_job(sum(worker.values())),
        "host_requests": sum(host.values()),
        "host_requests_per_job": per_job(sum(host.values())),
        "worker_by_operation": worker,
        "host_by_operation": host,
    }
