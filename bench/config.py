"""What a bench run is given: ``Scale`` (how much work each scenario does; ``FULL`` and ``SMOKE``) and ``Bench``
(the stack, the scale and the folders of one run). Both ``bench.scenarios`` and ``bench.quota`` import it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emulators import functions_host
from emulators.stack.environment import REPO

if TYPE_CHECKING:
    from emulators.stack.services import LocalAzure


@dataclass(frozen=True)
class Scale:
    """How much work each scenario does. ``FULL`` is ``make bench``; ``SMOKE`` exercises every path once."""

    name: str
    throughput_jobs: int
    latency_ms: float
    cpu_jobs: int
    profile_jobs: int
    az_jobs: int
    import_runs: int
    cold_sync_jobs: int
    timeout_s: float
    poll_s: float
    # Figures 5-8 (bench/quota/): pacing on, a shorter rate window than Azure's 60 s.
    quota_window_s: float
    admission_wait_s: int  # MODEL_ADMISSION_WAIT_SECONDS for those runs (the shipped default)
    outage_tolerance_s: int  # MODEL_OUTAGE_TOLERANCE_SECONDS (the shipped default)
    scaleout_processes: tuple[int, ...]  # every K of figure 6; its K = 1 run is figure 5's too
    scaleout_extra: tuple[int, ...]  # the K (of those) run only with ``--all-scales``: neither judged nor figure 5
    scaleout_jobs: int
    pool_processes: int
    pool_jobs: int
    outage_s: float  # the only deployment down this long ...
    outage_margin_s: float  # ... starting this long after the first job, arrivals going on this long after it
    outage_jobs_per_s: float
    long_outage_s: float  # the pool's primary down this long, its secondary healthy (with --long-outage);
    # with --long-outage-alone, the only deployment (no pool) down this long too
    long_outage_jobs_per_s: float


FULL = Scale(
    name="full",
    throughput_jobs=480,
    latency_ms=500,
    cpu_jobs=1000,
    profile_jobs=480,
    az_jobs=1000,
    import_runs=9,
    cold_sync_jobs=24,
    timeout_s=300,
    poll_s=0.5,
    quota_window_s=10,
    admission_wait_s=60,
    outage_tolerance_s=1800,
    scaleout_processes=(1, 4, 8, 16),
    scaleout_extra=(4,),
    scaleout_jobs=1200,
    pool_processes=1,
    pool_jobs=1200,
    outage_s=60,
    outage_margin_s=15,
    outage_jobs_per_s=2,
    long_outage_s=600,
    long_outage_jobs_per_s=0.25,
)
SMOKE = Scale(
    name="smoke",
    throughput_jobs=10,
    latency_ms=200,
    cpu_jobs=10,
    profile_jobs=10,
    az_jobs=10,
    import_runs=1,
    cold_sync_jobs=6,
    timeout_s=60,
    poll_s=0.1,
    quota_window_s=1,
    admission_wait_s=60,
    outage_tolerance_s=1800,
    scaleout_processes=(1, 2, 3),
    scaleout_extra=(2,),
    scaleout_jobs=24,
    pool_processes=1,
    pool_jobs=20,
    outage_s=2,
    outage_margin_s=1,
    outage_jobs_per_s=4,
    long_outage_s=3,
    long_outage_jobs_per_s=4,
)


@dataclass
class Bench:
    """One run: the local stack, the scale, where outputs and worker logs go, whether the long outage runs
    (``python -m bench --long-outage``), the only deployment's long outage (``--long-outage-alone``) and the
    scale-out's extra K (``--all-scales``), whether the workers share one budget (``--shared-budget``:
    ``PACING_SHARED_BUDGET=true``), and host.json's queue options."""

    stack: LocalAzure
    scale: Scale
    out_dir: Path
    logs: Path
    long_outage: bool = False
    all_scales: bool = False
    shared_budget: bool = False
    long_outage_alone: bool = False

    def __post_init__(self) -> None:
        self.options = functions_host.QueueOptions.from_host_json(REPO / "host.json")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def log_path(self, label: str) -> Path:
        return self.logs / label / "worker.log"

    def scaleout_processes(self) -> tuple[int, ...]:
        """The K the scale-out runs: all of them with ``all_scales``, else all but ``scaleout_extra``."""
        s = self.scale
        return tuple(k for k in s.scaleout_processes if self.all_scales or k not in s.scaleout_extra)
