"""The Function App checks of the preflight: its Python version on Flex Consumption in its region.

A module of the azd preprovision hook (preflight.py); the region's listing comes from
`az functionapp list-flexconsumption-runtimes` (preflight_az.py runs it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from preflight_az import entries, parse_date
from preflight_env import PARAMETERS, Refusal, env_values, region_name

# `az functionapp list-flexconsumption-runtimes --location L --runtime python` prints one object per
# version the region offers Flex Consumption apps (the Function App Stacks API, stack=python, sku=FC1,
# without hidden or deprecated stacks): azure-cli's _FlexFunctionAppStackRuntimeHelper.Runtime
# (src/azure-cli/azure/cli/command_modules/appservice/custom.py), its attributes camel-cased as the CLI
# prints objects: {name, version, appInsights, default, endOfLifeDate, githubActionsProperties, sku{skuCode,
# instanceMemoryMB[], maximumInstanceCount, functionAppConfigProperties{runtime{name, version}}}}.
# sku.functionAppConfigProperties.runtime.version is the value functionAppConfig.runtime.version takes;
# `version` is the same text with anything but digits and dots removed. Read from the CLI's source, not
# captured from a live run: a field missing here is taken from the other, a missing date means none.

# main.bicep's @allowed list for pythonVersion, and the versions this project's CI runs the tests on
# (pyproject.toml's classifiers; tests/infra checks both): a version outside the second passes with a note.
ALLOWED_PYTHON = ("3.11", "3.12", "3.13", "3.14")
TESTED_PYTHON = ("3.11", "3.12", "3.13")


@dataclass(frozen=True)
class Runtime:
    """The Function App's Python version, asked for in the Function App's region."""

    location: str
    version: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Runtime:
        version = env_values(env)["AZURE_PYTHON_VERSION"]
        if version not in ALLOWED_PYTHON:
            default = PARAMETERS["AZURE_PYTHON_VERSION"][1]
            raise Refusal(
                f"AZURE_PYTHON_VERSION={version} is not a Python version main.bicep deploys "
                f"({', '.join(ALLOWED_PYTHON)}). Fix: azd env set AZURE_PYTHON_VERSION {default}"
            )
        location = (env.get("AZURE_LOCATION") or "").strip()
        if not location:
            raise Refusal("no region: AZURE_LOCATION is not set. Fix: azd env set AZURE_LOCATION <region>")
        return cls(location=region_name(location), version=version)


def flex_python(listing: Any) -> dict[str, dt.date | None]:
    """Python version -> end-of-life date (None: none published), as the CLI lists them."""
    offered: dict[str, dt.date | None] = {}
    for entry in entries(listing):
        if str(entry.get("name") or "python").lower() != "python":
            continue
        runtime = ((entry.get("sku") or {}).get("functionAppConfigProperties") or {}).get("runtime") or {}
        version = str(runtime.get("version") or entry.get("version") or "")
        if version:
            offered[version] = parse_date(entry.get("endOfLifeDate")) if entry.get("endOfLifeDate") else None
    return offered


def _newest_first(versions: Sequence[str]) -> list[str]:
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))

    return sorted(versions, key=key, reverse=True)


def check_runtime(offered: Mapping[str, dt.date | None], runtime: Runtime, today: dt.date) -> str:
    """The pass line's part for the Function App; raises Refusal when the region does not offer the version."""
    where = f"Flex Consumption in {runtime.location}"
    if not offered:
        raise Refusal(
            f"{where} offers no Python version (not a Flex Consumption region: az functionapp "
            "list-flexconsumption-locations). Fix: azd env set AZURE_LOCATION <region>"
        )
    open_here = [v for v in _newest_first(list(offered)) if v in ALLOWED_PYTHON and not _ended(offered[v], today)]
    ended = offered.get(runtime.version)
    if runtime.version not in offered or _ended(ended, today):
        state = "is not offered" if runtime.version not in offered else f"reached end of life on {ended}"
        if not open_here:
            allowed = ", ".join(ALLOWED_PYTHON)
            fix = f"another region (azd env set AZURE_LOCATION <region>): none of {allowed} is offered here"
        else:
            best = next((v for v in open_here if v in TESTED_PYTHON), open_here[0])
            fix = f"azd env set AZURE_PYTHON_VERSION {best} (offered here: {', '.join(open_here)}), or another region"
        raise Refusal(f"Python {runtime.version} {state} on {where}. Fix: {fix}")
    notes = [f"end of life {ended.isoformat()}" if ended else "no end of life published"]
    if runtime.version not in TESTED_PYTHON:
        notes.append(f"this project's CI does not test {runtime.version} (README: Runtime)")
    return f"ok: Python {runtime.version} on {where} ({'; '.join(notes)})"


def _ended(day: dt.date | None, today: dt.date) -> bool:
    return day is not None and day <= today
