"""The project's command line: ``python -m shared <command>``.

Subcommands live beside the code they drive; each module exposes ``register(subparsers)``
and sets ``func`` (returning an exit code) on its parsers.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("shared.cli", "shared.doctor")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
