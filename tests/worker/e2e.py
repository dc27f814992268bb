"""Helpers for the end-to-end worker tests that drive ``shared.worker.handle`` against Azurite and the emulator."""

from __future__ import annotations

import json
from typing import Any

from azure.storage.blob.aio import ContainerClient

from tests.worker.fakes import Message
from tests.worker_fixtures import Jobs


def message(body: dict[str, Any], message_id: str, dequeue_count: int = 1) -> Message:
    """A queue message as the host hands it to the worker."""
    return Message(json.dumps(body).encode(), id=message_id, dequeue_count=dequeue_count)


def worker_only(jobs: Jobs) -> ContainerClient:
    """The worker-only container (the retry store, the staging area)."""
    return jobs.blobs.get_container_client(jobs.settings["STAGING_CONTAINER"])
