"""Issue 15: the emulator's Files and Batches v1 APIs (Azure OpenAI Global Batch), driven through the real openai SDK
(``AsyncOpenAI`` on ``/openai/v1/`` with a bearer-token provider) against the session's emulator over real sockets.
Knobs are set through ``OpenAIEmulator`` (emulators/stack/services.py); emulators/aoai/batches.py describes them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types import Batch, FileObject

from emulators.aoai.config import BatchConfig
from emulators.managed_identity import SYSTEM_ASSIGNED
from emulators.stack.services import DEPLOYMENT, SECOND_DEPLOYMENT, OpenAIEmulator
from emulators.tokens import Principal, TokenIssuer
from tests.emulators.emulator_fixtures import COGNITIVE, provider

BATCH = "gpt-5.4-mini-batch"  # a Global Batch-only deployment of the reasoning model
FOURTEEN_DAYS = 1_209_600
TERMINAL = {"completed", "failed", "expired", "cancelled"}
DEADLINE = 30.0  # seconds to wait for a status: polled, never a wall-clock bound on the emulator
EXPIRY = {"seconds": FOURTEEN_DAYS, "anchor": "created_at"}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def client_for(aoai: OpenAIEmulator, issuer: TokenIssuer, principal: Principal = SYSTEM_ASSIGNED, **mint: Any) -> Any:
    token = issuer.mint(audience=mint.pop("audience", COGNITIVE), principal=principal, **mint)[0]
    return AsyncOpenAI(base_url=f"{aoai.endpoint}/openai/v1/", api_key=provider(token), max_retries=0)


@pytest.fixture
async def client(aoai: OpenAIEmulator, issuer: TokenIssuer) -> AsyncIterator[AsyncOpenAI]:
    aoai.add_batch_deployment(BATCH)
    # Uploads usable at once and batches done on the first read, unless a test wants time to pass.
    aoai.configure_batches(processing_seconds=0, file_processing_seconds=0)
    async with client_for(aoai, issuer) as sdk:
        yield sdk


def request(custom_id: str, model: str = BATCH, text: str = "", **body: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text or f"Task {custom_id}"}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": messages, **body},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def submit(client: AsyncOpenAI, lines: list[dict[str, Any]] | bytes, **create: Any) -> Batch:
    data = lines if isinstance(lines, bytes) else jsonl(lines)
    uploaded = await client.files.create(file=("input.jsonl", data), purpose="batch")
    create = {"endpoint": "/chat/completions", "completion_window": "24h", **create}
    return await client.batches.create(input_file_id=uploaded.id, **create)


async def finished(client: AsyncOpenAI, batch_id: str, statuses: set[str] = TERMINAL) -> Batch:
    deadline = time.monotonic() + DEADLINE
    while (batch := await client.batches.retrieve(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.05)
    return batch


async def lines_of(client: AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id
    return [json.loads(line) for line in (await client.files.content(file_id)).text.splitlines()]


async def live(client: AsyncOpenAI, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What the live v1 chat route answers ``body``: (status, the whole JSON body)."""
    try:
        raw = await client.chat.completions.with_raw_response.create(**body)
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.json()
    return raw.status_code, json.loads(raw.text)


# --- Answers equal the live route's ------------------------------------------------------------------------------

TRIGGERS = {"filtered-prompt": {"text": "TRIGGER_PROMPT_FILTER now"}, "filtered-out": {"text": "TRIGGER_OUTPUT_FILTER"}}
BODIES = {
    DEPLOYMENT: {
        "plain": {},
        "low-effort": {"reasoning_effort": "low", "max_completion_tokens": 300},
        "budget-trap": {"max_completion_tokens": 50},  # reasoning spends it all: 200, empty, "length"
        "json": {"response_format": {"type": "json_object"}},
        "schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
        "max-tokens": {"max_tokens": 10},  # reasoning rules: 400 unsupported_parameter
        "temperature": {"temperature": 0.2},  # 400 unsupported_value
        "bad-effort": {"reasoning_effort": "extreme"},  # 400 invalid_value
        "no-messages": {"messages": []},  # the route's own body check: 400
        **TRIGGERS,
    },
    SECOND_DEPLOYMENT: {
        "plain": {},
        "classic": {"temperature": 0.3, "max_tokens": 3, "stop": ["x"]},
        "stop": {"stop": "Task"},
        "effort": {"reasoning_effort": "low"},  # a gpt-4.1-class model refuses it: 400
        **TRIGGERS,
    },
}


@pytest.mark.parametrize("deployment", [DEPLOYMENT, SECOND_DEPLOYMENT])
async def test_round_trip_equals_the_live_route(aoai: OpenAIEmulator, client: AsyncOpenAI, deployment: str) -> None:
    aoai.add_batch_deployment(deployment)  # a live deployment may also take batches, so both answers compare
    cases = BODIES[deployment]
    lines = [request(name, deployment, **dict(case)) for name, case in cases.items()]
    batch = await finished(client, (await submit(client, lines)).id)
    assert batch.status == "completed"
    both = await lines_of(client, batch.output_file_id) + await lines_of(client, batch.error_file_id)
    results = {line["custom_id"]: line for line in both}
    assert results.keys() == cases.keys()
    completions_before = aoai.stats()["completions"]
    ok = 0
    for line in lines:
        status, expected = await live(client, line["body"])
        response = results[line["custom_id"]]["response"]
        assert results[line["custom_id"]]["error"] is None
        assert response["status_code"] == status, line["custom_id"]
        if status == 200:
            ok += 1
            for key in ("id", "created"):  # per call, as in Azure
                expected.pop(key), response["body"].pop(key)
        assert response["body"] == expected, line["custom_id"]
    assert 0 < ok < len(lines)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (ok, len(lines) - ok)
    assert len(await lines_of(client, batch.output_file_id)) == ok  # the 200s; the 400s are in the error file
    stats = aoai.stats()
    assert stats["completions"] - completions_before == ok  # only the live calls count as live completions
    assert stats["batch"]["completions"] == ok
    assert batch.usage is not None and batch.usage.input_tokens == stats["batch"]["prompt_tokens"] > 0


async def test_output_is_shuffled_but_complete(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    ids = [f"task-{i:02d}" for i in range(30)]
    batch = await finished(client, (await submit(client, [request(i) for i in ids])).id)
    output = await lines_of(client, batch.output_file_id)
    got = [line["custom_id"] for line in output]
    assert sorted(got) == ids and got != ids
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        assert line["response"]["body"]["choices"][0]["message"]["content"] == f"[{BATCH}] Task {line['custom_id']}"
    error_file = await client.files.retrieve(batch.error_file_id or "")
    assert (error_file.bytes, error_file.purpose) == (0, "batch_output")  # present even on success
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 30, "completed": 30, "failed": 0}
    aoai.configure_batches(shuffle_seed=None)  # the file's order
    batch = await finished(client, (await submit(client, [request(i) for i in ids])).id)
    assert [line["custom_id"] for line in await lines_of(client, batch.output_file_id)] == ids


async def test_injected_line_failures_are_reproducible(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.configure_batches(fail_custom_ids=["task-03"], fail_fraction=0.3, fail_seed=7)
    lines = [request(f"task-{i:02d}") for i in range(40)]
    failed_sets = []
    for _ in range(2):
        batch = await finished(client, (await submit(client, lines)).id)
        errors = await lines_of(client, batch.error_file_id)
        for line in errors:
            assert line["response"] is None
            assert line["error"]["code"] == "server_error" and line["error"]["message"]
        assert batch.request_counts is not None and batch.request_counts.failed == len(errors)
        assert batch.request_counts.completed == len(await lines_of(client, batch.output_file_id)) == 40 - len(errors)
        failed_sets.append({line["custom_id"] for line in errors})
    assert failed_sets[0] == failed_sets[1]  # drawn per custom_id from the seed
    assert "task-03" in failed_sets[0] and 3 < len(failed_sets[0]) < 30


# --- Validation, parameters and limits ---------------------------------------------------------------------------

BROKEN = {
    "invalid_json_line": (jsonl([request("a")]) + b"{not json\n", 2),
    "invalid_request": (jsonl([request("a"), {"method": "POST", "url": "/v1/chat/completions", "body": {}}]), 2),
    "duplicate_custom_id": (jsonl([request("a"), request("b"), request("a")]), 3),
    "model_mismatch": (jsonl([request("a"), request("b", DEPLOYMENT)]), 2),
    "model_not_found": (jsonl([request("a", "no-such-deployment")]), 1),
    "url_mismatch": (jsonl([request("a"), {**request("b"), "url": "/chat/completions"}]), 2),
    "empty_file": (b"\n\n", None),
}


@pytest.mark.parametrize("code", list(BROKEN))
async def test_a_broken_file_fails_the_batch(client: AsyncOpenAI, code: str) -> None:
    data, line = BROKEN[code]
    created = await submit(client, data)
    assert created.status == "validating"
    batch = await finished(client, created.id)
    assert batch.status == "failed" and batch.failed_at is not None and batch.in_progress_at is None
    assert batch.errors is not None and (batch.errors.data[0].code, batch.errors.data[0].line) == (code, line)
    assert batch.output_file_id is None and batch.error_file_id is None


async def test_bom_and_a_live_only_deployment_are_refused(client: AsyncOpenAI) -> None:
    bom = await finished(client, (await submit(client, b"\xef\xbb\xbf" + jsonl([request("a")]))).id)
    assert bom.errors is not None and "valid model deployment name" in (bom.errors.data[0].message or "")
    live_only = await finished(client, (await submit(client, [request("a", DEPLOYMENT)])).id)
    assert live_only.errors is not None and live_only.errors.data[0].code == "invalid_request"
    assert "globalbatch" in (live_only.errors.data[0].message or "")


async def test_create_parameters_are_checked(client: AsyncOpenAI) -> None:
    uploaded = await client.files.create(file=("in.jsonl", jsonl([request("a")])), purpose="batch")
    for bad in ({"completion_window": "48h"}, {"endpoint": "/v1/embeddings"}, {"input_file_id": "file-missing"}):
        create = {"input_file_id": uploaded.id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **bad}
        with pytest.raises(openai.BadRequestError) as caught:
            await client.batches.create(**create)
        assert caught.value.code == "invalid_request" and caught.value.param == next(iter(bad))


LIMITS = {"max_requests_per_file": 3, "max_file_bytes": 2_000, "max_input_files": 2, "max_input_files_with_expiry": 3}


async def test_file_and_request_limits(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.configure_batches(**LIMITS)
    too_many = await finished(client, (await submit(client, [request(f"t{i}") for i in range(4)])).id)
    assert too_many.errors is not None and too_many.errors.data[0].code == "too_many_tasks"
    with pytest.raises(openai.BadRequestError, match="byte limit"):
        await client.files.create(file=("big.jsonl", b"x" * 2_001), purpose="batch")
    await client.files.create(file=("second.jsonl", jsonl([request("a")])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:  # a third file without expiry
        await client.files.create(file=("third.jsonl", jsonl([request("a")])), purpose="batch")
    assert caught.value.code == "file_limit_exceeded"
    as_documented = {"expires_after": EXPIRY}  # Azure's sample passes it in extra_body
    expiring = await client.files.create(file=("third.jsonl", b"{}"), purpose="batch", extra_body=as_documented)
    assert expiring.expires_at == expiring.created_at + FOURTEEN_DAYS
    with pytest.raises(openai.BadRequestError, match="the most allowed"):  # the expiring limit
        await client.files.create(file=("fourth.jsonl", b"{}"), purpose="batch", expires_after=EXPIRY)
    with pytest.raises(openai.BadRequestError) as caught:  # Azure allows 14 to 30 days
        await client.files.create(file=("x.jsonl", b"{}"), purpose="batch", expires_after={**EXPIRY, "seconds": 3600})
    assert caught.value.param == "expires_after"


# --- Lifecycle: progress, expiry, cancel, failure ----------------------------------------------------------------


async def test_each_stage_is_visible_while_it_lasts(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    lines = [request(f"t{i}") for i in range(4)]
    for stage, status, counts in [
        ("validating", "validating", (0, 0)),  # total 0 while validating, as Azure's create answer shows
        ("processing", "in_progress", (4, 0)),
        ("finalizing", "finalizing", (4, 4)),
    ]:
        aoai.configure_batches(validating_seconds=0, processing_seconds=0, finalizing_seconds=0)
        aoai.configure_batches(**{f"{stage}_seconds": 3600})
        batch = await client.batches.retrieve((await submit(client, lines)).id)
        assert batch.status == status and batch.output_file_id is None and batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed) == counts
        assert (batch.in_progress_at is None) == (status == "validating")
        assert (batch.finalizing_at is None) == (status != "finalizing")


async def test_expiry_keeps_what_was_done(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.configure_batches(processing_seconds=3600, expire_after_seconds=0)
    batch = await finished(client, (await submit(client, [request(f"t{i}") for i in range(3)])).id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert {line["error"]["code"] for line in await lines_of(client, batch.error_file_id)} == {"batch_expired"}
    aoai.configure_batches(expire_after_seconds=None)
    created = await submit(client, [request(f"t{i}") for i in range(5)])
    assert aoai.expire_batch(created.id, done=2)["status"] == "expired"
    batch = await client.batches.retrieve(created.id)
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 3}
    assert len(await lines_of(client, batch.output_file_id)) == 2
    assert len(await lines_of(client, batch.error_file_id)) == 3


async def test_cancel_goes_through_cancelling(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.configure_batches(processing_seconds=3600, cancelling_seconds=0.2)
    created = await submit(client, [request(f"t{i}") for i in range(3)])
    cancelling = await client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert (await client.batches.cancel(created.id)).status == "cancelling"  # again: no change
    batch = await finished(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert {line["error"]["code"] for line in await lines_of(client, batch.error_file_id)} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(created.id)


async def test_failing_batches_on_purpose(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.configure_batches(processing_seconds=3600)
    created = await submit(client, [request("a")])
    assert aoai.fail_batch(created.id, code="server_error")["status"] == "failed"
    batch = await client.batches.retrieve(created.id)
    assert batch.errors is not None and batch.errors.data[0].code == "server_error"
    aoai.configure_batches(fail_batches_code="invalid_request")
    batch = await finished(client, (await submit(client, [request("b")])).id)
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data[0].code == "invalid_request"


async def test_batches_hold_enqueued_tokens_not_the_live_quota(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.update_deployment(BATCH, tpm=1)  # the live window: a live call is throttled, a batch is not
    one = [request(f"t{i}") for i in range(3)]
    probe = await finished(client, (await submit(client, one)).id)
    assert probe.status == "completed" and probe.usage is not None
    aoai.add_batch_deployment(BATCH, token_limit=probe.usage.input_tokens * 3 // 2)
    aoai.configure_batches(processing_seconds=3600)
    running = await submit(client, one)
    assert aoai.stats()["batch"]["enqueued_tokens"] == {BATCH: probe.usage.input_tokens}
    with pytest.raises(openai.BadRequestError, match="token_limit_exceeded") as caught:
        await submit(client, one)  # fails fast at create, matched the way Azure's sample retries it
    assert caught.value.code == "token_limit_exceeded"
    await client.batches.cancel(running.id)
    assert (await submit(client, one)).status == "validating"  # the cancelled batch freed its tokens
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model=BATCH, messages=[{"role": "user", "content": "hi"}])


# --- Files, listing, auth, stats ---------------------------------------------------------------------------------


async def test_a_new_upload_is_pending_and_a_batch_on_it_is_refused_until_it_is_processed(
    aoai: OpenAIEmulator, client: AsyncOpenAI
) -> None:
    assert BatchConfig().file_processing_seconds == 1  # by default a fresh upload reads pending, as in Azure
    aoai.configure_batches(file_processing_seconds=3600)
    uploaded = await client.files.create(file=("in.jsonl", jsonl([request("a")])), purpose="batch")
    assert uploaded.status == (await client.files.retrieve(uploaded.id)).status == "pending"
    create = {"input_file_id": uploaded.id, "endpoint": "/chat/completions", "completion_window": "24h"}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.batches.create(**create)
    assert caught.value.status_code == 400 and caught.value.param == "input_file_id"
    assert caught.value.message.endswith(
        f"The input file '{uploaded.id}' is in 'pending' state. Only files with status 'Processed' are accepted for "
        "batch inferencing. Please check the file status and try again"
    )
    assert aoai.stats()["batch"]["batches"] == 0
    assert aoai.process_files() == [uploaded.id]
    assert (await client.files.retrieve(uploaded.id)).status == "processed"
    assert [f.status async for f in client.files.list(purpose="batch")] == ["processed"]
    assert (await client.batches.create(**create)).status == "validating"


async def test_an_upload_can_end_in_error(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.configure_batches(file_processing_seconds=3600, file_error="The file could not be parsed.")
    uploaded = await client.files.create(file=("in.jsonl", jsonl([request("a")])), purpose="batch")
    aoai.process_files()
    ended = await client.files.retrieve(uploaded.id)
    assert (ended.status, ended.status_details) == ("error", "The file could not be parsed.")
    with pytest.raises(openai.BadRequestError, match="is in 'error' state"):
        await client.batches.create(input_file_id=uploaded.id, endpoint="/chat/completions", completion_window="24h")


async def test_a_batch_can_show_a_status_the_sdk_does_not_know(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    aoai.configure_batches(processing_seconds=3600)
    created = await submit(client, [request("a")])
    assert aoai.report_batch_status(created.id, "paused")["status"] == "paused"
    assert (await client.batches.retrieve(created.id)).status == "paused"  # the SDK passes it through
    aoai.report_batch_status(created.id, None)
    assert (await client.batches.retrieve(created.id)).status == "in_progress"


async def test_files_and_batches_are_listed_read_and_deleted(client: AsyncOpenAI) -> None:
    data = jsonl([request("a")])
    uploaded: FileObject = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert (uploaded.bytes, uploaded.filename, uploaded.status) == (len(data), "in.jsonl", "processed")
    assert (await client.files.content(uploaded.id)).content == data
    assert (await client.files.retrieve(uploaded.id)).id == uploaded.id
    create = {"input_file_id": uploaded.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    ids = [(await client.batches.create(**create)).id for _ in range(3)]
    assert [b.id async for b in client.batches.list(limit=2)] == ids[::-1]  # newest first, two pages
    page = await client.batches.list(limit=1, after=ids[2])
    assert [b.id for b in page.data] == [ids[1]] and page.has_more
    assert uploaded.id in [f.id async for f in client.files.list(purpose="batch")]
    deleted = await client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_missing")


@pytest.mark.parametrize("who", ["no-role", "wrong-audience", "expired", "api-key"])
async def test_auth_as_on_chat(aoai: OpenAIEmulator, issuer: TokenIssuer, client: AsyncOpenAI, who: str) -> None:
    uploaded = await client.files.create(file=("in.jsonl", jsonl([request("a")])), purpose="batch")
    if who == "api-key":
        other: Any = AsyncOpenAI(
            base_url=f"{aoai.endpoint}/openai/v1/", api_key="k", max_retries=0, default_headers={"api-key": "k"}
        )
    else:
        principal = Principal(object_id="9a7e0000-0000-4000-8000-0000000000f9", name="no-role")
        mint = {
            "no-role": {"principal": principal},
            "wrong-audience": {"audience": "https://storage.azure.com/.default"},
            "expired": {"lifetime": 60, "now": time.time() - 3600},
        }[who]
        other = client_for(aoai, issuer, **mint)
    error = openai.PermissionDeniedError if who == "api-key" else openai.AuthenticationError
    async with other:
        for call in (
            other.files.create(file=("in.jsonl", b"{}"), purpose="batch"),
            other.files.content(uploaded.id),
            other.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"),
            other.batches.list(),
        ):
            with pytest.raises(error):
                await call
    assert aoai.stats()["batch"]["batches"] == 0


async def test_calls_are_counted_per_route(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    batch = await finished(client, (await submit(client, [request("a")])).id)
    await lines_of(client, batch.output_file_id)
    by_route = aoai.stats()["by_route"]
    assert by_route["POST /openai/v1/files"] == by_route["POST /openai/v1/batches"] == 1
    assert by_route["GET /openai/v1/batches/{batch_id}"] >= 1
    assert by_route["GET /openai/v1/files/{file_id}/content"] == 1
    assert "POST /openai/v1/chat/completions" not in by_route


async def test_control_routes(aoai: OpenAIEmulator, client: AsyncOpenAI) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.patch(f"{aoai.endpoint}/_emulator/batch-config", json={"processing_seconds": 3600}) as answer:
            assert answer.status == 200 and (await answer.json())["processing_seconds"] == 3600
        async with http.patch(f"{aoai.endpoint}/_emulator/batch-config", json={"fail_fraction": 2}) as answer:
            assert answer.status == 400
        created = await submit(client, [request("a"), request("b")])
        async with http.post(f"{aoai.endpoint}/_emulator/batches/{created.id}/expire", json={"done": 1}) as answer:
            assert (await answer.json())["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        async with http.post(f"{aoai.endpoint}/_emulator/batches/reset") as answer:
            assert answer.status == 204
    assert aoai.stats()["batch"]["batches"] == 0
