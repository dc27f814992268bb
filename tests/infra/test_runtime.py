"""The Python versions agree everywhere they are named: main.bicep's pythonVersion (allowed list and
default), the preflight, requirements.txt's markers, pyproject.toml, the Makefile, .ci/run and the
README's "Runtime" passage; and the interpreter running these tests got the pins meant for it."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.infra import infra_checks as checks
from tests.infra.test_preflight import preflight_runtime

REPO = Path(__file__).resolve().parents[2]
INFRA = checks.Infra.load(REPO / "infra")
ALLOWED, DEFAULT = checks.python_versions(INFRA)
# What CI runs the tests on: pyproject.toml's classifiers.
TESTED = [
    c.rsplit(" :: ", 1)[1]
    for c in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["classifiers"]
    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
]


def human(versions: list[str]) -> str:
    return ", ".join(versions[:-1]) + f" and {versions[-1]}"


def pins() -> list[Requirement]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def pinned_for(version: str) -> dict[str, str]:
    """Package -> pinned version, for the lines whose marker holds on Python `version`."""
    environment = {"python_version": version, "python_full_version": f"{version}.0"}
    found: dict[str, str] = {}
    for requirement in pins():
        if requirement.marker is None or requirement.marker.evaluate(environment):
            assert requirement.name not in found, f"{requirement.name} is pinned twice for Python {version}"
            found[requirement.name] = str(requirement.specifier).removeprefix("==")
    return found


def test_every_requirement_is_pinned_to_one_version() -> None:
    for requirement in pins():
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", requirement


@pytest.mark.parametrize("version", ALLOWED)
def test_requirements_take_the_functions_line_each_python_needs(version: str) -> None:
    found = pinned_for(version)
    if tuple(map(int, version.split("."))) >= (3, 13):
        # The 2.x line (1.x requires < 3.13) and the worker's runtime package, pinned: runtime version control.
        assert found["azure-functions"].startswith("2.")
        assert "azure-functions-runtime" in found
    else:
        assert found["azure-functions"].startswith("1.")
        assert "azure-functions-runtime" not in found
    # Nothing else differs between versions.
    differs = {"azure-functions", "azure-functions-runtime", "azurefunctions-extensions-base"}
    assert {k: v for k, v in found.items() if k not in differs} == {
        k: v for k, v in pinned_for(DEFAULT).items() if k not in differs
    }


def test_this_interpreter_got_the_pins_meant_for_it() -> None:
    found = pinned_for(f"{sys.version_info.major}.{sys.version_info.minor}")
    for package in ("azure-functions", "azure-functions-runtime"):
        if package in found:
            assert metadata.version(package) == found[package], package
        else:
            with pytest.raises(metadata.PackageNotFoundError):
                metadata.version(package)


def test_infra_allows_the_tested_versions_and_defaults_to_the_newest_of_them() -> None:
    assert TESTED and set(TESTED) <= set(ALLOWED)
    assert max(TESTED, key=lambda v: tuple(map(int, v.split(".")))) == DEFAULT
    assert tuple(ALLOWED) == preflight_runtime.ALLOWED_PYTHON and tuple(TESTED) == preflight_runtime.TESTED_PYTHON
    function = (REPO / "infra" / "app" / "function.bicep").read_text()
    allowed_there = re.search(r"@allowed\(\[\n((?:\s+'[\d.]+'\n)+)\]\)\nparam pythonVersion string\n", function)
    assert allowed_there is not None
    assert re.findall(r"'([\d.]+)'", allowed_there.group(1)) == ALLOWED


def test_pyproject_requires_the_oldest_supported_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == f">={min(TESTED)}"
    assert project["tool"]["ruff"]["target-version"] == f"py{min(TESTED).replace('.', '')}"
    assert project["tool"]["mypy"]["python_version"] == min(TESTED)


def test_make_and_ci_cover_every_tested_version_and_run_everything_on_the_default() -> None:
    makefile = (REPO / "Makefile").read_text()
    default = re.search(r"^PYTHON \?= python(3\.\d+)$", makefile, re.M)
    others = re.search(r"^OTHER_PYVERS := (.+)$", makefile, re.M)
    assert default and others
    assert sorted([default.group(1), *others.group(1).split()]) == sorted(TESTED)
    ci = (REPO / ".ci" / "run").read_text()
    assert f"make test PYVER={DEFAULT}" in ci
    for version in set(TESTED) - {DEFAULT}:
        assert (f"make test-fast PYVER={version}" in ci) or (version == default.group(1) and "make test-fast\n" in ci)


def test_the_readme_runtime_passage_matches_infra() -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n### Runtime\n")
    passage = readme[start : readme.index("\n## ", start)]
    assert f"The app runs on Python {human(TESTED)}" in passage
    assert f"`infra/` deploys Python **{DEFAULT}** by default" in passage
    assert f"`infra/` allows {human(ALLOWED)}" in passage
    assert "AZURE_PYTHON_VERSION" in passage and "list-flexconsumption-runtimes" in passage
    assert "(docs/deploy.md#python-version)" in passage
    assert "\n## Python version\n" in (REPO / "docs" / "deploy.md").read_text()
