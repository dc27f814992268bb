"""Each stand-in runs on its own: `--help` works and documents `--port`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("module", ["emulators.aoai", "emulators.managed_identity", "emulators.azurite"])
def test_help_names_the_port_option(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert "--port" in done.stdout


def test_az_standin_help() -> None:
    done = subprocess.run(
        [str(REPO / "emulators" / "bin" / "az"), "--help"], capture_output=True, text=True, check=True, timeout=60
    )
    assert "get-access-token" in done.stdout or "account" in done.stdout


def test_functions_host_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emulators.functions_host", "--help"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "--app-dir" in done.stdout
