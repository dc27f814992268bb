"""The local Azure the bench drives: the test suite's stand-ins, wired the way tests/conftest.py wires them.

``start_local_azure`` starts them for ``python -m bench``; the smoke test builds a ``LocalAzure``
from the suite's session fixtures instead (same objects, same classes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulators import aoai as openai_emulator
from emulators import az as az_standin
from emulators import azurite as azurite_launcher
from emulators import managed_identity as identity
from emulators._server import ServerThread
from emulators.azurite import Azurite
from emulators.tokens import TokenIssuer

# tests.conftest makes the keyless Azurite's certificate and installs the loopback-only network
# guard in this process too: the bench dials nothing but 127.0.0.1.
from tests.conftest import (
    CERT_DIR,
    DEPLOYMENT,
    REPO,
    SCRUBBED,
    IdentityEndpoint,
    OpenAIEmulator,
)
from tests.worker_fixtures import GUARDED, base_settings

COGNITIVE = "https://cognitiveservices.azure.com"
STORAGE = "https://storage.azure.com"
AZ_BIN = REPO / "emulators" / "bin"


@dataclass
class LocalAzure:
    """Everything a bench run talks to. ``storage`` is keyless (HTTPS + tokens), ``dev_storage`` keyed."""

    issuer: TokenIssuer
    identity: IdentityEndpoint
    aoai: OpenAIEmulator
    storage: Azurite
    dev_storage: Azurite
    workdir: Path
    base_config: Any = field(default=None)  # the emulator config every scenario starts from

    def __post_init__(self) -> None:
        if self.base_config is None:
            self.base_config = self.aoai.server.call(
                lambda app: app[openai_emulator.STATE].config.model_copy(deep=True)
            )

    # --- Azure OpenAI emulator ------------------------------------------------------------------

    def configure_model(self, **changes: Any) -> None:
        """Base config + ``changes``, fresh stats and empty rate windows."""

        def apply(app: Any) -> None:
            state: openai_emulator.EmulatorState = app[openai_emulator.STATE]
            state.replace_config(self.base_config)
            state.update_config(**changes)
            state.reset_stats()
            state.windows.clear()

        self.aoai.server.call(apply)

    def model_stats(self) -> dict[str, Any]:
        return self.aoai.stats()

    # --- Managed-identity endpoint ---------------------------------------------------------------

    def identity_issued(self) -> dict[str, int]:
        """Tokens the managed-identity endpoint has issued so far, per resource (take differences)."""
        return self.identity.server.call(lambda app: dict(app[identity.STATE].issued))

    # --- Settings for one worker process -------------------------------------------------------

    def managed_identity_settings(self, names: dict[str, str]) -> dict[str, str]:
        """A Function App in Azure: identity-based storage and managed identity (tests' keyless_settings)."""
        return {**base_settings(self.aoai, names), **self.storage.settings(), **self.identity.env}

    def azure_cli_settings(self, names: dict[str, str], config_dir: Path) -> dict[str, str]:
        """A laptop: Azurite connection string and the developer's `az login` (tests' local_dev_settings)."""
        with _environ(AZURE_CONFIG_DIR=str(config_dir)):
            az_standin.login()
        return {
            **base_settings(self.aoai, names),
            **self.dev_storage.settings(),
            "AZURE_TOKEN_CREDENTIALS": "dev",
            "AZURE_CONFIG_DIR": str(config_dir),
            "PATH": f"{AZ_BIN}{os.pathsep}{os.environ['PATH']}",
            "AZ_STANDIN_PYTHON": sys.executable,
        }


def unique_names(prefix: str) -> dict[str, str]:
    """Per-run queue and container names (as the suite's ``names`` fixture makes them)."""
    suffix = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return {
        "JOBS_QUEUE": f"jobs-{suffix}",
        "RESULTS_CONTAINER": f"results-{suffix}",
        "PAYLOADS_CONTAINER": f"payloads-{suffix}",
        "REPLY_QUEUES_ALLOWED": f"replies-{suffix}",
    }


def child_env(settings: dict[str, str], *, guarded: bool = True) -> dict[str, str]:
    """Environment of a worker subprocess: this one scrubbed, plus the run's settings."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(settings)
    path = [str(GUARDED), str(REPO)] if guarded else [str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.setdefault("LOG_LEVEL", "INFO")
    return env


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare_environment(workdir: Path) -> None:
    """What the suite's ``local_azure_dir`` fixture does for a test session, for this process."""
    for name in SCRUBBED:
        os.environ.pop(name, None)
    os.environ["LOCAL_AZURE_DIR"] = str(workdir / "local-azure")
    os.environ["AZURE_CONFIG_DIR"] = str(workdir / "local-azure" / "az")
    os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"
    # A closed loopback port: DefaultAzureCredential skips its 169.254.169.254 probe.
    os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = "http://127.0.0.1:9"


@contextlib.contextmanager
def start_local_azure(workdir: Path) -> Iterator[LocalAzure]:
    """Start every stand-in, as the suite's session fixtures do, and stop them afterwards."""
    prepare_environment(workdir)
    issuer = TokenIssuer(workdir / "local-azure")
    state = identity.IdentityState(issuer=issuer, header=uuid.uuid4().hex)
    config = openai_emulator.EmulatorConfig.model_validate(
        {
            "deployments": [DEPLOYMENT],
            "grants": [identity.SYSTEM_ASSIGNED.object_id, az_standin.DEFAULT_USER.object_id],
        }
    )
    with contextlib.ExitStack() as stack:
        identity_server = ServerThread(lambda: identity.start(state), "identity-endpoint")
        identity_running = stack.enter_context(identity_server)
        aoai_server = ServerThread(lambda: openai_emulator.start(config, public_pem=issuer.public_pem), "aoai")
        aoai_running = stack.enter_context(aoai_server)
        storage = azurite_launcher.start(keyless=True, cert_dir=CERT_DIR)
        stack.callback(storage.stop)
        dev_storage = azurite_launcher.start(keyless=False)
        stack.callback(dev_storage.stop)
        yield LocalAzure(
            issuer=issuer,
            identity=IdentityEndpoint(identity_server, identity_running, ""),
            aoai=OpenAIEmulator(aoai_server, aoai_running),
            storage=storage,
            dev_storage=dev_storage,
            workdir=workdir,
        )


__all__ = [
    "COGNITIVE",
    "REPO",
    "STORAGE",
    "LocalAzure",
    "child_env",
    "prepare_environment",
    "start_local_azure",
    "unique_names",
]
