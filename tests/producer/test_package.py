"""The producer package (``make dist``: keyless-openai-jobs) as built: what it holds, what it declares,
and that the code it holds needs nothing else. Offline and quick; tests/producer/test_wheel.py installs
it into a clean venv and sends jobs with it."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import re
import sys
import tarfile

import pytest

import shared.jobs
import shared.producer
from shared import __main__ as cli_main
from shared.producer import _tracing
from tests.producer.package import NOT_SHIPPED_TOP_LEVEL, SHIPPED, WORKER_MODULES, Dist, build

# Where each third-party import the package makes comes from: its declared dependencies.
DISTRIBUTION_OF = {
    "azure.core": "azure-core",
    "azure.identity": "azure-identity",
    "azure.storage.blob": "azure-storage-blob",
    "azure.storage.queue": "azure-storage-queue",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "opentelemetry": "opentelemetry-api",
}
DEPENDENCIES = {"aiohttp", "azure-core", "azure-identity", "azure-storage-blob", "azure-storage-queue", "pydantic"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    return build(tmp_path_factory.mktemp("dist"))


def test_the_wheel_holds_the_producer_and_nothing_of_the_worker(dist: Dist) -> None:
    files = dist.wheel_files()
    assert files == SHIPPED
    for module in WORKER_MODULES:
        assert not any(name.startswith((f"shared/{module}/", f"shared/{module}.py")) for name in files), module
    assert not any(name.split("/")[0].removesuffix(".py") in NOT_SHIPPED_TOP_LEVEL for name in files)
    with tarfile.open(dist.sdist) as sdist:
        shared_files = {name.split("/", 1)[1] for name in sdist.getnames() if "/shared/" in name}
    assert {name for name in shared_files if name.endswith((".py", ".typed"))} == SHIPPED


def test_the_wheel_declares_only_what_the_producer_needs_with_lower_bounds(dist: Dist) -> None:
    metadata = dist.metadata()
    assert re.search(r"^Name: keyless-openai-jobs$", metadata, re.MULTILINE)
    assert re.search(r"^Requires-Python: >=3\.11$", metadata, re.MULTILINE)
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    plain = {re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0]: line for line in requires if ";" not in line}
    assert set(plain) == DEPENDENCIES
    assert all(">=" in line and "==" not in line for line in plain.values()), plain
    # OpenTelemetry's API only, only when asked for: the tracing extra.
    assert [line for line in requires if ";" in line] == ["opentelemetry-api>=1.20; extra == 'tracing'"]
    assert not any(line.startswith(("azure-functions", "openai", "opentelemetry-sdk")) for line in requires)


def test_every_import_in_the_wheel_is_shipped_stdlib_or_declared(dist: Dist) -> None:
    shipped_modules = {name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in SHIPPED}
    for name in sorted(SHIPPED):
        if not name.endswith(".py"):
            continue
        for imported in _imports(dist.wheel_text(name)):
            top = imported.split(".")[0]
            if top == "shared":
                assert imported in shipped_modules or imported.rsplit(".", 1)[0] in shipped_modules, (name, imported)
            elif top not in sys.stdlib_module_names:
                source = _distribution(imported)
                # The one optional import: the tracing extra's API, in the module that does without it.
                optional = name == "shared/producer/_tracing.py" and source == "opentelemetry-api"
                assert source in DEPENDENCIES or optional, (name, imported)


def _distribution(module: str) -> str | None:
    return next((dist for key, dist in DISTRIBUTION_OF.items() if module == key or module.startswith(key + ".")), None)


def _imports(source: str) -> list[str]:
    """Every module ``source`` imports (``from a import b`` gives both ``a`` and ``a.b``: b may be a module)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names if node.module.startswith("shared")]
    return [name for name in found if name != "__future__"]


def test_version_and_schema_version_are_visible_to_a_caller(dist: Dist) -> None:
    assert shared.producer.__version__ == dist.version
    assert shared.producer.SCHEMA_VERSION == shared.jobs.SCHEMA_VERSION
    assert {"__version__", "SCHEMA_VERSION"} <= set(shared.producer.__all__)


def test_without_the_opentelemetry_api_a_job_is_sent_as_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tracing, "TRACING", False)  # what the package has without its tracing extra
    job = {"id": "x", "prompt": "p", "tracestate": "orphan=1"}
    text = '{"id": "x", "prompt": "p", "tracestate": "orphan=1"}'
    with _tracing.send_span("jobs", "https://acct.queue.core.windows.net/jobs", job) as sending:
        assert sending.stamp(job, text) is text
        sending.sent("message-id")


def test_a_command_left_out_of_the_package_says_where_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    present = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "shared.doctor" else present(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli_main.main(["doctor", "--json"]) == 2
    assert "not in the producer package (keyless-openai-jobs)" in err.getvalue()
    assert "checkout of the worker's repo" in err.getvalue()
    # Its help line says so too, and the commands that are in the package are unchanged.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli_main.main(["--help"])
    assert "not in the producer package" in out.getvalue() and "submit" in out.getvalue()


def test_the_app_still_has_its_doctor() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli_main.main(["--help"])
    assert "Check the keyless setup" in out.getvalue() and "not in the producer package" not in out.getvalue()
