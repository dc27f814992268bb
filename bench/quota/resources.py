"""What every quota run is given: its worker settings, its Azure OpenAI stand-ins, and their counters.

Part of figures 5-8 (``bench.quota``): the settings each run adds to the stack's, the job's token charge, the
demand of one process, another resource (an emulator on its own port), and what an emulator counted in a run.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from bench.config import Bench
from bench.harness import job_body
from emulators.aoai import estimate_request_tokens
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator, start_openai_emulator, unique_names


def worker_settings(b: Bench) -> dict[str, str]:
    """The settings every issue-13 run adds to the stack's (the rest are the shipped defaults)."""
    shared = {"PACING_SHARED_BUDGET": "true"} if b.shared_budget else {}
    return {
        "MODEL_ADMISSION_WAIT_SECONDS": str(b.scale.admission_wait_s),
        "MODEL_OUTAGE_TOLERANCE_SECONDS": str(b.scale.outage_tolerance_s),
        **shared,
    }


def tokens_per_job() -> int:
    """What the emulator (and the pacing gate) charges one bench job: prompt estimate + output budget."""
    sample = job_body(0)
    return estimate_request_tokens(
        {"messages": [{"role": "user", "content": sample["prompt"]}], **sample["parameters"]}
    )


def process_demand(b: Bench, tokens_each: int) -> float:
    """Tokens per rate window one process asks for: host.json's cap of calls, each lasting the model latency."""
    return b.options.concurrency / (b.scale.latency_ms / 1000) * b.scale.quota_window_s * tokens_each


@contextlib.contextmanager
def resource(b: Bench, **config: Any) -> Iterator[OpenAIEmulator]:
    """Another Azure OpenAI resource: an emulator on its own port, trusting the stack's tokens and granting
    its identities, with the one deployment ``DEPLOYMENT`` and ``config`` (EmulatorConfig fields)."""
    with start_openai_emulator(b.stack.issuer, deployments=[DEPLOYMENT], **config) as emulator:
        yield emulator


def pool_setting(primary: OpenAIEmulator, secondary: OpenAIEmulator) -> str:
    """``AZURE_OPENAI_POOL``: the same deployment on two resources, the first preferred."""
    entries = [
        {"name": "primary", "endpoint": primary.endpoint, "deployment": DEPLOYMENT, "priority": 1, "weight": 1},
        {"name": "secondary", "endpoint": secondary.endpoint, "deployment": DEPLOYMENT, "priority": 2, "weight": 1},
    ]
    return json.dumps(entries)


def single_settings(b: Bench, label: str, emulator: OpenAIEmulator) -> dict[str, str]:
    """A worker on ``emulator``'s one deployment (no pool)."""
    settings = b.stack.managed_identity_settings(unique_names(label))
    return {
        **settings,
        **worker_settings(b),
        "AZURE_OPENAI_ENDPOINT": emulator.endpoint,
        "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": DEPLOYMENT,
    }


def pool_settings(b: Bench, label: str, primary: OpenAIEmulator, secondary: OpenAIEmulator) -> dict[str, str]:
    """A worker routing over ``pool_setting(primary, secondary)``."""
    return {**single_settings(b, label, primary), "AZURE_OPENAI_POOL": pool_setting(primary, secondary)}


def model_counts(stats: dict[str, Any], jobs: int) -> dict[str, Any]:
    """An emulator's counters for a run: requests, 429s and 503s, per job too."""
    throttled = stats["by_status"].get("429", 0)
    return {
        "model_requests": stats["requests"],
        "model_requests_per_job": stats["requests"] / jobs if jobs else 0.0,
        "throttled_429": throttled,
        "throttled_per_job": throttled / jobs if jobs else 0.0,
        "unavailable_503": stats["by_status"].get("503", 0),
        "completions": stats["completions"],
    }


def summed_counts(per_resource: dict[str, dict[str, Any]], jobs: int) -> dict[str, Any]:
    """``model_counts`` summed over a pool's resources."""
    keys = ("model_requests", "throttled_429", "unavailable_503", "completions")
    total = {k: sum(r[k] for r in per_resource.values()) for k in keys}
    return {
        **total,
        "model_requests_per_job": total["model_requests"] / jobs if jobs else 0.0,
        "throttled_per_job": total["throttled_429"] / jobs if jobs else 0.0,
    }


def served_by(results: list[dict[str, Any]], names: dict[str, str]) -> dict[str, int]:
    """Results per pool entry, by the ``endpoint`` a result records (``unrecorded`` where it has none)."""
    served: Counter[str] = Counter()
    for r in results:
        endpoint = str(r.get("endpoint") or "").rstrip("/")
        served[names.get(endpoint, endpoint or "unrecorded")] += 1
    return dict(served)
