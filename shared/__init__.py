"""The keyless Azure OpenAI queue worker: everything the Function App runs lives here.

A map, by audience:

- **The contract** (everyone): ``jobs`` (the job, result and notice models, the published JSON
  Schemas), ``messages`` (the one decoder of untrusted message bytes: a job, a reference, or
  ``JobRefused``), ``constants`` (role names and ids, default names, the naming rule, the Azurite
  account), ``errors`` (one tree of typed errors under
  ``QueueWorkerError``, each saying what to do), ``settings`` (every app setting, read and
  checked in one place: the only package that reads the environment).
- **The worker runtime** (what ``function_app.py`` calls), bottom up: ``connections`` (the process's one
  credential, Azure OpenAI v1 client and storage clients), ``pacing`` and ``routing`` (each deployment's
  admission gate; the pool's failover and circuits), ``store`` (where a job's pieces live in storage:
  claim checks, the retry store, results with their status, at-least-once notices), ``policy`` (what a
  failed model call means for a job: the verdicts, ``classify``, ``plan_retry``), ``delivery`` (what a
  delivery is and how it ends, for every lane: the result stored, leftovers released, the notice, a
  re-enqueue), and the lanes: ``worker`` (the live lane: how a queued job becomes a stored result) and
  ``batch`` (jobs marked ``"lane": "batch"`` staged by the queue trigger, submitted to and collected
  from Azure OpenAI Global Batch by two timers). Beside them ``telemetry`` (opt-in OpenTelemetry: the
  job's trace, GenAI spans and metrics, queue sampling) and ``logs`` (third-party loggers kept at
  WARNING). The layers are checked by import-linter (``pyproject.toml``): none imports upwards.
- **The producer client** (other services): ``producer`` (blocking ``JobsClient``) and
  ``producer.aio`` (its async twin), which share their setup in ``producer._helpers``; it imports
  neither ``azure.functions`` nor ``openai``. ``storage_clients`` holds the storage clients it and
  ``operations`` use. ``make dist`` builds them, with the contract and the command line below (less the
  doctor), into the ``keyless-openai-jobs`` package a service installs alone (``pyproject.toml``).
- **The command line** (people and scripts): ``python -m shared`` (``__main__``) with ``cli``
  (``cli.jobs``: submit, result, wait, watch; ``cli.operate``: status and replay, over
  ``operations``) and ``doctor`` (diagnoses a keyless setup).
"""
