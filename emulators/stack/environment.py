"""Process set-up for the local Azure: certificate trust and environments. Imports no aiohttp.

aiohttp (under azure-core's async transport) builds its verifying SSL context once, at import,
from ``SSL_CERT_FILE``. So a process that will talk to the keyless (HTTPS) Azurite calls
``trust_local_certificate()`` before anything imports aiohttp, which is why this module must not.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from emulators.azurite import make_certificate
from emulators.tokens import REPO_ROOT

REPO = REPO_ROOT
# First on a Python child's PYTHONPATH, its sitecustomize installs the network guard in the child.
GUARDED = REPO / "emulators" / "guarded"
AZ_BIN = REPO / "emulators" / "bin"

# Variables that would send credentials to login.microsoftonline.com or change which credential
# answers; whoever drives the local Azure sets what each process needs itself.
SCRUBBED = (
    "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY",
    "AzureWebJobsStorage", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
    # A developer's telemetry settings would switch exporting on in every worker the tests start.
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED", "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
)  # fmt: skip


def trust_local_certificate(directory: Path | None = None) -> Path:
    """Make (or reuse) the keyless Azurite's certificate in ``directory`` (default: a new temporary
    one) and point ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE`` at a bundle that trusts it.

    Returns the directory, for ``start_azurite(keyless=True, cert_dir=...)``.
    """
    assert "aiohttp" not in sys.modules, "trust the local certificate before anything imports aiohttp"
    directory = directory or Path(tempfile.mkdtemp(prefix="local-azure-tls-"))
    _, _, bundle = make_certificate(directory)
    os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
    return directory


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` (``None`` removes the variable); restore the previous ones after."""
    before = {name: os.environ.get(name) for name in values}
    try:
        _apply(values)
        yield
    finally:
        _apply(before)


def _apply(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def isolated_environment(directory: Path) -> contextlib.AbstractContextManager[None]:
    """This process's environment for a local Azure kept in ``directory``: loopback only, no
    credential variables, restored on exit. Tests hold it for a session, the bench for a run."""
    return patched_environ(
        {
            **dict.fromkeys(SCRUBBED),
            "LOCAL_AZURE_DIR": str(directory),
            "AZURE_CONFIG_DIR": str(directory / "az"),
            "NO_PROXY": "127.0.0.1,localhost,::1",
            # A closed loopback port for IMDS, which also makes DefaultAzureCredential skip its
            # 169.254.169.254 probe: a process that forgets to pick an identity fails, locally.
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9",
        }
    )


def child_environment(settings: Mapping[str, str], *, guarded: bool = True) -> dict[str, str]:
    """A Python child's environment: this one without ``SCRUBBED``, then ``settings``, and
    (``guarded``) the network guard loaded at its start."""
    env = {name: value for name, value in os.environ.items() if name not in SCRUBBED}
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARDED), str(REPO)] if guarded else [str(REPO)])
    return env
