"""Azure CLI stand-in: answers what azure-identity's AzureCliCredential runs.

``AzureCliCredential`` runs exactly ``az account get-access-token --output json --resource R
[--tenant T] [--subscription S]`` (cwd /bin, stdin closed). Put ``emulators/bin`` first on
``PATH`` and this answers with the real CLI's JSON fields, minting tokens from the same local
issuer as the managed-identity endpoint. State lives in ``$AZURE_CONFIG_DIR`` (default
``$LOCAL_AZURE_DIR/az``), exactly where the real CLI keeps its login, so a test or a
developer flips it with ``az login`` / ``az logout``. Every run is counted in
``invocations.log`` there.

It also answers the four look-ups ``infra/hooks/preflight.py`` (the azd preprovision hook) makes,
with the real CLI's JSON shapes: ``az cognitiveservices model list --location L``, ``az
cognitiveservices usage list --location L``, ``az cognitiveservices account deployment show`` and
``az functionapp list-flexconsumption-runtimes --location L --runtime R``. They answer from
``$AZURE_CONFIG_DIR/cognitiveservices.json`` when a test or a developer writes one
(:func:`save_catalogue`), else from :func:`default_catalogue`: a region as the model lifecycle and
the Flex Consumption Python versions stood in late 2026.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from emulators.principals import DEFAULT_TENANT, Principal, state_dir

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


# ---- cognitiveservices: the model catalogue, quota and deployments of a region ----
#
# Shapes: the CLI prints the Models - List and Usages - List REST bodies' `value` arrays as they come
# (azure-cli cognitiveservices tests/latest/test_subscription_level_apis.py reads models[0]['kind'],
# ['skuName'], ['model']['skus'][0]['name'] and usages[0]['currentValue'], ['limit'],
# ['name']['value']); the fields are those of azure-rest-api-specs Microsoft.CognitiveServices
# stable/2024-10-01 examples ListLocationModels.json (model.lifecycleStatus, deprecation{fineTune,
# inference}, skus[{name, usageName, deprecationDate, capacity}]) and ListUsages.json (name{value,
# localizedValue}, currentValue, limit, unit). Quota is counted in units of 1,000 tokens per minute,
# the unit of a deployment's sku.capacity, under usageName `OpenAI.<SKU>.<model>`.

CATALOGUE_FILE = "cognitiveservices.json"
STANDIN_RESOURCE_GROUP = "rg-standin"


def _model(
    name: str, version: str, status: str, retires: str, skus: dict[str, int], *, chat: bool = True
) -> dict[str, Any]:
    """One entry of `az cognitiveservices model list` (kind OpenAI, account sku S0)."""
    stamp = f"{retires}T00:00:00Z"
    return {
        "kind": "OpenAI",
        "skuName": "S0",
        "model": {
            "format": "OpenAI",
            "name": name,
            "version": version,
            "isDefaultVersion": True,
            "lifecycleStatus": status,
            "capabilities": {"chatCompletion": str(chat).lower(), "embeddings": str(not chat).lower()},
            "deprecation": {"fineTune": None, "inference": stamp},
            "maxCapacity": 3,
            "skus": [
                {
                    "name": sku,
                    "usageName": f"OpenAI.{sku}.{name}",
                    "deprecationDate": stamp,
                    "capacity": {"default": min(100, maximum), "maximum": maximum},
                }
                for sku, maximum in skus.items()
            ],
            "systemData": {"createdBy": "Microsoft", "lastModifiedBy": "Microsoft"},
        },
    }


def _usage(usage_name: str, limit: int, current: int = 0) -> dict[str, Any]:
    """One entry of `az cognitiveservices usage list`, counted in thousands of tokens per minute."""
    _, sku, model = usage_name.split(".", 2)
    return {
        "name": {"value": usage_name, "localizedValue": f"Tokens Per Minute (thousands) - {model} - {sku}"},
        "currentValue": float(current),
        "limit": float(limit),
        "unit": "Count",
        "nextResetTime": None,
        "quotaPeriod": None,
        "status": None,
    }


def flex_runtime(name: str, version: str, end_of_life: str | None, *, default: bool = False) -> dict[str, Any]:
    """One entry of `az functionapp list-flexconsumption-runtimes`: azure-cli's
    _FlexFunctionAppStackRuntimeHelper.Runtime (appservice/custom.py), built from the Function App
    Stacks API's FC1 entry for the version and printed with its attributes camel-cased, as the CLI prints
    objects. `sku` is the stacks API's FC1 sku as it comes (the CLI's own tests build it with
    instanceMemoryMB, maximumInstanceCount and functionAppConfigProperties.runtime)."""
    return {
        "name": name,
        "version": version,
        "appInsights": True,
        "default": default,
        "sku": {
            "skuCode": "FC1",
            "instanceMemoryMB": [{"size": size, "isDefault": size == 2048} for size in (512, 2048, 4096)],
            "maximumInstanceCount": {"defaultValue": 100},
            "functionAppConfigProperties": {"runtime": {"name": name, "version": version}},
        },
        "endOfLifeDate": f"{end_of_life}T00:00:00Z" if end_of_life else None,
        "githubActionsProperties": {"isSupported": True, "supportedVersion": version},
    }


def default_flex_runtimes() -> list[dict[str, Any]]:
    """Python on Flex Consumption as facts-api-surface.md section 7 describes late 2026: 3.11 to 3.14
    (3.10's support ended in October 2026), ends of support as published for 3.11 to 3.13; 3.14's
    published end (April 2029, before 3.13's) is left out as doubtful. Which version a region marks
    `default` is not known: none is marked, and nothing here reads it."""
    return [
        flex_runtime("python", "3.14", None),
        flex_runtime("python", "3.13", "2029-10-31"),
        flex_runtime("python", "3.12", "2028-10-31"),
        flex_runtime("python", "3.11", "2027-10-31"),
    ]


def default_catalogue() -> dict[str, Any]:
    """A region (any location) as facts-models-and-quota.md section 1 describes late 2026: the
    gpt-5.4 minis GA, gpt-4.1-mini Legacy, gpt-4o-mini 2024-07-18 Deprecated; Tier-1 quota, none used.
    Also an embeddings model and an AIServices-kind twin, which a chat deployment must not pick; and
    the Python versions Flex Consumption offers there (`flexRuntimes`, :func:`default_flex_runtimes`)."""
    models = [
        _model("gpt-5.4-mini", "2026-03-17", "GenerallyAvailable", "2027-09-21",
               {"GlobalStandard": 10000, "GlobalBatch": 10000}),
        _model("gpt-5.4-nano", "2026-03-17", "GenerallyAvailable", "2027-09-21",
               {"GlobalStandard": 10000, "DataZoneStandard": 10000}),
        _model("gpt-5-mini", "2025-08-07", "GenerallyAvailable", "2027-02-09",
               {"GlobalStandard": 10000, "DataZoneStandard": 10000}),
        _model("gpt-4.1-mini", "2025-04-14", "Legacy", "2027-04-14",
               {"GlobalStandard": 10000, "DataZoneStandard": 10000, "Standard": 6000}),
        _model("gpt-4o-mini", "2024-07-18", "Deprecated", "2027-04-14", {"GlobalStandard": 10000, "Standard": 2000}),
        _model("text-embedding-3-small", "1", "GenerallyAvailable", "2027-12-31", {"GlobalStandard": 10000},
               chat=False),
    ]  # fmt: skip
    twin = json.loads(json.dumps(models[0]))
    twin["kind"] = "AIServices"
    usages = [
        {
            "name": {"value": "AccountCount", "localizedValue": "Cognitive Services total account limit"},
            "currentValue": 0.0,
            "limit": 200.0,
            "unit": "Count",
        },
        _usage("OpenAI.GlobalStandard.gpt-5.4-mini", 1000),
        _usage("OpenAI.GlobalBatch.gpt-5.4-mini", 5000),
        _usage("OpenAI.GlobalStandard.gpt-5.4-nano", 5000),
        _usage("OpenAI.DataZoneStandard.gpt-5.4-nano", 2000),
        _usage("OpenAI.GlobalStandard.gpt-5-mini", 1000),
        _usage("OpenAI.DataZoneStandard.gpt-5-mini", 300),
        _usage("OpenAI.GlobalStandard.gpt-4.1-mini", 5000),
        _usage("OpenAI.DataZoneStandard.gpt-4.1-mini", 2000),
        _usage("OpenAI.Standard.gpt-4.1-mini", 6000),
        _usage("OpenAI.GlobalStandard.gpt-4o-mini", 2000),
        _usage("OpenAI.Standard.gpt-4o-mini", 2000),
        _usage("OpenAI.GlobalStandard.text-embedding-3-small", 1000),
    ]
    return {"models": [*models, twin], "usages": usages, "deployments": [], "flexRuntimes": default_flex_runtimes()}


def deployment(
    *,
    account: str,
    name: str,
    model: str,
    version: str,
    sku: str,
    capacity: int,
    resource_group: str = STANDIN_RESOURCE_GROUP,
    subscription: str = DEFAULT_SUBSCRIPTION,
) -> dict[str, Any]:
    """A model deployment as `az cognitiveservices account deployment show` prints it."""
    account_id = (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.CognitiveServices/accounts/{account}"
    )
    return {
        "id": f"{account_id}/deployments/{name}",
        "name": name,
        "type": "Microsoft.CognitiveServices/accounts/deployments",
        "resourceGroup": resource_group,
        "sku": {"name": sku, "capacity": capacity},
        "properties": {
            "model": {"format": "OpenAI", "name": model, "version": version},
            "versionUpgradeOption": "OnceNewDefaultVersionAvailable",
            "provisioningState": "Succeeded",
        },
    }


def save_catalogue(catalogue: dict[str, Any]) -> None:
    """What the cognitiveservices and functionapp commands answer from now on. Keys: ``models``,
    ``usages``, ``deployments`` and ``flexRuntimes`` (the CLI's shapes, for every location), and
    optionally ``locations``: ``{"<location>": {"models": [...], "usages": [...], "flexRuntimes": [...]}}``
    for a region that differs."""
    (config_dir() / CATALOGUE_FILE).write_text(json.dumps(catalogue, indent=2))


def load_catalogue() -> dict[str, Any]:
    path = config_dir() / CATALOGUE_FILE
    if path.exists():
        catalogue: dict[str, Any] = json.loads(path.read_text())
        return catalogue
    return default_catalogue()


def _in_region(location: str) -> dict[str, Any]:
    catalogue = load_catalogue()
    regions = {str(k).lower(): v for k, v in (catalogue.get("locations") or {}).items()}
    return {**catalogue, **regions.get(location.lower(), {})}


def _cognitiveservices(args: argparse.Namespace) -> int:
    if not load_state().get("logged_in"):
        print(f"ERROR: {LOGGED_OUT}", file=sys.stderr)
        return 1
    if args.cs_group in ("model", "usage"):
        key = "models" if args.cs_group == "model" else "usages"
        print(json.dumps(_in_region(args.location).get(key, []), indent=2))
        return 0
    wanted = f"/resourceGroups/{args.resource_group}/providers/Microsoft.CognitiveServices/accounts/{args.name}"
    wanted += f"/deployments/{args.deployment_name}"
    for found in load_catalogue().get("deployments", []):
        if str(found.get("id", "")).lower().endswith(wanted.lower()):
            print(json.dumps(found, indent=2))
            return 0
    print(
        f"ERROR: (DeploymentNotFound) The specified deployment '{args.deployment_name}' does not exist.",
        file=sys.stderr,
    )
    return 3


def _functionapp(args: argparse.Namespace) -> int:
    """`az functionapp list-flexconsumption-runtimes`: the region's entries for the runtime asked."""
    if not load_state().get("logged_in"):
        print(f"ERROR: {LOGGED_OUT}", file=sys.stderr)
        return 1
    runtimes = _in_region(args.location).get("flexRuntimes", [])
    print(json.dumps([r for r in runtimes if str(r.get("name", "")).lower() == args.runtime.lower()], indent=2))
    return 0


def _add_functionapp(sub: Any) -> None:
    """`az functionapp list-flexconsumption-runtimes --location L --runtime R` and the global arguments."""
    listing = sub.add_parser("functionapp").add_subparsers(dest="fa_command", required=True)
    runtimes = listing.add_parser("list-flexconsumption-runtimes")
    runtimes.add_argument("--location", "-l", required=True)
    runtimes.add_argument("--runtime", required=True)
    runtimes.add_argument("--output", "-o", default="json")
    runtimes.add_argument("--subscription")
    runtimes.add_argument("--only-show-errors", action="store_true")


def _add_cognitiveservices(sub: Any) -> None:
    """`az cognitiveservices model list | usage list | account deployment show` and the global
    arguments the preflight passes."""
    groups = sub.add_parser("cognitiveservices").add_subparsers(dest="cs_group", required=True)
    commands = [
        groups.add_parser("model").add_subparsers(dest="cs_command", required=True).add_parser("list"),
        groups.add_parser("usage").add_subparsers(dest="cs_command", required=True).add_parser("list"),
    ]
    for listing in commands:
        listing.add_argument("--location", "-l", required=True)
    account = groups.add_parser("account").add_subparsers(dest="cs_command", required=True)
    show = account.add_parser("deployment").add_subparsers(dest="cs_action", required=True).add_parser("show")
    show.add_argument("--name", "-n", required=True)
    show.add_argument("--resource-group", "-g", required=True)
    show.add_argument("--deployment-name", required=True)
    for command in [*commands, show]:
        command.add_argument("--output", "-o", default="json")
        command.add_argument("--subscription")
        command.add_argument("--only-show-errors", action="store_true")


def _get_access_token(args: argparse.Namespace) -> int:
    state = load_state()
    if not state.get("logged_in"):
        print(LOGGED_OUT, file=sys.stderr)
        return 1
    tenant = args.tenant or state["tenant"]
    # Imported here: only this command signs, and jwt and cryptography would cost every az call ~70 ms.
    from emulators.tokens import TokenIssuer

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
    _add_cognitiveservices(sub)
    _add_functionapp(sub)
    args = parser.parse_args(argv)
    if args.group == "cognitiveservices":
        return _cognitiveservices(args)
    if args.group == "functionapp":
        return _functionapp(args)
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
