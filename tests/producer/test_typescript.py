"""The TypeScript producer (examples/typescript) end to end, keyless, as it runs on Azure.

Node gets its storage token from the managed-identity endpoint (IDENTITY_ENDPOINT +
IDENTITY_HEADER, the App Service protocol) through DefaultAzureCredential, and trusts the keyless
Azurite's certificate via NODE_EXTRA_CA_CERTS. tests/producer/node_netguard.cjs refuses any
connection or look-up off loopback inside Node, like emulators/netguard.py does for Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from emulators.aoai import answer_for
from emulators.stack.environment import REPO
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from tests.producer.helpers import blob_names, peek_bodies

pytestmark = pytest.mark.e2e  # Node.js, and a worker host

EXAMPLE = REPO / "examples" / "typescript"
GUARD = Path(__file__).with_name("node_netguard.cjs")


def node(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not on PATH: install Node.js 20+ (the README's prerequisites)")
    if not (EXAMPLE / "node_modules" / "tsx").is_dir():
        pytest.fail(
            "examples/typescript has no node_modules: run `npm ci --prefix examples/typescript "
            "--no-audit --no-fund` (pinned by its package-lock.json)"
        )
    return subprocess.run(
        [binary, "--require", str(GUARD), "--import", "tsx", "send-job.ts", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_node_network_guard_refuses_off_machine_addresses() -> None:
    probe = (
        "fetch('http://169.254.169.254/metadata/identity/oauth2/token')"
        ".then(() => process.exit(0), (e) => { console.error(e.cause?.message); process.exit(7); })"
    )
    done = subprocess.run(
        [shutil.which("node") or "node", "--require", str(GUARD), "-e", probe],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 7 and "network guard: refused connection to 169.254.169.254" in done.stderr


async def test_typescript_producer_end_to_end_keyless(
    keyless_settings: dict[str, str], jobs_for: Any, start_host: Any, aoai: OpenAIEmulator, managed_identity: Any
) -> None:
    settings = keyless_settings
    assert "AzureWebJobsStorage" not in settings and "IDENTITY_ENDPOINT" in settings  # no key anywhere
    jobs = await jobs_for(settings)
    env = {**os.environ, **settings}

    # Sent before the host starts, so every storage token issued meanwhile is Node's.
    storage_tokens = managed_identity.tokens_issued("https://storage.azure.com")
    sent = node(env, "Hello from TypeScript", "--id", "ts-1", "--no-wait")
    assert (sent.returncode, sent.stdout) == (0, "ts-1\n"), sent.stderr
    assert managed_identity.tokens_issued("https://storage.azure.com") > storage_tokens
    host = start_host(settings)
    result = (await jobs.wait_for(1, host=host))["ts-1"]
    assert result["status"] == "succeeded", host.tail()
    assert result["output"] == answer_for([{"role": "user", "content": "Hello from TypeScript"}], DEPLOYMENT)

    # Send and wait for the result; over 48 KiB, so through the same claim check as Python's.
    big = "TypeScript payload " * 4000
    done = node(env, big, "--id", "ts-big", "--timeout", "60")
    assert done.returncode == 0, (done.stderr, host.tail())
    printed = json.loads(done.stdout)
    assert (printed["id"], printed["status"]) == ("ts-big", "succeeded")
    assert printed["output"] == answer_for([{"role": "user", "content": big.strip()}], DEPLOYMENT)
    assert await blob_names(jobs, settings["PAYLOADS_CONTAINER"]) == []
    assert "eyJ" not in done.stdout + done.stderr  # no token printed


def test_typescript_producer_type_checks() -> None:
    tsc = EXAMPLE / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.fail(
            "examples/typescript has no node_modules: run `npm ci --prefix examples/typescript --no-audit --no-fund`"
        )
    done = subprocess.run(
        [str(tsc), "--noEmit", "-p", str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_typescript_producer_copies_the_trace_context_from_the_environment(
    keyless_settings: dict[str, str], jobs_for: Any
) -> None:
    jobs = await jobs_for(keyless_settings)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    env = {**os.environ, **keyless_settings, "TRACEPARENT": traceparent, "TRACESTATE": "congo=t61rcWkgMzE"}
    sent = node(env, "Traced from Node", "--id", "ts-traced", "--no-wait")
    assert sent.returncode == 0, sent.stderr
    env["TRACEPARENT"] = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"  # all-zero trace id: invalid
    untraced = node(env, "Badly traced", "--id", "ts-bad-trace", "--no-wait")
    assert untraced.returncode == 0 and "TRACEPARENT is not a W3C traceparent" in untraced.stderr, untraced.stderr
    bodies = {body["id"]: body for body in await peek_bodies(jobs)}
    assert (bodies["ts-traced"]["traceparent"], bodies["ts-traced"]["tracestate"]) == (traceparent, "congo=t61rcWkgMzE")
    assert "traceparent" not in bodies["ts-bad-trace"] and "tracestate" not in bodies["ts-bad-trace"]
