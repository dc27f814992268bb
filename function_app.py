"""Azure Functions app (Python v2 programming model): wiring only.

The jobs queue's name comes from the JOBS_QUEUE app setting; storage from the
AzureWebJobsStorage connection (identity-based in Azure). Everything else lives in shared/.
"""

import azure.functions as func

from shared import worker

app = func.FunctionApp()

# Every minute, on one instance at a time (a timer is a singleton across the app's instances).
QUEUE_SAMPLE_SCHEDULE = "0 */1 * * * *"


@app.function_name("process_job")
@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
async def process_job(msg: func.QueueMessage) -> None:
    """One queued job -> one stored result (see shared/worker.py for the policy)."""
    await worker.handle(msg)


@app.function_name("sample_queues")
@app.timer_trigger(arg_name="timer", schedule=QUEUE_SAMPLE_SCHEDULE, run_on_startup=False)
async def sample_queues(timer: func.TimerRequest) -> None:
    """Queue depth and oldest-message age of the jobs and poison queues, as metrics (no-op with telemetry off)."""
    await worker.sample_queues()
