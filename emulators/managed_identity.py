"""Managed-identity endpoint: the App Service / Functions protocol azure-identity speaks.

azure-identity uses it when ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set:
``GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=R[&client_id=C]`` with header
``X-IDENTITY-HEADER``. Pointing those two variables here is also what keeps
``DefaultAzureCredential`` from probing IMDS at 169.254.169.254.

Run standalone: ``python -m emulators.managed_identity --port 0`` prints the environment to export.
"""

from __future__ import annotations

import argparse
import secrets
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from emulators._server import Running, loopback_args, run_forever, serve
from emulators.tokens import Principal, TokenIssuer, resource_from_scope

TOKEN_PATH = "/msi/token"
SYSTEM_ASSIGNED = Principal(object_id="5a1e0000-0000-4000-8000-00000000f001", name="func-app (system-assigned)")


@dataclass
class IdentityState:
    issuer: TokenIssuer
    header: str
    system: Principal | None = SYSTEM_ASSIGNED
    user_assigned: dict[str, Principal] = field(default_factory=dict)  # client id -> principal
    lifetime: int = 24 * 3600  # App Service tokens live ~24 h; MSAL refreshes at < 5 min.
    issued: Counter[str] = field(default_factory=Counter)  # resource -> tokens issued
    rejected: int = 0

    def add_user_assigned(self, client_id: str, object_id: str | None = None, name: str | None = None) -> Principal:
        principal = Principal(
            object_id=object_id or str(uuid.uuid4()), name=name or f"uami-{client_id[:8]}", app_id=client_id
        )
        self.user_assigned[client_id] = principal
        return principal

    def stats(self) -> dict[str, object]:
        return {
            "tokens_issued": dict(self.issued),
            "total_issued": sum(self.issued.values()),
            "rejected": self.rejected,
        }


STATE = web.AppKey("state", IdentityState)


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.headers.get("X-IDENTITY-HEADER") != state.header:
        state.rejected += 1
        # The real endpoint answers 401 to a missing/wrong secret; azure-identity surfaces the body.
        return web.json_response(
            {"statusCode": 401, "message": "Unauthorized: X-IDENTITY-HEADER is missing or does not match."},
            status=401,
        )
    query = request.query
    if query.get("api-version") != "2019-08-01":
        return _error(400, "invalid_request", "api-version must be 2019-08-01")
    resource = query.get("resource", "")
    if not resource:
        return _error(400, "invalid_request", "resource is required")
    principal = _select(state, query)
    if principal is None:
        state.rejected += 1
        return _error(400, "invalid_request", "No managed identity matches the requested client_id/object_id.")
    audience = resource_from_scope(resource)
    access_token, expires_on = state.issuer.mint(audience=audience, principal=principal, lifetime=state.lifetime)
    state.issued[audience] += 1
    return web.json_response(
        {
            "access_token": access_token,
            "expires_on": str(expires_on),  # App Service sends epoch seconds as a string
            "resource": audience,
            "token_type": "Bearer",
            "client_id": principal.app_id,
        }
    )


def _select(state: IdentityState, query: Mapping[str, str]) -> Principal | None:
    if client_id := query.get("client_id"):
        return state.user_assigned.get(client_id)
    if object_id := query.get("object_id") or query.get("principal_id"):
        return next((p for p in state.user_assigned.values() if p.object_id == object_id), None)
    if res_id := query.get("mi_res_id"):
        return next((p for p in state.user_assigned.values() if res_id.endswith("/" + p.name)), None)
    return state.system


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def reset_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.issued.clear()
    state.rejected = 0
    return web.json_response(state.stats())


async def add_identity(request: web.Request) -> web.Response:
    body = await request.json()
    principal = request.app[STATE].add_user_assigned(body["client_id"], body.get("object_id"), body.get("name"))
    return web.json_response({"client_id": principal.app_id, "object_id": principal.object_id}, status=201)


def create_app(state: IdentityState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_get(TOKEN_PATH, token)
    app.router.add_get("/_emulator/stats", get_stats)
    app.router.add_post("/_emulator/stats/reset", reset_stats)
    app.router.add_post("/_emulator/identities", add_identity)
    return app


async def start(state: IdentityState, *, host: str = "127.0.0.1", port: int = 0) -> Running:
    return await serve(create_app(state), host=host, port=port)


def environment(running: Running) -> dict[str, str]:
    """What a process needs so azure-identity's ManagedIdentityCredential uses this endpoint."""
    return {"IDENTITY_ENDPOINT": running.url + TOKEN_PATH, "IDENTITY_HEADER": running.app[STATE].header}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.managed_identity", description=__doc__.split("\n\n")[0])
    loopback_args(parser, default_port=0)
    parser.add_argument("--state-dir", help="shared signing-key directory (default $LOCAL_AZURE_DIR or .local-azure)")
    parser.add_argument("--header", default=None, help="IDENTITY_HEADER secret to require (default: random)")
    parser.add_argument(
        "--user-assigned",
        action="append",
        default=[],
        metavar="CLIENT_ID[:OBJECT_ID]",
        help="add a user-assigned identity selectable with AZURE_CLIENT_ID (repeatable)",
    )
    parser.add_argument("--no-system-assigned", action="store_true", help="only user-assigned identities answer")
    args = parser.parse_args(argv)
    state = IdentityState(issuer=TokenIssuer(args.state_dir), header=args.header or secrets.token_urlsafe(16))
    if args.no_system_assigned:
        state.system = None
    for spec in args.user_assigned:
        client_id, _, object_id = spec.partition(":")
        state.add_user_assigned(client_id, object_id or None)

    def banner(running: Running) -> str:
        return "\n".join(f"export {k}={v}" for k, v in environment(running).items())

    run_forever(lambda: start(state, host=args.host, port=args.port), banner)


if __name__ == "__main__":
    main()
