"""The producer package as a service installs it: the built wheel in a clean virtual environment (no
system site-packages, nothing of this checkout on its path; tests/producer/package.py says how it is
installed offline), sending jobs to the local stack's keyless Azurite and reading what a worker host made
of them: a plain job, one over the claim-check size and a batch-lane job; the package's CLI too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from emulators.aoai import answer_for
from emulators.stack.services import DEPLOYMENT, OpenAIEmulator
from emulators.stack.workers import Jobs, WorkerHost
from shared.jobs import CLAIM_CHECK_BYTES, SCHEMA_VERSION
from tests.producer.helpers import blob_names, peek_bodies
from tests.producer.package import SHIPPED, CleanVenv, build, install
from tests.worker.test_batch_lane import BatchWorld, _world
from tests.worker.test_batch_lane import answer as batch_answer

pytestmark = pytest.mark.e2e

BIG_PROMPT = "Summarise this. " + "All work and no play makes Jack a dull boy. " * 1200  # ~53 KB

# What the service runs: the blocking client from the worker's settings in its environment.
SUBMIT = """
import json, sys
from shared.producer import JobsClient
with JobsClient.from_settings() as client:
    ids = [
        client.submit({"id": "pkg-plain", "prompt": "Hello from the package", "metadata": {"from": "wheel"}}),
        client.submit({"id": "pkg-big", "prompt": sys.argv[1]}),
        client.submit({"id": "pkg-batch", "prompt": "For the batch lane"}, lane="batch"),
    ]
print(json.dumps(ids))
"""

WAIT = """
import json, sys
from shared.producer import JobsClient
with JobsClient.from_settings() as client:
    results = client.wait(sys.argv[1:], timeout=120)
print(json.dumps({job_id: result.model_dump(mode="json") for job_id, result in results.items()}))
"""

INSPECT = """
import importlib.util, json, pathlib, sys
import shared, shared.producer, shared.producer.aio
root = pathlib.Path(shared.__file__).parent
files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
missing = [name for name in ("openai", "azure.functions", "opentelemetry", "shared.worker", "shared.doctor",
           "shared.connections", "shared.telemetry", "shared.batch", "emulators", "function_app")
           if importlib.util.find_spec(name) is None]
print(json.dumps({
    "shared": str(root),
    "prefix": sys.prefix,
    "files": sorted(str(p.relative_to(root.parent)) for p in files),
    "version": shared.producer.__version__,
    "schema_version": shared.producer.SCHEMA_VERSION,
    "missing": missing,
    "guarded": getattr(sys.modules.get("sitecustomize"), "_guard", None) is not None,
}))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> CleanVenv:
    """Built and installed once for the module (about 20 s)."""
    directory = tmp_path_factory.mktemp("producer-package")
    return install(build(directory / "dist"), directory)


def answer(prompt: str) -> str:
    return answer_for([{"role": "user", "content": prompt}], DEPLOYMENT)


def run_json(venv: CleanVenv, settings: dict[str, str], *args: str) -> Any:
    done = venv.run(*args, settings=settings)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def test_the_installed_package_has_the_producer_alone(venv: CleanVenv) -> None:
    seen = run_json(venv, {}, "-c", INSPECT)
    assert Path(seen["shared"]).is_relative_to(venv.root) and Path(seen["prefix"]) == venv.root
    assert seen["guarded"]  # the network guard runs in the venv's processes (pip's too)
    assert set(seen["files"]) == SHIPPED
    assert (seen["version"], seen["schema_version"]) == ("0.1.0", SCHEMA_VERSION)
    assert set(seen["missing"]) == {
        "openai",
        "azure.functions",
        "opentelemetry",  # the tracing extra was not asked for
        "shared.worker",
        "shared.doctor",
        "shared.connections",
        "shared.telemetry",
        "shared.batch",
        "emulators",
        "function_app",
    }
    listed = {entry["name"].lower() for entry in run_json(venv, {}, "-m", "pip", "list", "--format", "json")}
    assert "keyless-openai-jobs" in listed
    assert not {name for name in listed if name in {"openai", "azure-functions"} or name.startswith("opentelemetry")}

    helped = venv.run("-m", "shared", "--help")
    assert helped.returncode == 0, helped.stderr
    assert all(command in helped.stdout for command in ("submit", "wait", "result", "watch", "status", "replay"))
    doctor = venv.run("-m", "shared", "doctor", "--json")
    assert doctor.returncode == 2 and "Traceback" not in doctor.stderr, doctor.stderr
    assert "not in the producer package (keyless-openai-jobs)" in doctor.stderr


@pytest_asyncio.fixture
async def world(
    keyless_settings: dict[str, str], aoai: OpenAIEmulator, jobs_for: Callable[[dict[str, str]], Awaitable[Jobs]]
) -> AsyncIterator[BatchWorld]:
    """A keyless Function App's settings with the batch lane on and its timers every two seconds."""
    fast = {"BATCH_SUBMIT_SCHEDULE": "*/2 * * * * *", "BATCH_COLLECT_SCHEDULE": "1/2 * * * * *"}
    async for made in _world(keyless_settings, aoai, jobs_for, **fast):
        yield made


async def test_a_service_with_only_the_package_submits_and_waits(
    venv: CleanVenv, world: BatchWorld, start_host: Callable[..., WorkerHost]
) -> None:
    settings, jobs = world.settings, world.jobs
    assert len(BIG_PROMPT.encode()) > CLAIM_CHECK_BYTES

    # Sent before any worker runs, so what went on the queue can be seen as sent.
    ids = run_json(venv, settings, "-c", SUBMIT, BIG_PROMPT)
    assert ids == ["pkg-plain", "pkg-big", "pkg-batch"]
    bodies = {body["id"]: body for body in await peek_bodies(jobs)}
    assert bodies["pkg-plain"] == {"id": "pkg-plain", "prompt": "Hello from the package", "metadata": {"from": "wheel"}}
    assert bodies["pkg-big"] == {"id": "pkg-big", "payload": {"blob": "pkg-big.json"}}  # the claim check
    assert await blob_names(jobs, settings["PAYLOADS_CONTAINER"]) == ["pkg-big.json"]
    assert bodies["pkg-batch"]["lane"] == "batch"

    host = start_host(settings)
    results = run_json(venv, settings, "-c", WAIT, *ids)
    assert {job_id: result["status"] for job_id, result in results.items()} == dict.fromkeys(ids, "succeeded"), (
        results,
        host.tail(),
    )
    assert results["pkg-plain"]["output"] == answer("Hello from the package")
    assert results["pkg-plain"]["metadata"] == {"from": "wheel"}
    assert results["pkg-big"]["output"] == answer(BIG_PROMPT)
    assert await blob_names(jobs, settings["PAYLOADS_CONTAINER"]) == []  # deleted with its result
    batch = results["pkg-batch"]
    assert (batch["lane"], batch["output"]) == ("batch", batch_answer("For the batch lane"))

    # The package's command line, as a script in that service would run it.
    sent = venv.run("-m", "shared", "submit", "Hello from the CLI", "--id", "pkg-cli", "--wait", settings=settings)
    assert (sent.returncode, sent.stdout) == (0, answer("Hello from the CLI") + "\n"), sent.stderr
    shown = venv.run("-m", "shared", "result", "pkg-batch", "--json", settings=settings)
    assert shown.returncode == 0 and json.loads(shown.stdout)["lane"] == "batch", shown.stderr
    status = venv.run("-m", "shared", "status", "--json", settings=settings)
    assert status.returncode == 0, status.stderr
