"""The keyless Azure OpenAI queue worker: everything the Function App runs lives here.

A map, by audience:

- **The contract** (everyone): ``jobs`` (the job, result and notice models, the one decoder of
  untrusted message bytes, the published JSON Schemas), ``constants`` (role names and ids, default
  names, the naming rule, the Azurite account), ``errors`` (one tree of typed errors under
  ``QueueWorkerError``, each saying what to do), ``settings`` (every app setting, read and checked
  in one place).
- **The worker runtime** (what ``function_app.py`` calls): ``worker`` (how a queued job becomes a
  stored result, and the failure policy), ``store`` (where a job's pieces live in storage: claim
  checks, the retry store, results with their status, at-least-once notices), ``connections``
  (the process's one credential, Azure OpenAI v1 client and storage clients), ``telemetry``
  (opt-in OpenTelemetry: the job's trace, GenAI spans and metrics, queue sampling) and ``logs``
  (third-party loggers kept at WARNING). ``batch`` is the batch lane: jobs marked ``"lane": "batch"``
  staged by the queue trigger, submitted to and collected from Azure OpenAI Global Batch by two timers.
- **The producer client** (other services): ``producer`` (blocking ``JobsClient``) and
  ``producer.aio`` (its async twin), which share their setup in ``producer._helpers``; it imports
  neither ``azure.functions`` nor ``openai``. ``storage_clients`` holds the storage clients it and
  ``operations`` use.
- **The command line** (people and scripts): ``python -m shared`` (``__main__``) with ``cli``
  (``cli.jobs``: submit, result, wait, watch; ``cli.operate``: status and replay, over
  ``operations``) and ``doctor`` (diagnoses a keyless setup).
"""
