"""Typed errors: what the producer clients, the operations and the command line raise on purpose.

One tree, so a caller can catch them all with ``QueueWorkerError``::

    QueueWorkerError
    ├── ConfigurationError
    │   └── ContainerClashError
    └── ProducerError
        ├── InvalidJobError (also a ValueError)
        ├── MissingPermissionError
        ├── QueueNotFoundError
        └── WaitTimeoutError (also a TimeoutError)

Each message says what went wrong and what to do about it. Exceptions that steer control flow
stay beside their use and out of this tree: the worker's ``shared.jobs.JobRefused`` (its refusal of
a message it received), the CLI's usage error (exit 2), pacing's and routing's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError

from shared.constants import STORAGE_PERMISSION_CODES

if TYPE_CHECKING:  # the contract imports nothing from here; only the type is needed
    from shared.jobs import Result


class QueueWorkerError(Exception):
    """The root of every error here: catch it to handle whatever this package raises on purpose."""


class ConfigurationError(QueueWorkerError):
    """An app setting is missing or malformed; the message names the setting."""


class ContainerClashError(ConfigurationError):
    """Two container settings name one container, which would undo what each role allows: producers read
    ``RESULTS_CONTAINER``, write ``PAYLOADS_CONTAINER`` and hold no role on ``STAGING_CONTAINER`` (the
    worker's own state). ``settings`` names both settings, ``container`` the container they share."""

    def __init__(self, message: str, *, settings: tuple[str, str], container: str) -> None:
        super().__init__(message)
        self.settings = settings
        self.container = container


class ProducerError(QueueWorkerError):
    """What the producer clients (``shared.producer``, ``shared.producer.aio``) raise on purpose.

    Raised as is for a result blob the client cannot read; ``shared.operations`` raises the storage
    subclasses (MissingPermissionError, QueueNotFoundError) too.
    """


class InvalidJobError(ProducerError, ValueError):
    """The producer refused a job (or a job id) before sending anything: nothing reached the queue.

    The producer's side of the contract: it checks each job with the worker's own parser and raises
    this instead of sending a job the worker would refuse; fix the field it names and submit again.
    It is not the worker's ``shared.jobs.JobRefused``, the worker's refusal of a message it already
    received, which callers of the producer never see. ``field`` names the offending field (dotted
    path); ``code`` is the error code the worker would have stored for it; ``index`` is the job's
    position in a ``submit_many`` batch. Chained from the pydantic ``ValidationError`` when the
    models refused it.
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


@contextlib.contextmanager
def storage_refusal(action: str, role: str, resource: str) -> Iterator[None]:
    """Inside the block, storage's 403 for lack of a data-plane role becomes MissingPermissionError.

    ``action`` says what was refused, ``role`` the role that grants it, ``resource`` where. Any other
    storage failure passes unchanged: a 403 with another code (``AuthenticationFailed``, say) is not
    one a role assignment fixes.
    """
    try:
        yield
    except HttpResponseError as exc:
        code = getattr(exc, "error_code", None)
        if exc.status_code == 403 and code in STORAGE_PERMISSION_CODES:
            raise MissingPermissionError(action=action, role=role, resource=resource, error_code=str(code)) from exc
        raise
