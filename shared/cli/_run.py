"""How every ``python -m shared`` command of this package runs: its parser, its exit codes, and one
line on stderr for whatever went wrong. Private to ``shared.cli``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from shared.errors import ConfigurationError, InvalidJobError, ProducerError, WaitTimeoutError
from shared.settings import apply_local_settings

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_TIMEOUT = 4
EXIT_ERROR = 5

EXIT_CODES = """exit codes:
  0  done: sent, or every result succeeded
  1  a job's result is 'failed' (its error is printed)
  2  usage error or invalid job; nothing was sent
  3  configuration, sign-in or permission problem (the message names the setting or role)
  4  timed out waiting for results ('result': no result yet)
  5  storage error or other unexpected failure (try again)
"""


class UsageError(Exception):
    """Bad command-line input: ``run`` prints the message and exits 2.

    Control flow of the command line, not part of the ``shared.errors`` tree: it never leaves
    ``python -m shared``, whose callers see the exit code.
    """


Command = Callable[[argparse.Namespace, Any], Awaitable[int]]  # given the client its ``connect`` opened
Connect = Callable[[], AbstractAsyncContextManager[Any]]
Check = Callable[[argparse.Namespace], None]


class Add(Protocol):
    """Adds one subcommand: ``command`` runs with what ``connect`` opened, after ``check`` passed."""

    def __call__(
        self, name: str, help_text: str, command: Command, check: Check | None = None
    ) -> argparse.ArgumentParser: ...


def adder(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], connect: Connect) -> Add:
    """What adds a subcommand with the common ``--settings`` option and the exit codes as its epilog."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help="local.settings.json whose Values to use (environment variables win); default: environment only",
    )

    def add(name: str, help_text: str, command: Command, check: Check | None = None) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(func=lambda args: run(args, command, check, connect))
        return parser

    return add


def run(args: argparse.Namespace, command: Command, check: Check | None, connect: Connect) -> int:
    """Load ``--settings``, check the input, open the client and run ``command``; return the exit code."""
    try:
        if args.settings is not None:
            apply_local_settings(args.settings)
        if check is not None:
            check(args)  # input errors first: exit 2 whatever the settings, and before connecting

        async def main() -> int:
            async with connect() as client:
                return await command(args, client)

        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code, message = describe(exc)
        print(f"error: {message}", file=sys.stderr)
        return code


def describe(exc: Exception) -> tuple[int, str]:
    """Exit code and one line for an error. Never includes a token: only our messages and service codes."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    def first_line(text: str) -> str:
        return (text.strip().splitlines() or [""])[0]

    if isinstance(exc, UsageError | InvalidJobError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, WaitTimeoutError):
        return EXIT_TIMEOUT, str(exc)
    if isinstance(exc, ConfigurationError | ProducerError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, ClientAuthenticationError):
        return EXIT_CONFIG, (
            f"could not authenticate to storage ({first_line(exc.message or str(exc))}): sign in with `az login`, "
            "or run where a managed identity is available (AZURE_CLIENT_ID selects a user-assigned one)"
        )
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or exc.status_code
        return EXIT_ERROR, f"storage answered {exc.status_code} {code}: {first_line(exc.message or '')}; try again"
    if isinstance(exc, OSError):
        return EXIT_ERROR, f"{type(exc).__name__}: {first_line(str(exc))}"
    return EXIT_ERROR, f"unexpected {type(exc).__name__}: {first_line(str(exc))}"
