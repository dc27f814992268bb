"""Azure OpenAI's Files and Batches v1 APIs (Global Batch), kept in memory: for the real ``openai`` SDK on
``AsyncOpenAI(base_url=<emulator>/openai/v1/, api_key=<bearer token provider>)``: ``files.create/retrieve/content/
delete/list`` and ``batches.create/retrieve/list/cancel``, behind the same Entra checks as chat completions.

A batch is validated when it is created (``batch_input``: BOM, JSON, custom_id, one url, one deployment, a Global
Batch deployment, limits) and its requests are answered then, by the live route's rules (``batch_routes.answer``):
a 200 body equals what ``POST /openai/v1/chat/completions`` returns for the same body (``choices``, ``usage``), a
refused body (a reasoning model's parameter rules, an invalid body, the prompt filter) is a line with its 400 body.
Lines for ``/v1/responses`` get what ``POST /openai/v1/responses`` returns, as Global Batch writes it (facts section
6: ``service_tier`` default, ``content_filters`` null, ``store`` true); a file holds one url (``url_mismatch``), and
``batches.create`` takes any of the urls as its ``endpoint`` (the service reads the file to pick the API).
Its schedule is fixed at create from the knobs below; statuses advance with wall time, checked whenever the batch
is read (no background task): ``validating`` -> ``in_progress`` (the requests are done evenly over it, so
``request_counts`` grow) -> ``finalizing`` -> ``completed``; or ``failed`` (validation errors: ``errors.data``, no
files), ``expired``, ``cancelling`` -> ``cancelled``. A finished batch has an output file (the 200s) and an error file
(everything else; empty but present on success), both shuffled. Batches never touch a deployment's live TPM window:
they hold their prompt tokens against the deployment's enqueued-token limit until they end.

Knobs: ``EmulatorConfig.batch`` (``config.BatchConfig``), set with ``OpenAIEmulator.configure_batches(**changes)``
or ``PATCH /_emulator/batch-config`` (a partial object):

- ``deployments``: ``{name: enqueued-token limit or None}``, the Global Batch deployments (each also a deployment
  for its model; ``OpenAIEmulator.add_batch_deployment(name, model=None, token_limit=None)`` does both).
  Over the limit, ``batches.create`` fails fast: 400 ``token_limit_exceeded``.
- limits: ``max_requests_per_file`` (100,000), ``max_file_bytes`` (200 MB), ``max_input_files`` (500) and
  ``max_input_files_with_expiry`` (10,000, files uploaded with ``expires_after``).
- timing (seconds): ``validating_seconds`` (0), ``processing_seconds`` (1), ``finalizing_seconds`` (0),
  ``cancelling_seconds`` (0); ``expire_after_seconds`` (None) expires a batch still in progress that long after it
  started, keeping the requests done by then.
- failures: ``fail_custom_ids``, ``fail_fraction`` with ``fail_seed`` (per custom_id, reproducible) put those lines
  in the error file as ``{"response": null, "error": {"code": fail_code ("server_error"), ...}}``;
  ``fail_batches_code`` fails every new batch at validation with that code.
- ``shuffle_seed`` (0): output order; None keeps the file's order.
- files: ``file_processing_seconds`` (1) a new upload reads ``pending`` before ``processed`` (``batches.create`` on
  it until then: 400 "The input file '<id>' is in 'pending' state. Only files with status 'Processed' are accepted
  for batch inferencing. ..."); ``file_error`` (None) makes the uploads that follow end ``error`` instead, with
  that ``status_details``.

Per batch (``OpenAIEmulator`` methods, or control routes): ``expire_batch(id, done=None)``
(``POST /_emulator/batches/{id}/expire``, ``done`` = requests kept, default those done by now), ``fail_batch(id,
code, message)`` (``.../fail``), ``batch_snapshot(id)`` (its JSON, no API call counted); ``reset()`` (or ``POST
/_emulator/batches/reset``) forgets every file and batch. In process only (``OpenAIEmulator``): ``process_files()``
ends every pending upload's processing now; ``report_batch_status(id, status)`` shows a status the service may add
one day (None: the real one again). Cancel is the API's own ``POST .../batches/{id}/cancel``.
Stats: ``stats()["by_route"]`` counts every data-plane call per route (``"POST /openai/v1/files"``...);
``stats()["batch"]`` counts files, batches per status, enqueued tokens and the tokens batches answered.

Our assumptions (not from a source): unprocessed requests of an expired/cancelled batch are error lines with codes
``batch_expired``/``batch_cancelled`` and count as failed; a failed batch has no output or error file; a batch's
``request_counts.total`` is 0 while validating (Azure's sample); 400 ``invalid_request`` for a bad create or upload
parameter, the same 400 ``invalid_request`` (param ``input_file_id``) for an input file not yet processed (Azure's
status and code for it are unconfirmed; its message is the one users report), 404 ``NotFound`` for an unknown id,
409 ``invalid_state`` to cancel a finished batch, 400 ``file_limit_exceeded`` over the input-file count; expired
input files are gone (404) and free their slot; the ``token_limit_exceeded`` message starts with its code (Azure's
sample retries on ``'token_limit_exceeded' in str(error)``); enqueued tokens are the prompt tokens. Not modelled:
live calls refused on a Global Batch deployment (here it also answers live), the
window of 24 h (Azure no longer expires batches).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from emulators.aoai.answers import count_prompt_tokens
from emulators.aoai.batch_input import RESPONSES_URLS, URLS, error, parse
from emulators.aoai.batch_objects import Answer, Batch, Outcome, Result, Schedule, StoredFile, json_line, usage
from emulators.aoai.config import BatchConfig
from emulators.aoai.response_objects import ResponseRequest

__all__ = ["Answer", "Batch", "BatchStore", "Outcome", "Refused", "StoredFile"]

FILE_EXPIRY_SECONDS = (1_209_600, 2_592_000)  # Azure's allowed expires_after (14 to 30 days)
SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
ANSWERED = ("completions", "failed_requests", "prompt_tokens", "completion_tokens", "reasoning_tokens")
UNPROCESSED = {  # status -> the error of each request it never ran
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


class Refused(Exception):
    """A call answered with an error status; the routes give it Azure's ``{"error": {...}}`` body."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


def _prompt_tokens(url: str, body: dict[str, Any]) -> int:
    """What the request holds of the enqueued-token quota: its prompt (Azure counts the file's input tokens)."""
    if url in RESPONSES_URLS:
        try:
            return count_prompt_tokens(ResponseRequest.model_validate(body).messages())
        except ValidationError:
            return 0
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return 0
    return count_prompt_tokens(messages)


def _injected(custom_id: str, config: BatchConfig) -> bool:
    if custom_id in config.fail_custom_ids:
        return True
    # Seeded by the custom_id, so a line fails or not whatever else is in the file and in whatever order.
    return config.fail_fraction > 0 and random.Random(f"{config.fail_seed}:{custom_id}").random() < config.fail_fraction


class BatchStore:
    """Every file and batch of one emulated resource; touched only from the server's event loop."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}  # in creation order
        self.reset_counters()

    def reset_counters(self) -> None:
        self.answered: Counter[str] = Counter()  # completions, failed requests and tokens of finished batches

    # --- Files ----------------------------------------------------------------------------------------------

    def add_file(
        self, filename: str, purpose: str, data: bytes, expires_after: int | None, config: BatchConfig, now: float
    ) -> StoredFile:
        """An uploaded input file (raises Refused for a purpose other than batch, an expiry out of range, a file
        over the size limit, or one file too many)."""
        if purpose != "batch":
            raise Refused(400, "invalid_request", "This emulator takes files with purpose 'batch' only.", "purpose")
        low, high = FILE_EXPIRY_SECONDS
        if expires_after is not None and not low <= expires_after <= high:
            message = f"expires_after.seconds must be between {low} and {high}."
            raise Refused(400, "invalid_request", message, "expires_after")
        if len(data) > config.max_file_bytes:
            message = f"The file is {len(data):,} bytes, over the {config.max_file_bytes:,}-byte limit."
            raise Refused(400, "invalid_request", message, "file")
        inputs = [f for f in self._live_files(now) if f.purpose == "batch"]
        if expires_after is None:
            inputs, limit = [f for f in inputs if f.expires_at is None], config.max_input_files
        else:
            limit = config.max_input_files_with_expiry
        if len(inputs) >= limit:
            message = f"This resource already holds {len(inputs)} batch input files, the most allowed ({limit})."
            raise Refused(400, "file_limit_exceeded", message, "file")
        expires_at = None if expires_after is None else now + expires_after
        processed_at = now + config.file_processing_seconds
        stored = StoredFile(f"file-{uuid.uuid4().hex}", filename, purpose, data, now, expires_at, processed_at)
        stored.error = config.file_error
        return self._store(stored)

    def _store(self, stored: StoredFile) -> StoredFile:
        self.files[stored.id] = stored
        return stored

    def _live_files(self, now: float) -> list[StoredFile]:
        for expired in [f.id for f in self.files.values() if f.expires_at is not None and f.expires_at <= now]:
            del self.files[expired]
        return list(self.files.values())

    def file(self, file_id: str, now: float) -> StoredFile:
        self._live_files(now)
        if file_id not in self.files:
            raise Refused(404, "NotFound", f"File '{file_id}' not found.")
        return self.files[file_id]

    def process_files(self, now: float) -> list[str]:
        """End every pending upload's processing now (as ``processed``, or ``error`` if it was uploaded to fail)."""
        pending = [f for f in self._live_files(now) if f.status(now) == "pending"]
        for stored in pending:
            stored.processed_at = now
        return [f.id for f in pending]

    def delete_file(self, file_id: str, now: float) -> dict[str, Any]:
        del self.files[self.file(file_id, now).id]
        return {"id": file_id, "object": "file", "deleted": True}

    def list_files(self, now: float, purpose: str | None, descending: bool) -> list[StoredFile]:
        files = [f for f in self._live_files(now) if purpose is None or f.purpose == purpose]
        return files[::-1] if descending else files

    # --- Batches --------------------------------------------------------------------------------------------

    def create(
        self,
        body: dict[str, Any],
        config: BatchConfig,
        deployments: Collection[str],
        answer: Answer,
        now: float,
    ) -> Batch:
        """A new batch from ``batches.create``'s body, validated and answered now (raises Refused for a bad
        parameter, an unknown input file or, failing fast, an enqueued-token limit the batch would exceed)."""
        window, endpoint, file_id = body.get("completion_window"), body.get("endpoint"), body.get("input_file_id")
        if window != "24h":  # Azure: any other window fails
            raise Refused(400, "invalid_request", "completion_window must be '24h'.", "completion_window")
        if endpoint not in URLS:  # the service reads the file for the API: any of them takes any file
            message = f"endpoint must be one of {', '.join(URLS)}."
            raise Refused(400, "invalid_request", message, "endpoint")
        if not isinstance(file_id, str) or file_id not in self.files or self.files[file_id].purpose != "batch":
            self._live_files(now)
            raise Refused(400, "invalid_request", f"No batch input file '{file_id}'.", "input_file_id")
        if (status := self.files[file_id].status(now)) != "processed":  # Azure's words (Microsoft Q&A 2203029)
            message = (
                f"The input file '{file_id}' is in '{status}' state. Only files with status 'Processed' are accepted "
                "for batch inferencing. Please check the file status and try again"
            )
            raise Refused(400, "invalid_request", message, "input_file_id")
        data = self.files[file_id].data
        requests, errors = parse(data, config.max_requests_per_file, deployments, config.deployments)
        if config.fail_batches_code and not errors:
            errors = [error(config.fail_batches_code, "The batch failed (the emulator's batch.fail_batches_code).")]
        deployment = requests[0].deployment if requests and not errors else None
        tokens = sum(_prompt_tokens(r.url, r.body) for r in requests) if deployment else 0
        limit = config.deployments.get(deployment) if deployment else None
        if limit is not None and deployment and self.enqueued(deployment, now) + tokens > limit:
            message = (  # the code leads: Azure's sample retries on "'token_limit_exceeded' in str(error)"
                f"token_limit_exceeded: Enqueued token limit reached for deployment '{deployment}': "
                f"{self.enqueued(deployment, now):,} enqueued + {tokens:,} in this batch > {limit:,}. "
                "Retry when a batch ends."
            )
            raise Refused(400, "token_limit_exceeded", message)
        results = [] if errors else [self._result(r.custom_id, r.url, r.body, config, answer) for r in requests]
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else None
        batch = Batch(
            f"batch_{uuid.uuid4()}",
            file_id,
            str(endpoint),
            window,
            metadata,
            deployment,
            now,
            len(requests),
            results,
            errors,
            tokens,
            Schedule.starting(now, config),
            config.shuffle_seed,
        )
        self.batches[batch.id] = batch
        return batch

    @staticmethod
    def _result(custom_id: str, url: str, body: dict[str, Any], config: BatchConfig, answer: Answer) -> Result:
        if _injected(custom_id, config):
            return Result(custom_id, None, {"code": config.fail_code, "message": SERVER_ERROR})
        return Result(custom_id, answer(url, body))

    def batch(self, batch_id: str, now: float) -> Batch:
        """The batch, advanced to ``now`` (raises Refused 404)."""
        batch = self.batches.get(batch_id)
        if batch is None:
            raise Refused(404, "NotFound", f"Batch '{batch_id}' not found.")
        self._advance(batch, now)
        return batch

    def list_batches(self, now: float) -> list[Batch]:
        """Newest first, each advanced to ``now``."""
        return [self.batch(batch_id, now) for batch_id in reversed(self.batches)]

    def cancel(self, batch_id: str, now: float) -> Batch:
        batch = self.batch(batch_id, now)
        status = batch.status(now)
        if status in ("validating", "in_progress", "finalizing"):
            batch.cancelling_at = now
            self._advance(batch, now)  # with cancelling_seconds 0 it is cancelled at once
        elif status != "cancelling":
            raise Refused(409, "invalid_state", f"A batch with status '{status}' cannot be cancelled.")
        return batch

    def expire(self, batch_id: str, now: float, done: int | None = None) -> Batch:
        """End the batch as ``expired`` now, keeping ``done`` requests (default: those done by now)."""
        batch = self.batch(batch_id, now)
        if batch.ended is None:
            kept = batch.processed(now) if done is None else max(0, min(done, batch.total))
            self._finish(batch, "expired", now, 0 if batch.errors else kept)
        return batch

    def fail(self, batch_id: str, now: float, code: str, message: str) -> Batch:
        """End the batch as ``failed`` now with this error (no output or error file)."""
        batch = self.batch(batch_id, now)
        if batch.ended is None:
            batch.errors = [*batch.errors, error(code, message)]
            self._finish(batch, "failed", now, 0)
        return batch

    def report_status(self, batch_id: str, now: float, status: str | None) -> Batch:
        """Make the API show ``status`` for this batch (one the service may add, say) while it runs on as
        scheduled; None shows its real status again."""
        batch = self.batch(batch_id, now)
        batch.reported_status = status
        return batch

    def enqueued(self, deployment: str, now: float) -> int:
        """Tokens held against the deployment's enqueued-token limit: those of its batches not yet ended."""
        return sum(b.enqueued_tokens for b in self.list_batches(now) if b.deployment == deployment and not b.ended)

    def _advance(self, batch: Batch, now: float) -> None:
        """Move a batch to the terminal state its schedule (or a cancel) reached by ``now``, once."""
        schedule = batch.schedule
        if batch.ended is not None:
            return
        if batch.cancelling_at is not None:
            cancelled_at = batch.cancelling_at + schedule.cancelling_seconds
            if now >= cancelled_at:  # what was done when cancelling began is kept
                self._finish(batch, "cancelled", cancelled_at, batch.processed(batch.cancelling_at))
        elif now > schedule.in_progress_at and batch.errors:
            self._finish(batch, "failed", schedule.in_progress_at, 0)
        elif schedule.expire_at is not None and now >= schedule.expire_at < schedule.finalizing_at:
            self._finish(batch, "expired", schedule.expire_at, batch.processed(schedule.expire_at))
        elif now >= schedule.done_at:
            self._finish(batch, "completed", schedule.done_at, batch.total)

    def _finish(self, batch: Batch, status: str, at: float, processed: int) -> None:
        """The terminal state: the output file (the 200s) and the error file (the rest, with every request never
        run), both shuffled, and the final counts."""
        batch.ended = (status, at, processed)
        if status == "failed":
            return
        code, message = UNPROCESSED.get(status, ("", ""))
        done = batch.results[:processed]
        never_ran = [Result(r.custom_id, None, {"code": code, "message": message}) for r in batch.results[processed:]]
        succeeded = [r for r in done if r.ok]
        failed = [r for r in done if not r.ok] + never_ran
        batch.output_file_id = self._output(batch, "output", succeeded, at).id
        batch.error_file_id = self._output(batch, "error", failed, at).id
        batch.counts, batch.usage = (len(succeeded), len(failed)), usage(succeeded)
        batch.results = []  # the files hold them now (a 50,000-line batch's answers are tens of MB)
        self.answered.update(
            completions=len(succeeded),
            failed_requests=len(failed),
            prompt_tokens=batch.usage["input_tokens"],
            completion_tokens=batch.usage["output_tokens"],
            reasoning_tokens=batch.usage["output_tokens_details"]["reasoning_tokens"],
        )

    def _output(self, batch: Batch, kind: str, results: list[Result], at: float) -> StoredFile:
        lines = [r.line() for r in results]
        if batch.shuffle_seed is not None:  # the service does not keep the file's order; nor do we
            key = hashlib.sha256("\n".join(r.custom_id for r in batch.results).encode()).hexdigest()
            random.Random(f"{batch.shuffle_seed}:{key}:{kind}").shuffle(lines)
        data = "".join(json_line(line) for line in lines).encode()
        name = f"{batch.id}_{kind}.jsonl"
        return self._store(StoredFile(f"file-{uuid.uuid4()}", name, "batch_output", data, at))

    def stats(self, now: float) -> dict[str, Any]:
        batches = self.list_batches(now)
        enqueued: Counter[str] = Counter()
        for batch in batches:
            if batch.deployment and batch.ended is None:
                enqueued[batch.deployment] += batch.enqueued_tokens
        files = self._live_files(now)
        return {
            "files": len(files),
            "input_files": sum(f.purpose == "batch" for f in files),
            "batches": len(batches),
            "by_status": dict(Counter(b.status(now) for b in batches)),
            "enqueued_tokens": dict(enqueued),
            **{name: self.answered[name] for name in ANSWERED},
        }


ANSWERED = ("completions", "failed_requests", "prompt_tokens", "completion_tokens", "reasoning_tokens")
