"""Figure 5 and issue 13's figures: many processes under one token limit, a pool of two deployments, model outages.

- ``scaleout`` (a): K worker processes (each the local queue host with host.json's cap and the bench's
  model latency) drain N queued jobs against one deployment whose token limit is half of what **one**
  process asks for (its cap / latency, in tokens per window). Its K = 1 run is also figure 5 (one process
  under a token limit at half its demand, the shipped settings): one run, two rows (``rate_limit``). The K
  in ``Scale.scaleout_extra`` run only with ``--all-scales``; without it their rows say they were not run.
- ``pool`` (b): workers routing over ``AZURE_OPENAI_POOL`` = two resources (two emulators on two ports,
  the same deployment name on each), limits L1 (priority 1) and L2 (priority 2) summing to half of what
  one process asks for: throughput ÷ (L1 + L2).
- ``outage`` (c): jobs arriving at a steady rate while the only deployment answers 503 for ``outage_s``,
  next to the same arrivals on a healthy resource (p95 job time compared within the run); and, at the
  same time, with ``--long-outage`` only, the primary of a two-resource pool down for ``long_outage_s``
  with the secondary healthy; with ``--long-outage-alone`` only, the only deployment down as long.

Every run switches pacing on (``MODEL_ADMISSION_WAIT_SECONDS``) and sets ``MODEL_OUTAGE_TOLERANCE_SECONDS``
(with ``--shared-budget``, ``PACING_SHARED_BUDGET=true`` too); a worker that does not know a setting ignores
it. Each emulator's own counters (they count 429s and 503s) are reset just before the jobs are sent, after
every worker is listening. Workers run as ``bench.counted_host``:
each run reports the Azure Storage requests its workers made from the first send to the drain, per job, the
app's apart from the host's (``bench.storage_ops``).

The modules: ``resources`` (settings, stand-ins, counters), ``workers`` (a run's workers over one queue),
``scaling`` (a and figure 5), ``pooling`` (b), ``outages`` (c) and ``goals`` (the targets).
"""

from bench.quota.goals import targets
from bench.quota.outages import outage
from bench.quota.pooling import pool
from bench.quota.scaling import scaleout, scaleout_meets

__all__ = ["outage", "pool", "scaleout", "scaleout_meets", "targets"]
