from typing import Any

import pytest_asyncio

from tests.worker_fixtures import Jobs, jobs_for, keyless_settings, local_dev_settings, start_host

__all__ = ["jobs", "jobs_for", "keyless_settings", "local_dev_settings", "start_host"]


@pytest_asyncio.fixture
async def jobs(local_dev_settings: dict[str, str], jobs_for: Any) -> Jobs:
    """The producer's side of the local stack (queues and containers) with the local development settings."""
    made: Jobs = await jobs_for(local_dev_settings)
    return made
