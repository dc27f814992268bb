"""The shared budget (shared/budget.py) against Azurite through the real azure-storage-blob client: conditional
writes racing from two instances, and a store that refuses (403) or has no container, degrading with no call lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.storage.blob.aio import ContainerClient

from emulators.azurite import Azurite
from shared.budget import HEADROOM, BlobStore, Conflict, SharedBudget, ledger_name, parse
from shared.pacing import Gate

LIMIT, WINDOW = 10_000, 10.0
NAME = ledger_name("https://x.openai.azure.com", "chat")


@pytest.fixture
async def container(azurite: Azurite) -> AsyncIterator[ContainerClient]:
    client = ContainerClient.from_connection_string(azurite.connection_string, f"staging-{uuid.uuid4().hex[:8]}")
    await client.create_container()
    try:
        yield client
    finally:
        await client.delete_container()
        await client.close()


async def test_a_stale_etag_is_refused_and_a_second_create_conflicts(container: ContainerClient) -> None:
    store = BlobStore(container)
    assert await store.read(NAME) is None
    first = await store.write(NAME, b'{"claims":{}}', None)
    with pytest.raises(Conflict):
        await store.write(NAME, b"{}", None)  # If-None-Match: * on an existing blob
    second = await store.write(NAME, b'{"claims":{}}', first)
    with pytest.raises(Conflict):
        await store.write(NAME, b"{}", first)  # If-Match an ETag that is no longer current
    found = await store.read(NAME)
    assert found is not None and found[1] == second


async def test_two_instances_racing_never_lease_more_than_the_limit(container: ContainerClient) -> None:
    views = [SharedBudget(BlobStore(container), NAME, name) for name in ("a", "b")]
    for _ in range(3):  # both claim at once, three times: conflicts re-read, no write is lost
        await asyncio.gather(*(v.claim(LIMIT, 1_000, LIMIT, WINDOW) for v in views))
        for v in views:
            v.next_claim = 0.0
    found = await BlobStore(container).read(NAME)
    assert found is not None
    ledger = parse(found[0], views[0].clock())
    chunks = [c for cs in ledger.values() for c in cs]
    for moment, _, _ in chunks:  # the window never holds more than the room, whenever a booking starts
        assert sum(t for start, until, t in chunks if start <= moment < until) <= LIMIT * HEADROOM
    assert set(ledger) == {"a", "b"}
    assert all(v.granted > 0 for v in views)


HEADERS = {"x-ratelimit-limit-tokens": str(LIMIT), "x-ratelimit-remaining-tokens": str(LIMIT),
           "x-ratelimit-reset-tokens": "1s"}  # fmt: skip


async def admitted_through(shared: SharedBudget) -> Gate:
    gate = Gate(shared=shared)
    gate.observe(200, HEADERS)
    tickets = await asyncio.gather(*(gate.acquire(500, wait=5) for _ in range(4)))
    for ticket in tickets:
        gate.release(ticket)
    return gate


async def test_a_store_refusing_access_degrades_and_every_call_is_admitted(forbidden_storage: str) -> None:
    async with ContainerClient.from_connection_string(forbidden_storage, "staging") as denied:
        shared = SharedBudget(BlobStore(denied), NAME, "a")
        gate = await admitted_through(shared)
    assert not shared.live() and shared.failures == 1
    assert len(gate.admitted) == 4


async def test_a_missing_container_degrades_and_every_call_is_admitted(azurite: Azurite) -> None:
    async with ContainerClient.from_connection_string(azurite.connection_string, "no-such-container") as missing:
        shared = SharedBudget(BlobStore(missing), NAME, "a")
        gate = await admitted_through(shared)
    assert not shared.live()
    assert len(gate.admitted) == 4
