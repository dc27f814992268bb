"""``python -m shared doctor``: its flags, and the exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shared.constants import COGNITIVE_SERVICES_SCOPE
from shared.doctor.model import Options
from shared.doctor.render import exit_code, render_json, render_table
from shared.doctor.runner import run_doctor

DEFAULT_WAIT_SECONDS = 600.0
MAX_WAIT_SECONDS = 3600.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="Check the keyless setup (identity, scope, Azure OpenAI role, storage, keys) and say the fix.",
        description="Find what is wrong with a keyless setup (identity, token scope, the Azure OpenAI role, "
        "storage, keys) and say the exact fix. Reads the settings the worker reads.",
        epilog="Exit code 1 when any check fails (warnings do not fail). Never prints a token, key or secret.",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        metavar="FILE",
        help="local.settings.json whose Values to use (default: ./local.settings.json if present; "
        "variables already in the environment win)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of {check, status, reason, detail, fix}")
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=DEFAULT_WAIT_SECONDS,
        default=0.0,
        metavar="SECONDS",
        help=f"on PermissionDenied keep retrying until the role applies (default {DEFAULT_WAIT_SECONDS:.0f} s)",
    )
    parser.add_argument(
        "--scope",
        default=None,
        help=f"token scope to test (default: the app's AZURE_OPENAI_TOKEN_SCOPE, {COGNITIVE_SERVICES_SCOPE} "
        "unless set)",
    )
    parser.add_argument(
        "--azure",
        action="store_true",
        help="judge the settings as Azure app settings (dev storage and key connection strings fail)",
    )
    parser.add_argument(
        "--openai-resource-id",
        default=None,
        metavar="ID",
        help="the Azure OpenAI resource id to put in the role-assignment command",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = Options(
        settings_file=args.settings,
        scope=args.scope,
        wait=max(0.0, min(float(args.wait or 0.0), MAX_WAIT_SECONDS)),
        azure=args.azure,
        openai_resource_id=args.openai_resource_id,
    )
    checks = run_doctor(options)
    (render_json if args.json else render_table)(checks, sys.stdout)
    sys.stdout.flush()
    return exit_code(checks)
