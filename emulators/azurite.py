"""Start Azurite (the npm package pinned in package.json) on free loopback ports.

Two modes:
- plain HTTP with the well-known development account key (what ``UseDevelopmentStorage=true``
  means), for the local-dev path;
- **keyless**: ``--oauth basic`` over HTTPS with a self-signed certificate made at start, so
  clients authenticate with a TokenCredential and no key at all, as in Azure. Azurite checks
  the token's claims (issuer ``https://sts.windows.net/...``, audience
  ``https://storage.azure.com``, nbf/exp) but not its signature.

Always ``--disableTelemetry`` (Azurite phones home otherwise) and in-memory.
Standalone: ``python -m emulators.azurite [--keyless]`` prints the settings a client needs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulators import _process
from emulators.tokens import REPO_ROOT
from shared.constants import AZURITE_ACCOUNT as ACCOUNT
from shared.constants import azurite_connection_string

_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at (https?)://[^:]+:(\d+)")


class AzuriteError(RuntimeError):
    """Azurite could not be started; the message says how to fix it."""


def azurite_binary() -> Path:
    binary = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise AzuriteError(f"{binary} is missing: run `make setup` (npm ci) to install the pinned Azurite.")
    return binary


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, its key, and a CA bundle trusting it.

    The bundle is certifi's roots plus this certificate, so pointing ``SSL_CERT_FILE`` at it
    keeps real HTTPS endpoints verifiable in the same process. An existing set in
    ``directory`` is reused: aiohttp reads ``SSL_CERT_FILE`` once, at import, so a process
    that set it early must keep seeing the same certificate.
    """
    cert_path, key_path, bundle_path = directory / "cert.pem", directory / "key.pem", directory / "ca-bundle.pem"
    if cert_path.exists() and key_path.exists() and bundle_path.exists():
        return cert_path, key_path, bundle_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    bundle_path.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + cert_pem)
    return cert_path, key_path, bundle_path


@dataclass
class Azurite:
    """A running Azurite. ``settings()`` gives the Functions-style storage settings for it."""

    keyless: bool
    process: subprocess.Popen[str]
    ports: dict[str, int]
    workdir: Path
    ca_bundle: Path | None = None
    output: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.keyless else "http"

    def service_url(self, service: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.ports[service]}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """The development-account connection string (plain mode only: keyless has no key)."""
        if self.keyless:
            raise AzuriteError("Keyless Azurite has no connection string: use settings() and a TokenCredential.")
        return azurite_connection_string(*(self.service_url(name) for name in ("blob", "queue", "table")))

    def settings(self) -> dict[str, str]:
        """App settings (environment) for the worker and the Functions host."""
        if not self.keyless:
            return {"AzureWebJobsStorage": self.connection_string}
        assert self.ca_bundle is not None
        bundle = str(self.ca_bundle)
        return {
            "AzureWebJobsStorage__blobServiceUri": self.service_url("blob"),
            "AzureWebJobsStorage__queueServiceUri": self.service_url("queue"),
            "AzureWebJobsStorage__tableServiceUri": self.service_url("table"),
            # Trust the self-signed certificate (Python's ssl, requests, Node).
            "SSL_CERT_FILE": bundle,
            "REQUESTS_CA_BUNDLE": bundle,
            "NODE_EXTRA_CA_CERTS": bundle,
        }

    def stop(self) -> None:
        _process.stop(self.process, grace=10)
        if self.pump is not None:
            self.pump.join(timeout=5)  # it ends at EOF; closing the pipe under it would race
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(
    *,
    keyless: bool = False,
    port: int = 0,
    cert_dir: Path | None = None,
    timeout: float = 30.0,
    memory_limit_mb: int = 1024,
) -> Azurite:
    """Start Azurite and return once all three services listen.

    ``port`` is the blob port, queue and table take the next two; 0 picks free ports.
    ``cert_dir`` (keyless mode) holds or receives the certificate; default: a fresh one.
    """
    ports = [port, port + 1, port + 2] if port else [0, 0, 0]
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    command = [
        str(azurite_binary()),
        "--disableTelemetry",
        "--inMemoryPersistence",
        "--extentMemoryLimit",
        str(memory_limit_mb),
        "--skipApiVersionCheck",
        "--blobHost", "127.0.0.1", "--blobPort", str(ports[0]),
        "--queueHost", "127.0.0.1", "--queuePort", str(ports[1]),
        "--tableHost", "127.0.0.1", "--tablePort", str(ports[2]),
    ]  # fmt: skip
    bundle = None
    if keyless:
        cert, key, bundle = make_certificate(cert_dir or workdir)
        command += ["--oauth", "basic", "--cert", str(cert), "--key", str(key)]
    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    azurite = Azurite(keyless=keyless, process=process, ports={}, workdir=workdir, ca_bundle=bundle)
    ready = threading.Event()

    def pump() -> None:
        # Keep draining output so Azurite never blocks on a full pipe.
        assert process.stdout is not None
        for line in process.stdout:
            azurite.output.append(line.rstrip())
            if match := _LISTENING.search(line):
                azurite.ports[match.group(1).lower()] = int(match.group(3))
                if len(azurite.ports) == 3:
                    ready.set()
        ready.set()

    azurite.pump = threading.Thread(target=pump, name="azurite-output", daemon=True)
    azurite.pump.start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            break
    if len(azurite.ports) != 3:
        azurite.stop()
        raise AzuriteError("Azurite did not start:\n" + "\n".join(azurite.output[-20:]))
    return azurite


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.azurite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keyless", action="store_true", help="OAuth over HTTPS: token credentials, no key")
    parser.add_argument(
        "--port", type=int, default=0, help="blob port; queue and table use the next two (default 0: free ports)"
    )
    args = parser.parse_args(argv)
    azurite = start(keyless=args.keyless, port=args.port)
    for name, value in azurite.settings().items():
        print(f"export {name}='{value}'")
    print("# Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        azurite.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
