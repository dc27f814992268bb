"""Typed errors. Each one says what went wrong and what to do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the contract imports nothing from here; only the type is needed
    from shared.jobs import Result


class ConfigurationError(Exception):
    """An app setting is missing or malformed; the message names the setting."""


class ProducerError(Exception):
    """Base class for what the producer API (``shared.producer`` and ``shared.producer.aio``) raises on purpose."""


class InvalidJobError(ProducerError, ValueError):
    """A job broke the contract and was not sent. ``field`` names the offending field (dotted path).

    Raised before anything reaches the queue; chained from the pydantic ``ValidationError`` when
    the models refused it. ``code`` is the error code the worker would have stored for it, and
    ``index`` the job's position in a ``submit_many`` batch.
    """

    def __init__(self, message: str, *, field: str | None, code: str, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        self.index = index


class MissingPermissionError(ProducerError):
    """Storage refused an operation with 403: the identity lacks a data-plane role on the resource."""

    def __init__(self, *, action: str, role: str, resource: str, error_code: str | None = None) -> None:
        self.action = action
        self.role = role
        self.resource = resource
        self.error_code = error_code
        hint = (
            " (AuthorizationFailure can also mean the storage firewall does not admit this network)"
            if error_code == "AuthorizationFailure"
            else ""
        )
        super().__init__(
            f"{action} was refused with 403 {error_code or ''}".rstrip()
            + f": the identity in use needs the '{role}' role on {resource}{hint}. Grant it with "
            f"`az role assignment create --assignee <principal id> --role '{role}' --scope <storage account "
            "resource id>` (or narrower, on the queue/container); a new assignment takes a few minutes to apply."
        )


class QueueNotFoundError(ProducerError):
    """The queue does not exist: the settings point at the wrong queue or account, or it was never created."""

    def __init__(self, queue: str, url: str) -> None:
        self.queue = queue
        self.url = url
        super().__init__(
            f"queue '{queue}' does not exist at {url}: check JOBS_QUEUE and the storage account settings, or "
            f"create it (the infra deployment does; by hand: az storage queue create --auth-mode login "
            f"--account-name <account> --name {queue})."
        )


class WaitTimeoutError(ProducerError, TimeoutError):
    """Some jobs had no result when the wait ran out. ``missing`` lists their ids; ``results`` has the rest."""

    def __init__(
        self, missing: list[str], timeout: float, *, results: dict[str, Result] | None = None, hint: str = ""
    ) -> None:
        self.missing = missing
        self.timeout = timeout
        self.results = results or {}
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        super().__init__(
            f"no result after {timeout:g} s for {len(missing)} job(s): {shown}. The worker may be behind, stopped "
            f"or failing: check the Function App's logs and the jobs' poison queue, then wait again{hint}."
        )
