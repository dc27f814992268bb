"""`make up` as a user runs it: started in one process, its exports sourced in another shell, a job sent
through the CLI (and the TypeScript producer) and answered, then Ctrl-C, after which nothing it started runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from emulators.aoai import answer_for
from emulators.stack.environment import REPO, child_environment
from emulators.stack.services import DEPLOYMENT
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


@pytest.mark.e2e  # Azurite, the emulators and a worker host, as `make up` starts them
def test_up_serves_the_cli_and_the_typescript_producer_then_stops_leaving_no_process(tmp_path: Path) -> None:
    env = child_environment({"LOCAL_AZURE_DIR": str(tmp_path)})
    env.pop("AZURE_OPENAI_ENDPOINT", None)
    output = tmp_path / "make-up.out"
    with output.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "emulators.up", "--settings", str(tmp_path / "absent.json")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    started: list[psutil.Process] = []
    try:
        env_file = tmp_path / "env.sh"
        wait_for_env_file(up, env_file, output)
        started = psutil.Process(up.pid).children(recursive=True)
        assert {"python", "node"} <= {p.name().split(".")[0] for p in started}, started  # the worker, Azurite
        exported = sourced(env_file)
        assert "AzureWebJobsStorage" not in exported and exported["AzureWebJobsStorage__queueServiceUri"].startswith(
            "https://127.0.0.1:"
        )  # keyless: a URL and an identity, no key
        assert exported["AZURE_TOKEN_CREDENTIALS"] == "ManagedIdentityCredential" and exported["IDENTITY_ENDPOINT"]
        assert f"export JOBS_QUEUE={exported['JOBS_QUEUE']}" in output.read_text()  # printed as well

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
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # Ctrl-C
        up.wait(timeout=120)
    log = output.read_text(errors="replace")
    assert up.returncode == 0, log
    assert log.rstrip().endswith("stopped"), log
    assert started and [p for p in started if p.is_running()] == [], log
    assert not env_file.exists()  # the ports it named are gone
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
