"""The Azure CLI as the preflight runs it (`az ... --output json`), and the helpers that read what it prints.

A module of the azd preprovision hook (preflight.py). A listing is the `value` array of a REST call, printed
as a JSON array (or, from a raw REST body, {"value": [...]}); dates are ISO 8601, any field may be missing.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from preflight_env import SKIP, Refusal
from preflight_request import Request

AZ_TIMEOUT_SECONDS = 120


def parse_date(value: Any) -> dt.date | None:
    """The day an ISO 8601 date or timestamp names; None when it names none."""
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def entries(value: Any) -> list[Mapping[str, Any]]:
    """The objects of a listing (a JSON array, or a REST body's `value`); anything else is left out."""
    if isinstance(value, dict):  # a raw REST body, {"value": [...]}
        value = value.get("value")
    return [item for item in value or [] if isinstance(item, dict)]


class AzError(Exception):
    pass


@dataclass(frozen=True)
class Az:
    executable: str
    subscription: str

    @classmethod
    def find(cls, subscription: str) -> Az:
        executable = shutil.which("az")
        if executable is None:
            raise Refusal(
                "the Azure CLI (az) is not on PATH, and this check asks it what the region offers. Fix: install it "
                f"(https://aka.ms/azcli) and az login, or skip the check: azd env set {SKIP} 1"
            )
        return cls(executable, subscription)

    def json(self, *args: str) -> Any:
        command = [self.executable, *args, "--output", "json", "--only-show-errors"]
        if self.subscription:
            command += ["--subscription", self.subscription]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=AZ_TIMEOUT_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AzError(f"`az {' '.join(args[:3])}` did not run: {exc}") from exc
        if done.returncode != 0:
            raise AzError(_first_line(done.stderr) or f"`az {' '.join(args[:3])}` exited {done.returncode}")
        try:
            return json.loads(done.stdout or "null")
        except ValueError as exc:
            raise AzError(f"`az {' '.join(args[:3])}` printed no JSON: {exc}") from exc

    def listing(self, what: str, location: str) -> Any:
        try:
            return self.json("cognitiveservices", what, "list", "--location", location)
        except AzError as exc:
            raise Refusal(_cli_failure(f"az cognitiveservices {what} list", str(exc))) from exc

    def flex_runtimes(self, location: str) -> Any:
        try:
            return self.json(
                "functionapp", "list-flexconsumption-runtimes", "--location", location, "--runtime", "python"
            )
        except AzError as exc:
            raise Refusal(_cli_failure("az functionapp list-flexconsumption-runtimes", str(exc))) from exc

    def held(self, env: Mapping[str, str], request: Request) -> Mapping[str, Any] | None:
        """The deployment this environment provisioned before (azd keeps the outputs), if it exists."""
        account = (urlparse(env.get(request.names.endpoint) or "").hostname or "").split(".")[0]
        group = (env.get("AZURE_RESOURCE_GROUP") or "").strip()
        if not (account and group):
            return None
        try:
            found = self.json(
                "cognitiveservices", "account", "deployment", "show",
                "--name", account, "--resource-group", group, "--deployment-name", request.deployment,
            )  # fmt: skip
        except AzError:
            return None  # not there (yet), or not readable: nothing held
        return found if isinstance(found, dict) else None


def _first_line(text: str) -> str:
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return line.removeprefix("ERROR:").strip()


def _cli_failure(command: str, error: str) -> str:
    if "az login" in error or "AADSTS" in error or "expired" in error.lower():
        return (
            f"the Azure CLI is not logged in ({command}: {error}). The check uses az, not azd's own login. "
            f"Fix: az login (az account set -s <subscription>), or skip the check: azd env set {SKIP} 1"
        )
    return f"{command} failed: {error}. Fix the az error, or skip the check: azd env set {SKIP} 1"
