"""The producer package as a service gets it: built from this repo (``make dist``'s command) and, for the
end-to-end test, installed into a clean virtual environment from the wheelhouse ``make setup`` fills.

Why a wheelhouse: the tests may dial loopback only (pytest-socket, and ``emulators/netguard.py`` in every
child process), so a test cannot ``pip install`` from a package index. ``make setup`` (which may reach
the index) downloads the package's dependency wheels at the app's pins into ``.wheelhouse/``; the test
installs the built wheel with ``--no-index --find-links .wheelhouse``, so pip resolves the package's
own declared dependencies, and only those, exactly as it would from the index. A venv with
``--system-site-packages`` or the shared venv's site-packages would hide a missing dependency and bring
openai and azure-functions along.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from emulators.stack.environment import REPO, SCRUBBED

DISTRIBUTION = "keyless-openai-jobs"
WHEELHOUSE = REPO / ".wheelhouse"

# Every file the wheel holds besides its .dist-info: the contract, the settings it validates with, the
# storage clients, the producer and the command line over them; nothing of the worker.
SHIPPED = {
    "shared/__init__.py",
    "shared/__main__.py",
    "shared/py.typed",
    "shared/catalogue.py",
    "shared/constants.py",
    "shared/errors.py",
    "shared/jobs.py",
    "shared/messages.py",
    "shared/settings/__init__.py",
    "shared/settings/_read.py",
    "shared/settings/app.py",
    "shared/settings/local_file.py",
    "shared/settings/pool.py",
    "shared/settings/runtime.py",
    "shared/storage_clients.py",
    "shared/operations/__init__.py",
    "shared/operations/client.py",
    "shared/operations/reports.py",
    "shared/cli/__init__.py",
    "shared/cli/_run.py",
    "shared/cli/jobs.py",
    "shared/cli/operate.py",
    "shared/producer/__init__.py",
    "shared/producer/_helpers.py",
    "shared/producer/_jobs.py",
    "shared/producer/_tracing.py",
    "shared/producer/aio.py",
}
# What must never be in it (modules of shared/, then the repo's other top-level code).
WORKER_MODULES = (
    "worker",
    "delivery",
    "policy",
    "store",
    "connections",
    "routing",
    "pacing",
    "logs",
    "batch",
    "doctor",
    "telemetry",
)
NOT_SHIPPED_TOP_LEVEL = ("function_app", "emulators", "tests", "bench", "infra", "samples", "examples")


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path

    def wheel_files(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return {name for name in archive.namelist() if ".dist-info/" not in name}

    def wheel_text(self, name: str) -> str:
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.read(name).decode()

    def metadata(self) -> str:
        return self.wheel_text(f"{self.wheel.name.split('-')[0]}-{self.version}.dist-info/METADATA")

    @property
    def version(self) -> str:
        return self.wheel.name.split("-")[1]


def build(outdir: Path) -> Dist:
    """``python -m build --no-isolation`` of the repo into ``outdir`` (the pinned hatchling, offline)."""
    outdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(REPO)],
        cwd=outdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = outdir.glob("*.whl")
    [sdist] = outdir.glob("*.tar.gz")
    return Dist(wheel, sdist)


def guard_dir(directory: Path) -> Path:
    """A ``sitecustomize`` that installs the network guard from ``emulators/netguard.py`` (stdlib only)
    without putting the repo on the path, as ``emulators/guarded`` does: the clean venv must import
    ``shared`` from the installed package, never from this checkout."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('_netguard', {str(REPO / 'emulators' / 'netguard.py')!r})\n"
        "_guard = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_guard)\n"
        "_guard.install()\n"
    )
    return directory


def clean_environment(guard: Path, settings: dict[str, str] | None = None) -> dict[str, str]:
    """A child of the clean venv: this environment without credentials or pip's own configuration
    (no index, no find-links from this machine), the guard loaded at start, nothing of the repo."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in SCRUBBED and not name.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(settings or {})
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONPATH"] = str(guard)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass(frozen=True)
class CleanVenv:
    root: Path
    guard: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def run(
        self, *args: str, settings: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """``python *args`` in the clean venv, from a directory outside the repo, behind the guard."""
        return subprocess.run(
            [str(self.python), *args],
            env=clean_environment(self.guard, settings),
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def install(dist: Dist, directory: Path) -> CleanVenv:
    """A new venv (no system site-packages) with the wheel and the dependencies it declares, no extra."""
    assert (WHEELHOUSE / ".downloaded").exists(), "no .wheelhouse/: run `make setup` (it downloads the wheels)"
    root = directory / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(root)], capture_output=True, text=True, timeout=300, check=False
    )
    assert made.returncode == 0, made.stderr
    venv = CleanVenv(root, guard_dir(directory / "guard"))
    pip = venv.run("-m", "pip", "install", "--no-index", "--find-links", str(WHEELHOUSE), str(dist.wheel), timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv
