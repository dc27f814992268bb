"""The batch lane: jobs marked ``"lane": "batch"`` go through Azure OpenAI Global Batch (half the price
of Global Standard, on its own enqueued-token quota, answered within 24 hours) and their results are
stored exactly as the live lane stores them.

Three steps, each safe to repeat, to crash in and to race (see each module's docstring):

- ``staging.stage`` (the queue trigger, from ``shared.worker.run``): a checked batch-lane job is stored
  create-only as ``jobs/<id>.json`` in ``STAGING_CONTAINER`` (its estimated enqueued tokens in the blob
  metadata) and its message consumed; with ``BATCH_DEPLOYMENT`` empty it fails at once (``batch_lane_off``).
- ``submitter.submit`` (timer, ``BATCH_SUBMIT_SCHEDULE``): staged jobs claimed into manifests
  (``batches/<id>.json``), each a JSONL request file (``lines``: ``/chat/completions`` or ``/v1/responses``
  lines as ``BATCH_API`` says, sized by requests, bytes and estimated tokens) uploaded with the Files API and,
  once Azure has processed it, made a batch on ``BATCH_DEPLOYMENT``; the manifest records every step, and
  every wait (the file, quota, a failing step) is bounded. With the lane switched off it ends what is staged
  (``BATCH_ON_FAILURE``).
- ``collector.collect`` (timer, ``BATCH_COLLECT_SCHEDULE``): ended batches' output and error lines become
  results through the live lane's own store path; jobs a batch never ran go back once (or wait for
  quota, bounded); batches still out are collected with the lane switched off too.

``records`` holds the blobs and their conditional writes. Everything uses the worker's one credential
and v1 client (``Runtime.openai``); for the Files and Batches APIs the identity needs their data actions:
the custom role ``infra/`` grants for the lane, or (broader) *Cognitive Services OpenAI Contributor*.
"""

from __future__ import annotations

from .collector import CollectReport, collect
from .lines import MAX_FILE_BYTES, REQUEST_URL, RESPONSES_URL, Outcome, parse_answer, plan_files, request_line
from .records import Held, Manifest, StagedJob, list_manifests, list_staged, staging
from .staging import stage
from .submit_report import SubmitReport
from .submitter import CONTRIBUTOR_ROLE, submit

# NCRONTAB schedules of the two timers when the app settings do not say (the Functions host resolves
# %BATCH_SUBMIT_SCHEDULE% and %BATCH_COLLECT_SCHEDULE% from its app settings; see function_app.py).
SCHEDULE_DEFAULTS = {
    "BATCH_SUBMIT_SCHEDULE": "0 */5 * * * *",  # every 5 minutes
    "BATCH_COLLECT_SCHEDULE": "30 * * * * *",  # every minute (Azure asks for polls at most once a minute)
}

__all__ = [
    "CONTRIBUTOR_ROLE",
    "MAX_FILE_BYTES",
    "REQUEST_URL",
    "RESPONSES_URL",
    "SCHEDULE_DEFAULTS",
    "CollectReport",
    "Held",
    "Manifest",
    "Outcome",
    "StagedJob",
    "SubmitReport",
    "collect",
    "list_manifests",
    "list_staged",
    "parse_answer",
    "plan_files",
    "request_line",
    "stage",
    "staging",
    "submit",
]
