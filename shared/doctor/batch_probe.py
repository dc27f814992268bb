"""The batch lane's part of the Azure OpenAI check, when ``BATCH_DEPLOYMENT`` is set: the Files and
Batches APIs through the same token and v1 client as the model probe. A one-line request file for the
batch deployment is uploaded and deleted and the batches are listed, which needs the files and batches
data actions (the custom role infra/ grants for the lane, or *Cognitive Services OpenAI Contributor*; the
User role covers inference only). Nothing is submitted: whether the deployment is a GlobalBatch one is
known when its first batch is validated."""

from __future__ import annotations

import contextlib
import dataclasses

import openai
from openai import AsyncOpenAI

from shared.batch import CONTRIBUTOR_ROLE, request_line
from shared.batch.files import FILE_EXPIRY_SECONDS
from shared.batch.submitter import BATCH_ROLE
from shared.doctor.model import OPENAI, Check, Context, one_line
from shared.jobs import Job, Parameters
from shared.settings import Settings

PROBE_FILE = "doctor-probe.jsonl"


async def check_batch(ctx: Context, settings: Settings, client: AsyncOpenAI, served: Check) -> Check:
    """``served`` (the model probe's ok) with the batch lane's APIs checked too, or why they failed."""
    if not settings.batch_deployment:
        return served
    try:
        await _files_and_batches(settings, client)
    except Exception as exc:
        return _batch_failed(ctx, settings, exc)
    note = (
        f"batch lane: the Files and Batches APIs answered for deployment {settings.batch_deployment} (a one-line "
        "request file uploaded and deleted, batches listed); its first batch shows whether it is a GlobalBatch one"
    )
    return dataclasses.replace(served, detail=f"{served.detail}; {note}")


async def _files_and_batches(settings: Settings, client: AsyncOpenAI) -> None:
    job = Job(id="doctor-probe", prompt="ping", lane="batch", parameters=Parameters(max_completion_tokens=16))
    uploaded = await client.files.create(
        file=(PROBE_FILE, request_line(job, settings.batch_deployment, settings.batch_api)),  # the lane's own line
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": FILE_EXPIRY_SECONDS},
    )
    try:
        await client.batches.list(limit=1)
    finally:
        with contextlib.suppress(openai.APIError):
            await client.files.delete(uploaded.id)


def _batch_failed(ctx: Context, settings: Settings, exc: Exception) -> Check:
    said = one_line(str(exc))
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError) and exc.code == "PermissionDenied":
        return OPENAI.fail(
            "batch_role_missing",
            f"{exc.status_code} PermissionDenied from the Files/Batches API of {settings.openai_endpoint}: {said}\n"
            f"principal {ctx.principal} may call chat completions but not the batch lane's APIs (files write, read "
            "and delete, batch-jobs write, batches read and cancel)",
            f"grant the batch role infra/ makes: az role assignment create --assignee {ctx.oid} --role "
            f'"{BATCH_ROLE}" --scope <OpenAI resource id> (or, broader, "{CONTRIBUTOR_ROLE}"); or empty '
            "BATCH_DEPLOYMENT to switch the batch lane off",
        )
    return OPENAI.fail(
        "batch_unavailable",
        f"the model answered, but the batch lane's Files/Batches API did not: {type(exc).__name__}: {said}",
        "check that the resource offers Global Batch (and BATCH_DEPLOYMENT names its GlobalBatch deployment), "
        "or empty BATCH_DEPLOYMENT to switch the batch lane off",
    )
