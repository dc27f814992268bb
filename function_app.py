"""Azure Functions app (Python v2 programming model): wiring only.

The jobs queue's name comes from the JOBS_QUEUE app setting; storage from the
AzureWebJobsStorage connection (identity-based in Azure); the batch lane's two timers from
BATCH_SUBMIT_SCHEDULE and BATCH_COLLECT_SCHEDULE. Everything else lives in shared/.
"""

import os

import azure.functions as func

from shared import batch, worker

app = func.FunctionApp()

# Every minute, on one instance at a time (a timer is a singleton across the app's instances).
QUEUE_SAMPLE_SCHEDULE = "0 */1 * * * *"

# The Functions host resolves %NAME% in a binding from its app settings (infra and
# local.settings.sample.json set these two); a host that resolves it from this process's
# environment (python -m emulators.functions_host) gets the documented defaults when they are unset.
for _setting, _schedule in batch.SCHEDULE_DEFAULTS.items():
    os.environ.setdefault(_setting, _schedule)


@app.function_name("process_job")
@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
async def process_job(msg: func.QueueMessage) -> None:
    """One queued job -> one stored result, or a batch-lane job staged (see shared/worker.py for the policy)."""
    await worker.handle(msg)


@app.function_name("sample_queues")
@app.timer_trigger(arg_name="timer", schedule=QUEUE_SAMPLE_SCHEDULE, run_on_startup=False)
async def sample_queues(timer: func.TimerRequest) -> None:
    """Queue depth and oldest-message age of the jobs and poison queues, as metrics (no-op with telemetry off)."""
    await worker.sample_queues()


@app.function_name("submit_batches")
@app.timer_trigger(arg_name="timer", schedule="%BATCH_SUBMIT_SCHEDULE%", run_on_startup=False)
async def submit_batches(timer: func.TimerRequest) -> None:
    """Staged batch-lane jobs -> request files -> Global Batch batches (with BATCH_DEPLOYMENT emptied: staged
    jobs go to the live lane or fail, per BATCH_ON_FAILURE)."""
    await batch.submit()


@app.function_name("collect_batches")
@app.timer_trigger(arg_name="timer", schedule="%BATCH_COLLECT_SCHEDULE%", run_on_startup=False)
async def collect_batches(timer: func.TimerRequest) -> None:
    """Ended batches -> stored results and notices, as the live lane stores them (with BATCH_DEPLOYMENT emptied
    too: batches still out are collected)."""
    await batch.collect()
