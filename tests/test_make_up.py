"""`make up` as a user runs it: started in one process, its exports sourced in another shell, a job sent
through the CLI (and the TypeScript producer) and answered, then Ctrl-C, after which nothing it started runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from emulators.aoai import answer_for
from emulators.stack.environment import REPO, child_environment
from emulators.stack.services import DEPLOYMENT, AzureCli
from emulators.up import exports, render
from tests.producer.test_typescript import node

START_TIMEOUT = 180.0  # a bound on waiting for the stack on a busy machine, not a claim about its speed
SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_", "PATH"}


def wait_for_env_file(up: subprocess.Popen[bytes], path: Path, output: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not path.exists():
        if up.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"make up wrote no {path.name} (exit {up.poll()}):\n{output.read_text(errors='replace')}")
        time.sleep(0.3)


def sourced(path: Path) -> dict[str, str]:
    """What ``source path`` leaves in a shell that had nothing else (the shell's own variables aside)."""
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", 'source "$1" && env -0', "bash", str(path)],
        env={"PATH": os.environ["PATH"]}, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    pairs = (item.partition("=") for item in done.stdout.decode().split("\0") if item)
    return {name: value for name, _, value in pairs if name not in SHELL_OWN}


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip


def test_the_exports_source_back_as_written(tmp_path: Path) -> None:
    # A real endpoint, as `make up` exports it: the developer's az login signs in, no identity endpoint.
    worker_env = {
        "AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:10001/devstoreaccount1",
        "AzureWebJobsStorage__blobServiceUri": "https://127.0.0.1:10000/devstoreaccount1",
        "SSL_CERT_FILE": str(tmp_path / "a dir with spaces" / "ca-bundle.pem"),
        "AZURE_TOKEN_CREDENTIALS": "dev",
        "AZURE_OPENAI_ENDPOINT": "https://res.services.ai.azure.com/api/projects/it's-mine",
        "AZURE_OPENAI_TOKEN_SCOPE": "https://ai.azure.com/.default",
        "REPLY_QUEUES_ALLOWED": "job-replies,other-replies",
        "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": "a,b",  # the worker's business, not a producer's
        "PYTHONPATH": "/somewhere",
    }
    exported = exports(worker_env)
    assert "IDENTITY_ENDPOINT" not in exported and "AZURE_OPENAI_ALLOWED_DEPLOYMENTS" not in exported
    assert "PYTHONPATH" not in exported
    assert (exported["JOBS_QUEUE"], exported["RESULTS_CONTAINER"], exported["PAYLOADS_CONTAINER"]) == (
        "jobs",
        "results",
        "job-payloads",
    )  # the defaults, spelled out for the shell
    path = tmp_path / "env.sh"
    path.write_text(render(exported))
    assert sourced(path) == exported


@dataclass
class Up:
    """A running `make up`: its process, what it exported (as a shell that sourced the file sees it), the
    processes it had started, and where its output goes."""

    process: subprocess.Popen[bytes]
    exported: dict[str, str]
    started: list[psutil.Process]
    started_names: set[str]  # read while they ran (a process that is gone has no name to read)
    output: Path


@contextlib.contextmanager
def make_up(tmp_path: Path, settings: dict[str, str]) -> Iterator[Up]:
    """`make up` in its own process (behind the network guard) until its env file is written; Ctrl-C after."""
    env = child_environment({"LOCAL_AZURE_DIR": str(tmp_path), **settings})
    if "AZURE_OPENAI_ENDPOINT" not in settings:
        env.pop("AZURE_OPENAI_ENDPOINT", None)
    output = tmp_path / "make-up.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "emulators.up", "--settings", str(tmp_path / "absent.json")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_env_file(process, tmp_path / "env.sh", output)
        started = psutil.Process(process.pid).children(recursive=True)
        names: set[str] = set()
        for child in started:
            with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived one (an `az` run) may be gone already
                names.add(child.name().split(".")[0])
        yield Up(process, sourced(tmp_path / "env.sh"), started, names, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(timeout=120)


def assert_stopped_cleanly(up: Up, tmp_path: Path) -> None:
    log = up.output.read_text(errors="replace")
    assert up.process.returncode == 0, log
    assert log.rstrip().endswith("stopped"), log
    assert {"python", "node"} <= up.started_names, up.started  # the worker, Azurite
    assert [p for p in up.started if p.is_running()] == [], log
    assert not (tmp_path / "env.sh").exists()  # the ports it named are gone
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


@pytest.mark.e2e  # Azurite, the emulators and a worker host, as `make up` starts them
def test_up_serves_the_cli_and_the_typescript_producer_then_stops_leaving_no_process(tmp_path: Path) -> None:
    with make_up(tmp_path, {}) as up:
        exported = up.exported
        assert "AzureWebJobsStorage" not in exported and exported["AzureWebJobsStorage__queueServiceUri"].startswith(
            "https://127.0.0.1:"
        )  # keyless: a URL and an identity, no key
        assert exported["AZURE_TOKEN_CREDENTIALS"] == "ManagedIdentityCredential" and exported["IDENTITY_ENDPOINT"]
        assert f"export JOBS_QUEUE={exported['JOBS_QUEUE']}" in up.output.read_text()  # printed as well

        # A shell that sourced the file: nothing of this test's own environment but the network guard.
        shell = child_environment(exported)
        sent = cli(shell, tmp_path, "submit", "Hello from make up", "--id", "up-1")
        assert (sent.returncode, sent.stdout) == (0, "up-1\n"), sent.stderr
        waited = cli(shell, tmp_path, "wait", "up-1", "--json", "--timeout", "120")
        assert waited.returncode == 0, waited.stderr
        result = json.loads(waited.stdout)
        assert result["status"] == "succeeded"
        assert result["output"] == answer_for([{"role": "user", "content": "Hello from make up"}], DEPLOYMENT)

        typescript = node({**os.environ, **exported}, "Hello from Node", "--id", "up-ts", "--timeout", "120")
        assert typescript.returncode == 0, typescript.stderr
        assert json.loads(typescript.stdout)["status"] == "succeeded"
        status = cli(shell, tmp_path, "status", "--json")
        assert status.returncode == 0, status.stderr
    assert_stopped_cleanly(up, tmp_path)


@pytest.mark.e2e
def test_up_with_a_real_endpoint_signs_in_with_az_login_as_make_run_does(tmp_path: Path) -> None:
    # The az stand-in is the developer's login; the endpoint is never called (no job is sent): the worker and
    # the exports use it, and storage takes tokens from that login.
    login = AzureCli.sign_in(tmp_path / "az")
    endpoint = "https://res.openai.azure.com"
    with make_up(tmp_path, {**login.env, "AZURE_OPENAI_ENDPOINT": endpoint}) as up:
        exported = up.exported
        assert (exported["AZURE_OPENAI_ENDPOINT"], exported["AZURE_TOKEN_CREDENTIALS"]) == (endpoint, "dev")
        assert "IDENTITY_ENDPOINT" not in exported  # no managed-identity endpoint, no emulator
        assert f"Azure OpenAI: {endpoint} (your az login)" in up.output.read_text()
        status = cli(child_environment({**login.env, **exported}), tmp_path, "status", "--json")
        assert status.returncode == 0, status.stderr  # the queues up made with the same login
    assert login.invocations() >= 2  # up's own provisioning, then the CLI
    assert_stopped_cleanly(up, tmp_path)
