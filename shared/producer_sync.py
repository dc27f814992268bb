"""Blocking wrapper of ``shared.producer.JobsClient`` for code without an event loop.

Each ``JobsClientSync`` owns a private event loop (``asyncio.Runner``) and runs the async client
on it, so the async SDK clients stay bound to one loop for their whole life. Do not call it from
inside a running event loop (use ``JobsClient`` there); one instance is not thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from azure.core.credentials_async import AsyncTokenCredential

from shared.jobs import Result
from shared.producer import JobInput, JobsClient, SubmitProgress

__all__ = ["JobsClientSync"]

T = TypeVar("T")


class JobsClientSync:
    """Same methods as ``JobsClient`` (submit, submit_many, get_result, wait), blocking."""

    def __init__(self, build: Callable[[], JobsClient]) -> None:
        """Prefer the ``from_*`` constructors; ``build`` makes the async client on the private loop."""
        self._runner = asyncio.Runner()

        async def make() -> JobsClient:
            return build()

        self._client = self._runner.run(make())

    @classmethod
    def from_url(cls, queue_account_url: str, credential: AsyncTokenCredential | None = None, **kwargs: Any) -> Self:
        return cls(lambda: JobsClient(queue_account_url, credential, **kwargs))

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs: Any) -> Self:
        return cls(lambda: JobsClient.from_connection_string(connection_string, **kwargs))

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None) -> Self:
        return cls(lambda: JobsClient.from_settings(env))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def submit(self, job: JobInput) -> str:
        return self._run(self._client.submit(job))

    def submit_many(
        self,
        jobs: Iterable[JobInput],
        *,
        concurrency: int = 16,
        progress: Callable[[SubmitProgress], None] | None = None,
    ) -> list[str]:
        return self._run(self._client.submit_many(jobs, concurrency=concurrency, progress=progress))

    def get_result(self, job_id: str) -> Result | None:
        return self._run(self._client.get_result(job_id))

    def wait(self, ids: Iterable[str], timeout: float = 300.0, **kwargs: Any) -> dict[str, Result]:
        return self._run(self._client.wait(ids, timeout, **kwargs))

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
