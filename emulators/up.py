"""`make up`: the local stack `make run` starts, kept up for your own producers until Ctrl-C.

The same start (``run.start_stack``: Azurite, the OTLP receiver, the managed-identity endpoint, the Azure
OpenAI emulator, the worker), but Azurite is keyless (HTTPS and Entra ID tokens, as storage is in Azure), so
the CLI (``python -m shared submit|wait|status|replay``), a Python service (``JobsClient.from_settings()``)
and the TypeScript producer reach it the way they reach Azure: the worker's own settings and
DefaultAzureCredential, no key. It creates the queues and containers infra/ creates, with those very
settings, then prints them and writes them to ``.local-azure/env.sh`` (``$LOCAL_AZURE_DIR/env.sh``) to
``source``. With a real AZURE_OPENAI_ENDPOINT (environment or local.settings.json) the worker calls it with
your `az login`, as `make run` does; the exports then say AZURE_TOKEN_CREDENTIALS=dev, and storage tokens
come from your login too (the local Azurite checks their claims, never where they came from).

SIGINT or SIGTERM stops everything it started (the worker, Azurite, the stand-ins) and removes the env file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from emulators.run import configured_settings, start_stack
from emulators.stack.environment import patched_environ
from emulators.tokens import REPO_ROOT, state_dir
from shared.settings import StorageNames
from shared.storage_clients import create_credential

ENV_FILE = "env.sh"
QUEUE_URL = "AzureWebJobsStorage__queueServiceUri"
BLOB_URL = "AzureWebJobsStorage__blobServiceUri"
# What a producer, the CLI and the doctor read, besides the names (JOBS_QUEUE...): where storage is, what
# trusts its certificate (Python's ssl, requests, Node), which identity signs in, the model (for the doctor
# or a service that calls it too) and where to send telemetry.
EXPORTED = (
    QUEUE_URL,
    BLOB_URL,
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_OPENAI_TOKEN_SCOPE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def exports(env: Mapping[str, str]) -> dict[str, str]:
    """The settings another process needs to use the stack whose worker runs with ``env``."""
    names = StorageNames.from_env(env)
    found = {name: env[name] for name in EXPORTED if env.get(name)}
    return {
        **found,
        "JOBS_QUEUE": names.jobs_queue,
        "RESULTS_CONTAINER": names.results_container,
        "PAYLOADS_CONTAINER": names.payloads_container,
        "REPLY_QUEUES_ALLOWED": ",".join(names.reply_queues_allowed),
    }


def render(exported: Mapping[str, str]) -> str:
    """``export NAME=value`` lines a shell can source, quoted, under a comment saying what they are."""
    lines = [
        f"# make up (python -m emulators.up), {time.strftime('%Y-%m-%d %H:%M:%S')}: the local stack for the CLI",
        "# (python -m shared ...), a Python service (JobsClient.from_settings()) and the TypeScript producer.",
        "# Valid while make up runs (its ports change every start). To forget them in this shell:",
        f"#   unset {' '.join(exported)}",
        *(f"export {name}={shlex.quote(value)}" for name, value in exported.items()),
    ]
    return "\n".join(lines) + "\n"


async def provision(env: Mapping[str, str], ca_bundle: Path) -> None:
    """The queues and containers infra/ creates, made with the identity ``env`` selects (in the environment
    meanwhile: DefaultAzureCredential reads it) over HTTPS trusting ``ca_bundle``: if this works, so do the
    exports."""
    names = StorageNames.from_env(env)
    verify = str(ca_bundle)  # not SSL_CERT_FILE: this process imported aiohttp before the certificate existed
    async with (
        create_credential(env) as credential,
        QueueServiceClient(env[QUEUE_URL], credential=credential, connection_verify=verify) as queues,
        BlobServiceClient(env[BLOB_URL], credential=credential, connection_verify=verify) as blobs,
    ):
        for queue in (names.jobs_queue, f"{names.jobs_queue}-poison", *names.reply_queues_allowed):
            with contextlib.suppress(ResourceExistsError):
                await queues.create_queue(queue)
        for container in (names.results_container, names.payloads_container):
            with contextlib.suppress(ResourceExistsError):
                await blobs.create_container(container)


def write_atomically(path: Path, text: str) -> None:
    """Whoever waits for ``path`` sees it whole or not at all. Private to its owner: it holds IDENTITY_HEADER."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.chmod(0o600)
    partial.replace(path)


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (what to type after ``source``)."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make up", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    parser.add_argument("--env-file", type=Path, help=f"where to write the exports (default: <state dir>/{ENV_FILE})")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # read as it happens, in a pipe too

    # A signal only asks to stop: the start runs to its end, then everything is torn down in order (raised
    # mid-start, KeyboardInterrupt could leave Azurite, in its own session, running).
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    state = state_dir()
    env_file = args.env_file or state / ENV_FILE
    env_file.unlink(missing_ok=True)  # an old one names ports that are gone
    cert_dir = state / "up-tls"  # kept after stopping: a shell that sourced the exports still finds the bundle
    shutil.rmtree(cert_dir, ignore_errors=True)  # a new certificate each start (it is valid for two days)
    with contextlib.ExitStack() as stack:
        local = start_stack(
            stack, configured_settings(args.settings), keyless=True, cert_dir=cert_dir, producer_spans=False
        )
        assert local.ca_bundle is not None  # keyless
        exported = exports(local.env)
        with patched_environ(exported):
            asyncio.run(provision(local.env, local.ca_bundle))
        text = render(exported)
        write_atomically(env_file, text)
        stack.callback(env_file.unlink, missing_ok=True)  # first thing on the way down
        print(f"\n{text}\nready: `source {shown(env_file)}` in another shell, then e.g.")
        print('  python -m shared submit "Hello" --id hello-1 && python -m shared wait hello-1')
        print("Ctrl-C stops the worker, Azurite and the stand-ins.")
        while not stop.wait(0.5):
            if local.worker.poll() is not None:
                print(f"the worker exited (code {local.worker.returncode}); see {local.log_path}; stopping")
                return 1
        print("stopping ...")
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
