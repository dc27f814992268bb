"""What can be done today about a background job nobody wants any more (docs/responses.md, "Withdrawing a
background job"): an operator cancels its response on the resource that holds it, named in the job's waiting
state, and the worker's next check ends the job ``response_cancelled``, with no second response. Through the
real openai SDK on the emulator and keyless Azurite, in process."""

from __future__ import annotations

import json
from typing import Any

from emulators.stack.services import OpenAIEmulator
from emulators.stack.workers import Jobs
from shared import worker
from shared.connections import Runtime
from tests.worker.test_responses_e2e import CODER, emulate, pool
from tests.worker.test_telemetry_e2e import receive


async def test_an_operator_cancelling_the_response_ends_the_job_response_cancelled(
    keyless_settings: dict[str, str], jobs_for: Any, aoai: OpenAIEmulator
) -> None:
    emulate(aoai)
    aoai.configure(background_queued_seconds=0.2, background_seconds=600)  # thinks far longer than the test
    settings = {**pool(keyless_settings, {"deployment": CODER, "api": "responses"}), "BACKGROUND_POLL_SECONDS": "2"}
    jobs: Jobs = await jobs_for(settings)
    runtime = Runtime.from_env(settings)
    try:
        await jobs.send({"id": "withdrawn", "prompt": "Think for ever.", "background": True})
        assert await worker.handle(await receive(jobs), runtime) is None  # started; the job waits
        # The operator: the response named in the job's waiting state, cancelled where it runs.
        staging = runtime.blobs.get_container_client(runtime.settings.staging_container)
        state = json.loads(await (await staging.download_blob("retries/withdrawn.json")).readall())
        waiting = state["background"]
        cancelled = await runtime.client(waiting["endpoint"]).responses.cancel(waiting["response_id"])
        assert cancelled.status == "cancelled" and waiting["deployment"] == CODER
        result = await worker.handle(await receive(jobs, visible_within=15), runtime)  # the next check
    finally:
        await runtime.close()
    assert result is not None and result.status == "failed" and result.error is not None
    assert (result.error.code, result.response_id) == ("response_cancelled", waiting["response_id"])
    assert await jobs.result("withdrawn") is not None
    creates = [r for r in aoai.requests(CODER) if r.method == "POST" and r.route.endswith("/responses")]
    assert len(creates) == 1
