"""Azure CLI stand-in: answers what azure-identity's AzureCliCredential runs.

``AzureCliCredential`` runs exactly ``az account get-access-token --output json --resource R
[--tenant T] [--subscription S]`` (cwd /bin, stdin closed). Put ``emulators/bin`` first on
``PATH`` and this answers with the real CLI's JSON fields, minting tokens from the same local
issuer as the managed-identity endpoint. State lives in ``$AZURE_CONFIG_DIR`` (default
``$LOCAL_AZURE_DIR/az``), exactly where the real CLI keeps its login, so a test or a
developer flips it with ``az login`` / ``az logout``. Every run is counted in
``invocations.log`` there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from emulators.tokens import DEFAULT_TENANT, Principal, TokenIssuer, state_dir

DEFAULT_USER = Principal(object_id="0d3e0000-0000-4000-8000-00000000d001", name="dev@contoso.example", kind="user")
DEFAULT_SUBSCRIPTION = "0ab50000-0000-4000-8000-000000000001"
LOGGED_OUT = "Please run 'az login' to setup account."


def config_dir() -> Path:
    path = Path(os.environ.get("AZURE_CONFIG_DIR") or state_dir() / "az")
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_state() -> dict[str, Any]:
    path = config_dir() / "standin.json"
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    return {"logged_in": False}


def save_state(state: dict[str, Any]) -> None:
    (config_dir() / "standin.json").write_text(json.dumps(state, indent=2))


def invocations() -> int:
    """How many times ``az`` has run against this config dir."""
    log = config_dir() / "invocations.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def login(
    *, user: Principal = DEFAULT_USER, tenant: str = DEFAULT_TENANT, subscription: str = DEFAULT_SUBSCRIPTION
) -> None:
    save_state(
        {
            "logged_in": True,
            "user": user.name,
            "object_id": user.object_id,
            "tenant": tenant,
            "subscription": subscription,
        }
    )


def logout() -> None:
    save_state({"logged_in": False})


def _get_access_token(args: argparse.Namespace) -> int:
    state = load_state()
    if not state.get("logged_in"):
        print(LOGGED_OUT, file=sys.stderr)
        return 1
    tenant = args.tenant or state["tenant"]
    issuer = TokenIssuer(os.environ.get("LOCAL_AZURE_DIR"), tenant_id=tenant)
    user = Principal(object_id=state["object_id"], name=state["user"], kind="user")
    # The real CLI hands out tokens with about an hour left; azure-identity refreshes at < 5 min.
    token, expires_on = issuer.mint(audience=args.resource or args.scope, principal=user, lifetime=3600)
    local = dt.datetime.fromtimestamp(expires_on).strftime("%Y-%m-%d %H:%M:%S.%f")
    print(
        json.dumps(
            {
                "accessToken": token,
                "expiresOn": local,
                "expires_on": expires_on,
                "subscription": args.subscription or state["subscription"],
                "tenant": tenant,
                "tokenType": "Bearer",
            },
            indent=2,
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with (config_dir() / "invocations.log").open("a") as log:
        log.write(" ".join(argv[:3]) + "\n")
    parser = argparse.ArgumentParser(prog="az", description="Azure CLI stand-in (local emulator, not the real CLI).")
    sub = parser.add_subparsers(dest="group", required=True)
    account = sub.add_parser("account").add_subparsers(dest="command", required=True)
    get = account.add_parser("get-access-token")
    get.add_argument("--output", "-o", default="json")
    get.add_argument("--resource")
    get.add_argument("--scope")
    get.add_argument("--tenant", "-t")
    get.add_argument("--subscription")
    account.add_parser("show")
    sub.add_parser("login").add_argument("--tenant", "-t", default=DEFAULT_TENANT)
    sub.add_parser("logout")
    args = parser.parse_args(argv)
    if args.group == "login":
        login(tenant=args.tenant)
        print(json.dumps([{"user": {"name": DEFAULT_USER.name, "type": "user"}, "tenantId": args.tenant}], indent=2))
        return 0
    if args.group == "logout":
        logout()
        return 0
    if args.command == "show":
        state = load_state()
        if not state.get("logged_in"):
            print(LOGGED_OUT, file=sys.stderr)
            return 1
        print(json.dumps({"id": state["subscription"], "tenantId": state["tenant"], "user": {"name": state["user"]}}))
        return 0
    if not (args.resource or args.scope):
        print("ERROR: one of --resource or --scope is required", file=sys.stderr)
        return 2
    return _get_access_token(args)


if __name__ == "__main__":
    sys.exit(main())
