"""The local Azure's stand-ins, each started by a context manager, and the settings a worker gets from them.

The suite starts each stand-in once per session (only those a test asks for, so the unit tests
start none); ``make bench`` starts them all with ``start_local_azure``; ``make run`` starts
Azurite, the OTLP receiver (for traces) and, without a real endpoint, the identity endpoint and
the Azure OpenAI emulator.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from emulators import aoai, otlp
from emulators import az as az_standin
from emulators import azurite as azurite_launcher
from emulators import managed_identity as identity
from emulators._server import Running, ServerThread, serve
from emulators.aoai.batches import Batch, BatchStore
from emulators.aoai.state import RecordedRequest
from emulators.azurite import Azurite
from emulators.stack.environment import AZ_BIN, isolated_environment, patched_environ
from emulators.tokens import Principal, TokenIssuer
from shared.constants import azurite_connection_string

# A reasoning model by default, as Azure sells today; the second is a gpt-4.1-class model with the
# older rules (temperature, stop, no reasoning tokens).
DEPLOYMENT = "gpt-5.4-mini"
SECOND_DEPLOYMENT = "gpt-4.1-mini"
DEPLOYMENTS = (DEPLOYMENT, SECOND_DEPLOYMENT)
# The Function App's system-assigned identity and the developer's `az login` hold the role.
GRANTED = (identity.SYSTEM_ASSIGNED.object_id, az_standin.DEFAULT_USER.object_id)
# A user-assigned identity the endpoint serves but the emulator never granted: the missing-role case.
UNGRANTED_CLIENT_ID = "0c1d0000-0000-4000-8000-00000000c0de"
COGNITIVE = "https://cognitiveservices.azure.com"
STORAGE = "https://storage.azure.com"


# --- The stand-ins ---------------------------------------------------------------------------------


@dataclass
class IdentityEndpoint:
    """The managed-identity endpoint (system-assigned, plus one user-assigned identity without the role)."""

    server: ServerThread
    running: Running
    ungranted_client_id: str = UNGRANTED_CLIENT_ID

    @property
    def env(self) -> dict[str, str]:
        """What a Function App's environment holds so ManagedIdentityCredential uses this endpoint."""
        return identity.environment(self.running)

    @property
    def state(self) -> identity.IdentityState:
        return self.running.app[identity.STATE]

    def issued(self) -> dict[str, int]:
        """Tokens issued so far, per resource (take differences)."""
        return self.server.call(lambda app: dict(app[identity.STATE].issued))

    def tokens_issued(self, resource: str = COGNITIVE) -> int:
        return self.issued().get(resource, 0)


def ungranted(endpoint: IdentityEndpoint) -> Principal:
    """The user-assigned identity the Azure OpenAI emulator has no role assignment for."""
    return endpoint.state.user_assigned[endpoint.ungranted_client_id]


@contextlib.contextmanager
def start_identity_endpoint(issuer: TokenIssuer) -> Iterator[IdentityEndpoint]:
    state = identity.IdentityState(issuer=issuer, header=uuid.uuid4().hex)
    state.add_user_assigned(UNGRANTED_CLIENT_ID, name="uami-without-role")
    server = ServerThread(lambda: identity.start(state), "identity-endpoint")
    with server as running:
        yield IdentityEndpoint(server, running)


@dataclass
class OpenAIEmulator:
    """The Azure OpenAI emulator, driven from outside its event loop."""

    server: ServerThread
    running: Running

    @property
    def endpoint(self) -> str:
        return self.running.url

    def stats(self) -> dict[str, Any]:
        return self.server.call(lambda app: app[aoai.STATE].stats())

    def requests(self, deployment: str | None = None) -> list[RecordedRequest]:
        """The data-plane requests recorded since the last reset (``RecordedRequest``: when each arrived and was
        answered, and how), oldest first; only those naming ``deployment`` if given."""
        recorded = self.server.call(lambda app: list(app[aoai.STATE].requests))
        return [r for r in recorded if deployment is None or r.deployment == deployment]

    def configure(self, **changes: Any) -> None:
        self.server.call(lambda app: app[aoai.STATE].update_config(**changes))

    def grant(self, principal_id: str, delay_seconds: float = 0) -> float:
        """Assign the role, in effect ``delay_seconds`` from now (a new grant replaces a pending one); returns
        when it takes effect (epoch seconds, the clock of ``requests()``)."""
        return self.server.call(lambda app: app[aoai.STATE].grant(principal_id, delay_seconds))

    def update_deployment(self, name: str, **changes: Any) -> None:
        """Change some of one deployment's fields (``tpm``, ``rpm``, ``outage``, the quirk flags), keep the rest."""
        self.server.call(lambda app: app[aoai.STATE].update_deployment(name, **changes))

    def fail_deployment(self, name: str, seconds: float, mode: aoai.OutageMode = "503") -> float:
        """Take deployment ``name`` down for ``seconds``: ``mode`` ``"503"`` (ServiceUnavailable), ``"timeout"``
        (stalls until the outage ends, then closes) or ``"connection_drop"``; returns its end (epoch seconds).
        ``restore_deployment`` ends it early."""
        return self.server.call(lambda app: app[aoai.STATE].fail_deployment(name, seconds, mode))

    def restore_deployment(self, name: str) -> None:
        self.update_deployment(name, outage=None)

    def revoke(self, principal_id: str) -> None:
        self.server.call(lambda app: app[aoai.STATE].revoke(principal_id))

    def reset(self, config: aoai.EmulatorConfig | None = None, **changes: Any) -> aoai.EmulatorConfig:
        """Fresh stats and empty rate windows (an earlier run's history must not throttle the next),
        and with ``config``, that config plus ``changes``. Returns the config in effect before."""

        def apply(app: web.Application) -> aoai.EmulatorConfig:
            state = app[aoai.STATE]
            before = state.config.model_copy(deep=True)
            if config is not None:
                state.replace_config(config)
            if changes:
                state.update_config(**changes)
            state.reset_stats()
            state.windows.clear()
            state.reset_batches()  # no files or batches: an earlier run's must not count against the file limit
            state.reset_responses()  # nor an earlier test's stored (background) responses
            return before

        return self.server.call(apply)

    # --- Files and Batches: emulators/aoai/batches.py describes each knob ----------------------------------------

    def add_batch_deployment(self, name: str, model: str | None = None, token_limit: int | None = None) -> None:
        """Make ``name`` a Global Batch deployment of at most ``token_limit`` enqueued tokens (None = no limit)."""
        self.server.call(lambda app: app[aoai.STATE].add_batch_deployment(name, model, token_limit))

    def configure_batches(self, **changes: Any) -> None:
        """Change some batch knobs (``config.BatchConfig``: timing, limits, failures...), keep the rest."""
        self.server.call(lambda app: app[aoai.STATE].update_batch_config(**changes))

    def expire_batch(self, batch_id: str, done: int | None = None) -> dict[str, Any]:
        """End the batch as ``expired`` now, keeping ``done`` requests (default: those done by now); its JSON."""
        return self._batch(lambda batches, now: batches.expire(batch_id, now, done))

    def fail_batch(self, batch_id: str, code: str = "server_error", message: str = "Failed.") -> dict[str, Any]:
        """End the batch as ``failed`` now with ``errors.data = [{code, message}]``; its JSON."""
        return self._batch(lambda batches, now: batches.fail(batch_id, now, code, message))

    def process_files(self) -> list[str]:
        """End every pending upload's processing now (``file_processing_seconds``); the ids of those it ended."""
        now = time.time()
        return self.server.call(lambda app: app[aoai.STATE].batches.process_files(now))

    def report_batch_status(self, batch_id: str, status: str | None) -> dict[str, Any]:
        """Have the API show ``status`` for the batch (a status the service may add) while it runs as scheduled;
        None: its real status again. Its JSON."""
        return self._batch(lambda batches, now: batches.report_status(batch_id, now, status))

    def batch_snapshot(self, batch_id: str) -> dict[str, Any]:
        """The batch's JSON as ``GET /openai/v1/batches/{id}`` would answer now (no auth, not counted)."""
        return self._batch(lambda batches, now: batches.batch(batch_id, now))

    def _batch(self, act: Callable[[BatchStore, float], Batch]) -> dict[str, Any]:
        now = time.time()
        return self.server.call(lambda app: act(app[aoai.STATE].batches, now).to_json(now))


@contextlib.contextmanager
def start_openai_emulator(
    issuer: TokenIssuer, *, deployments: Sequence[str] = DEPLOYMENTS, grants: Sequence[str] = GRANTED, **config: Any
) -> Iterator[OpenAIEmulator]:
    """The emulator trusting ``issuer``'s tokens; ``config`` sets any other EmulatorConfig field."""
    settings = aoai.EmulatorConfig.model_validate({"deployments": list(deployments), "grants": list(grants), **config})
    server = ServerThread(lambda: aoai.start(settings, public_pem=issuer.public_pem), "openai-emulator")
    with server as running:
        yield OpenAIEmulator(server, running)


@dataclass
class OtlpReceiver:
    """The OTLP/HTTP receiver (emulators/otlp.py), read from outside its event loop."""

    server: ServerThread
    running: Running

    @property
    def endpoint(self) -> str:
        """The ``OTEL_EXPORTER_OTLP_ENDPOINT`` to export to (the SDK appends ``/v1/traces`` etc.)."""
        return self.running.url

    def env(self, **intervals: int) -> dict[str, str]:
        """The ``OTEL_*`` settings that make a process export here, soon after each span ends."""
        return otlp.environment(self.endpoint, **intervals)

    def spans(
        self, *, trace_id: str | None = None, name: str | None = None, service: str | None = None
    ) -> list[otlp.SpanRecord]:
        return self.server.call(lambda app: app[otlp.STATE].find_spans(trace_id=trace_id, name=name, service=service))

    def metrics(self, name: str | None = None) -> list[otlp.MetricRecord]:
        return self.server.call(lambda app: app[otlp.STATE].find_metrics(name))

    def stats(self) -> dict[str, Any]:
        return self.server.call(lambda app: app[otlp.STATE].stats())

    def reset(self) -> None:
        self.server.call(lambda app: app[otlp.STATE].reset())

    def summary(self, trace_id: str) -> str:
        """The trace in one line: ``send jobs > process jobs > chat gpt-5.4-mini (+3 storage)``."""
        return otlp.summarize(self.spans(trace_id=trace_id))


@contextlib.contextmanager
def start_otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on a free loopback port, keeping what it receives in memory."""
    server = ServerThread(lambda: otlp.start(), "otlp-receiver")
    with server as running:
        yield OtlpReceiver(server, running)


@contextlib.contextmanager
def start_azurite(*, keyless: bool, cert_dir: Path | None = None) -> Iterator[Azurite]:
    """Plain HTTP with the development key (the local-dev path), or ``keyless``: HTTPS + OAuth as in Azure."""
    instance = azurite_launcher.start(keyless=keyless, cert_dir=cert_dir)
    try:
        yield instance
    finally:
        instance.stop()


@dataclass(frozen=True)
class AzureCli:
    """A developer's `az login`, kept in its own config directory; ``env`` puts the ``az`` stand-in first on PATH."""

    config_dir: Path
    env: dict[str, str]

    @classmethod
    def sign_in(cls, config_dir: Path) -> AzureCli:
        cli = cls(
            config_dir,
            {
                "AZURE_CONFIG_DIR": str(config_dir),
                "PATH": f"{AZ_BIN}{os.pathsep}{os.environ['PATH']}",
                "AZ_STANDIN_PYTHON": sys.executable,
                "AZURE_TOKEN_CREDENTIALS": "dev",
            },
        )
        cli.login()
        return cli

    def _here(self) -> contextlib.AbstractContextManager[None]:
        return patched_environ({"AZURE_CONFIG_DIR": str(self.config_dir)})

    def login(self) -> None:
        with self._here():
            az_standin.login()

    def logout(self) -> None:
        with self._here():
            az_standin.logout()

    def invocations(self) -> int:
        """How many times ``az`` has run with this config directory."""
        with self._here():
            return az_standin.invocations()


def _refuse_app() -> web.Application:
    """Answers every storage call as Azure does when the caller lacks a data-plane role."""

    async def refuse(request: web.Request) -> web.Response:
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
            "<Message>This request is not authorized to perform this operation using this permission.</Message>"
            "</Error>"
        )
        return web.Response(
            status=403,
            text=body,
            content_type="application/xml",
            headers={"x-ms-error-code": "AuthorizationPermissionMismatch", "x-ms-request-id": "local"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


@contextlib.contextmanager
def start_forbidden_storage() -> Iterator[str]:
    """A connection string for a storage account that refuses everything with 403."""

    async def start() -> Running:
        return await serve(_refuse_app())

    with ServerThread(start, "forbidden-storage") as running:
        url = f"{running.url}/devstoreaccount1"
        yield azurite_connection_string(url, url, url)


# --- Settings for one worker process ------------------------------------------------------------------


def unique_names(label: str = "") -> dict[str, str]:
    """Queue and container names no other test or run uses, so sharing one Azurite never mixes data."""
    suffix = "-".join(part for part in (label, uuid.uuid4().hex[:10]) if part)
    return {
        "JOBS_QUEUE": f"jobs-{suffix}",
        "RESULTS_CONTAINER": f"results-{suffix}",
        "PAYLOADS_CONTAINER": f"payloads-{suffix}",
        "STAGING_CONTAINER": f"staging-{suffix}",  # the worker-only container: retry store, batch staging
        "REPLY_QUEUES_ALLOWED": f"replies-{suffix}",
    }


def base_settings(emulator: OpenAIEmulator, names: dict[str, str]) -> dict[str, str]:
    """The model side of a worker's settings (the emulator, both deployments) and its names."""
    return {
        "AZURE_OPENAI_ENDPOINT": emulator.endpoint,
        "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
        "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": ",".join(DEPLOYMENTS),
        "AZURE_OPENAI_TIMEOUT_SECONDS": "10",
        "AZURE_OPENAI_MAX_RETRIES": "2",
        **names,
    }


def managed_identity_settings(
    emulator: OpenAIEmulator, names: dict[str, str], storage: Azurite, endpoint: IdentityEndpoint
) -> dict[str, str]:
    """A Function App in Azure: identity-based (keyless) storage and a managed identity."""
    return {**base_settings(emulator, names), **storage.settings(), **endpoint.env}


def azure_cli_settings(
    emulator: OpenAIEmulator, names: dict[str, str], storage: Azurite, cli: AzureCli
) -> dict[str, str]:
    """A laptop: the Azurite connection string and the developer's `az login`."""
    return {**base_settings(emulator, names), **storage.settings(), **cli.env}


# --- Everything at once -----------------------------------------------------------------------------


@dataclass
class LocalAzure:
    """Every stand-in a bench run talks to. ``storage`` is keyless (HTTPS + tokens), ``dev_storage`` keyed."""

    issuer: TokenIssuer
    identity: IdentityEndpoint
    model: OpenAIEmulator  # the Azure OpenAI emulator
    storage: Azurite
    dev_storage: Azurite
    workdir: Path
    base_config: aoai.EmulatorConfig | None = None  # the emulator config every scenario starts from

    def __post_init__(self) -> None:
        if self.base_config is None:
            self.base_config = self.model.server.call(lambda app: app[aoai.STATE].config.model_copy(deep=True))

    def configure_model(self, **changes: Any) -> None:
        """Base config + ``changes``, fresh stats and empty rate windows."""
        self.model.reset(self.base_config, **changes)

    def model_stats(self) -> dict[str, Any]:
        return self.model.stats()

    def identity_issued(self) -> dict[str, int]:
        """Tokens the managed-identity endpoint has issued so far, per resource (take differences)."""
        return self.identity.issued()

    def managed_identity_settings(self, names: dict[str, str]) -> dict[str, str]:
        return managed_identity_settings(self.model, names, self.storage, self.identity)

    def azure_cli_settings(self, names: dict[str, str], cli: AzureCli) -> dict[str, str]:
        return azure_cli_settings(self.model, names, self.dev_storage, cli)


@contextlib.contextmanager
def start_local_azure(workdir: Path, cert_dir: Path) -> Iterator[LocalAzure]:
    """Isolate this process's environment and start every stand-in; stop them and restore it after.

    ``cert_dir`` is what ``environment.trust_local_certificate()`` returned (the keyless Azurite's certificate).
    """
    state_dir = workdir / "local-azure"
    with contextlib.ExitStack() as stack:
        stack.enter_context(isolated_environment(state_dir))
        issuer = TokenIssuer(state_dir)
        yield LocalAzure(
            issuer=issuer,
            identity=stack.enter_context(start_identity_endpoint(issuer)),
            model=stack.enter_context(start_openai_emulator(issuer)),
            storage=stack.enter_context(start_azurite(keyless=True, cert_dir=cert_dir)),
            dev_storage=stack.enter_context(start_azurite(keyless=False)),
            workdir=workdir,
        )
