"""Run the checks in order against the settings the worker would read."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from shared.doctor.credential import check_credential, check_scope
from shared.doctor.environment import check_environment, check_keys, check_settings, settings_file_failed
from shared.doctor.model import (
    CREDENTIAL,
    ENVIRONMENT,
    KEYS,
    OPENAI,
    SCOPE,
    SETTINGS,
    STORAGE,
    STORAGE_ACCESS,
    Check,
    CheckKind,
    Context,
    Options,
)
from shared.doctor.openai_probe import check_openai
from shared.doctor.storage import check_storage, check_storage_access
from shared.errors import ConfigurationError
from shared.settings import environment, overlaid, read_local_settings

CheckFunction = Callable[[Context], Awaitable[Check]]

CHECKS: tuple[tuple[CheckKind, CheckFunction], ...] = (
    (SETTINGS, check_settings),
    (CREDENTIAL, check_credential),
    (SCOPE, check_scope),
    (OPENAI, check_openai),
    (STORAGE, check_storage),
    (STORAGE_ACCESS, check_storage_access),
    (ENVIRONMENT, check_environment),
    (KEYS, check_keys),
)


async def diagnose(ctx: Context) -> list[Check]:
    """Run every check in order; a check that crashes is reported, not raised."""
    results: list[Check] = []
    try:
        for kind, check in CHECKS:
            try:
                results.append(await check(ctx))
            except Exception as exc:  # a doctor that dies mid-way helps no one
                results.append(kind.fail("check_crashed", f"the check itself failed: {exc!r}"))
    finally:
        if ctx.credential is not None:
            await ctx.credential.close()
    return results


def run_doctor(options: Options, stderr: TextIO | None = None) -> list[Check]:
    """Load settings the way the host does, then run every check (synchronously, for the CLI)."""
    path = options.settings_file
    if path is None and Path("local.settings.json").is_file():
        path = Path("local.settings.json")
    values: dict[str, str] = {}
    problem: str | None = None
    if path is not None:
        try:
            values = read_local_settings(path)
        except ConfigurationError as exc:
            problem = str(exc)
    if problem is not None:
        return [settings_file_failed(path, problem)]
    with overlaid(values) as added:
        ctx = Context(
            env=dict(environment()),  # what the checks report on: a snapshot, read here only
            options=dataclasses.replace(options, settings_file=path),
            source=f"{path} + environment" if path is not None else "environment",
            shadowed=[n for n in values if n not in added],
            stderr=stderr or sys.stderr,
        )
        return asyncio.run(diagnose(ctx))
