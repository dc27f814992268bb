"""The Files and Batches API side of submitting (``submitter``): a manifest's request file uploaded, waited for
until Azure has ``processed`` it, and a crashed holder's upload or batch found again by name or file.

Azure takes a batch only from a file it has processed (a fresh upload reads ``pending``): the file is polled
within a tick for what is left of the tick's wait, first after ``FILE_POLL_FIRST_SECONDS``, doubling up to
``FILE_POLL_MAX_SECONDS``; a file that ends ``error`` (``FILE_FAILED``), or is not processed ``FILE_WAIT``
after its upload, will never be (Azure processes a batch file in seconds to minutes).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from openai.types import Batch, FileObject

from shared.connections import Runtime

from .records import Manifest, delete_file

# Request files expire after 14 days, the least Azure allows: with an expiry set a resource holds
# 10,000 input files rather than 500 (the collector deletes each file once its batch is done).
FILE_EXPIRY_SECONDS = 1_209_600
UPLOAD_TIMEOUT_SECONDS = 600.0  # a file of up to 200 MB
CLOCK_SKEW = timedelta(minutes=5)  # between this clock and the service's, when matching by creation time
FILE_POLL_FIRST_SECONDS = 1.0
FILE_POLL_MAX_SECONDS = 8.0
FILE_WAIT = timedelta(hours=1)
FILE_FAILED = frozenset({"error", "deleting", "deleted"})  # a file that will never be processed
FILE_NOT_PROCESSED = "file_not_processed"  # the code in a manifest's errors (and so in its jobs' messages)
# How batches.create refuses a file not processed yet (a 400): the file's state is the group.
NOT_PROCESSED = re.compile(r"is in '([A-Za-z_]+)' state\. Only files with status 'Processed'")


async def upload(runtime: Runtime, manifest: Manifest, data: bytes) -> FileObject:
    """The manifest's request file, uploaded under its name (how ``find_upload`` finds it again)."""
    return await runtime.openai.files.create(
        file=(manifest.file_name, data, "application/jsonl"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": FILE_EXPIRY_SECONDS},
        timeout=UPLOAD_TIMEOUT_SECONDS,
    )


async def find_upload(runtime: Runtime, manifest: Manifest) -> FileObject | None:
    """The file a crashed holder uploaded for this manifest, if any; extra copies are deleted."""
    since = (manifest.created_at - CLOCK_SKEW).timestamp()
    copies = []
    listing = Recent(since)
    async for item in runtime.openai.files.list(purpose="batch", order="desc"):
        if listing.past(item.created_at):
            break
        if item.filename == manifest.file_name and item.created_at >= since:
            copies.append(item)
    usable = [item for item in reversed(copies) if item.status != "error"]
    keep = min(usable, key=lambda item: item.created_at) if usable else None  # the first holder's upload
    for item in copies:
        if item is not keep:
            await delete_file(runtime, item.id)
    return keep


async def find_batch(runtime: Runtime, manifest: Manifest) -> Batch | None:
    """A batch already made from this manifest's file (its holder crashed before recording it)."""
    listing = Recent((manifest.created_at - CLOCK_SKEW).timestamp())
    async for batch in runtime.openai.batches.list(limit=100):
        if batch.input_file_id == manifest.file_id:
            return batch
        if listing.past(batch.created_at):
            break
    return None


async def await_processed(runtime: Runtime, manifest: Manifest, until: float) -> tuple[FileObject, timedelta]:
    """Poll the manifest's uploaded file until it is ``processed``, will never be (``FILE_FAILED``, or
    ``FILE_WAIT`` after its upload), or ``until`` (``time.monotonic``) has passed; the file as last seen, and
    how long after its upload."""
    assert manifest.file_id is not None
    delay = FILE_POLL_FIRST_SECONDS
    while True:
        found = await runtime.openai.files.retrieve(manifest.file_id)
        status = str(found.status)
        waited = datetime.now(UTC) - (manifest.uploaded_at or manifest.created_at)
        if status == "processed" or never_processed(status, waited):
            return found, waited
        left = until - time.monotonic()
        if left <= 0:
            return found, waited
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, FILE_POLL_MAX_SECONDS)


def never_processed(status: str, waited: timedelta) -> bool:
    """Whether a file not processed yet never will be: it failed, or it has taken longer than any should."""
    return status in FILE_FAILED or waited > FILE_WAIT


def why_not_processed(manifest: Manifest, status: str, details: str | None, waited: timedelta) -> str:
    """What a manifest's errors say of a file that ``never_processed``."""
    if status in FILE_FAILED:
        what = f"the service did not process request file {manifest.file_id}: it is {status}"
        return what + (f" ({details})" if details else "")
    return f"request file {manifest.file_id} was still {status} {waited.total_seconds():.0f} s after its upload"


@dataclass
class Recent:
    """Whether a listing has gone past ``since``: only once it has shown itself newest first (the API's
    order; should a service list oldest first, the whole listing is read)."""

    since: float
    last: float | None = None
    rising: bool = False  # an item newer than the one before: not newest first

    def past(self, created_at: float) -> bool:
        shown_order = self.last is not None
        self.rising = self.rising or (self.last is not None and created_at > self.last)
        self.last = created_at
        return shown_order and not self.rising and created_at < self.since
