"""Azure Functions app (Python v2 programming model): wiring only.

The jobs queue's name comes from the JOBS_QUEUE app setting; storage from the
AzureWebJobsStorage connection (identity-based in Azure). Everything else lives in shared/.
"""

import azure.functions as func

from shared import worker

app = func.FunctionApp()


@app.function_name("process_job")
@app.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
async def process_job(msg: func.QueueMessage) -> None:
    """One queued job -> one stored result (see shared/worker.py for the policy)."""
    await worker.handle(msg)
