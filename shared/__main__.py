"""The project's command line: ``python -m shared <command>``.

Subcommands live beside the code they drive; each module exposes ``register(subparsers)``
and sets ``func`` (returning an exit code) on its parsers.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMAND_MODULES = ("shared.cli", "shared.doctor")

# Commands the producer package (keyless-openai-jobs, ``make dist``) leaves out with the worker, by
# module: there they exit 2 with a line saying where they run, instead of an ImportError.
APP_ONLY = {"shared.doctor": ("doctor", "needs the worker app and its dependencies (openai)")}
EXIT_APP_ONLY = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        if name in APP_ONLY and importlib.util.find_spec(name) is None:
            _register_app_only(subparsers, *APP_ONLY[name])
        else:
            importlib.import_module(name).register(subparsers)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def _register_app_only(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: str, why: str) -> None:
    """``command`` as a stub that says it is not in this installation (any arguments accepted)."""
    help_text = f"not in the producer package: {why}; run it from a checkout of the worker's repo"
    # No option prefix: whatever follows (--json, --help) is taken as it comes, and refused below.
    stub = subparsers.add_parser(command, help=help_text, description=help_text, add_help=False, prefix_chars="\0")
    stub.add_argument("args", nargs="*")

    def refuse(_: argparse.Namespace) -> int:
        print(
            f"error: 'python -m shared {command}' is not in the producer package (keyless-openai-jobs): it {why}. "
            f"Run it from a checkout of the worker's repo (make setup, then .venv/bin/python -m shared {command}).",
            file=sys.stderr,
        )
        return EXIT_APP_ONLY

    stub.set_defaults(func=refuse)


if __name__ == "__main__":
    sys.exit(main())
