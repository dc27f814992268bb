#!/usr/bin/env python3
"""azd preprovision hook: refuse to provision a model deployment or a Python runtime Azure would refuse.

Runs before azd creates anything (azure.yaml `hooks.preprovision`). With the azd environment's
values (the same ones infra/main.parameters.json passes to main.bicep) it asks the Azure CLI what
the region offers and how much quota is left:

    az cognitiveservices model list --location <region> -o json
    az cognitiveservices usage list --location <region> -o json
    az functionapp list-flexconsumption-runtimes --location <region> --runtime python -o json

and stops with ONE line, naming the fix and the alternatives it found, when the model or version is
not offered there, is deprecated or retired (`lifecycleStatus`, `deprecation.inference`, the SKU's
`deprecationDate`), the SKU is not offered, the capacity exceeds the free quota, or the Function
App's region does not offer its Python version on Flex Consumption (AZURE_PYTHON_VERSION, main.bicep's
pythonVersion), or the Function App's maximumInstanceCount is outside what Flex Consumption takes there.
Otherwise it prints one line and lets azd go on; the line ends with the maximumInstanceCount the
template deploys and how it was derived from the quota (sizing.py). Exit status: 0 go, 1 stop.

It checks each model deployment main.bicep would create: the live one; with
AZURE_OPENAI_SECONDARY_LOCATION, the same deployment in that region (the deployment pool's second
account); with AZURE_OPENAI_BATCH_MODEL_NAME, the batch lane's GlobalBatch deployment on the first
account. Deployments that draw on the same quota (same region, model and SKU) are counted together.

It also refuses, before asking az anything, a model the worker could not call: one Azure serves through
the Responses API only (shared/catalogue.py: the -pro and -codex lines, codex-mini, o3-pro) while
AZURE_OPENAI_API (main.bicep's openAiApi, the API every deployment of the pool declares) is chat.

Inputs (azd environment; defaults = main.bicep's, tests/infra checks they agree):
AZURE_OPENAI_LOCATION (else AZURE_LOCATION), AZURE_SUBSCRIPTION_ID, AZURE_OPENAI_MODEL_NAME,
AZURE_OPENAI_MODEL_VERSION, AZURE_OPENAI_DEPLOYMENT_SKU, AZURE_OPENAI_DEPLOYMENT_CAPACITY,
AZURE_OPENAI_DEPLOYMENT_NAME; AZURE_OPENAI_SECONDARY_LOCATION, AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY;
AZURE_OPENAI_BATCH_MODEL_NAME, AZURE_OPENAI_BATCH_MODEL_VERSION, AZURE_OPENAI_BATCH_DEPLOYMENT_NAME,
AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY; AZURE_PYTHON_VERSION (the Function App's, in AZURE_LOCATION);
VNET_ENABLED (private networking), which changes no check and is named in the pass line when on;
MAXIMUM_INSTANCE_COUNT (0: derived from the quota), EXPECTED_TOKENS_PER_CALL, EXPECTED_SECONDS_PER_CALL.
PREFLIGHT_SKIP=1 skips every check (`azd env set PREFLIGHT_SKIP 1`).

Standard library only, so the hook runs with any python3 before the project's venv exists: the
catalogue it reads (shared/catalogue.py) imports nothing else either.

This file is the entry point (the checks in order, the one line, the exit status); its modules beside it:
preflight_env.py (the azd values, main.bicep's parameters, Refusal), preflight_request.py (the deployments
asked for), preflight_api.py (the API check), preflight_az.py (the Azure CLI and its JSON),
preflight_offers.py (what a region offers), preflight_quota.py (the model, SKU and quota checks),
preflight_runtime.py (Python on Flex Consumption) and sizing.py (maximumInstanceCount).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Mapping, Sequence

# Modules beside this file: on sys.path when azd runs the hook as a script (tests load them by file too).
import sizing
from preflight_az import Az
from preflight_env import SKIP, Refusal
from preflight_offers import Region
from preflight_quota import check
from preflight_request import Request
from preflight_runtime import Runtime, check_runtime, flex_python

APP = "Function App"  # names the runtime check's part of the line


def run(env: Mapping[str, str], today: dt.date) -> str:
    primary = Request.from_env(env)
    secondary = primary.secondary(env)
    requests = [primary, *(r for r in (secondary, primary.batch(env)) if r is not None)]
    runtime = Runtime.from_env(env)
    scale = _sizing(env, primary, secondary)
    az = Az.find(primary.subscription)
    regions: dict[str, Region] = {}
    claimed: dict[str, dict[str, int]] = {}
    verdicts = []
    for request in requests:
        if request.location not in regions:
            models = az.listing("model", request.location)
            usages = az.listing("usage", request.location)
            regions[request.location] = Region.parse(request.location, models, usages, today)
        try:
            verdict = check(
                regions[request.location], request, az.held(env, request), claimed.setdefault(request.location, {})
            )
        except Refusal as refusal:
            raise Refusal(f"{request.what}: {refusal}" if request.what else str(refusal)) from refusal
        verdicts.append(f"{request.what}: {verdict}" if request.what else verdict)
    try:
        listing = az.flex_runtimes(runtime.location)
        verdicts.append(f"{APP}: {check_runtime(flex_python(listing), runtime, today)}")
        verdicts.append(scale.line(*sizing.flex_limits(listing, runtime.version)))
    except (Refusal, sizing.SizingError) as refusal:
        raise Refusal(f"{APP}: {refusal}") from refusal
    return " | ".join(verdicts)


def _sizing(env: Mapping[str, str], primary: Request, secondary: Request | None) -> sizing.Sizing:
    """What maximumInstanceCount is derived from: the pool's deployments (the batch lane has a quota of its
    own and no slots), host.json's concurrency and the expected calls; bad values refused before az runs."""
    pool = [(primary.deployment, primary.capacity)]
    if secondary is not None:
        pool.append((f"second account ({secondary.location})", secondary.capacity))
    try:
        return sizing.Sizing.from_env(env, tuple(pool))
    except sizing.SizingError as refusal:
        raise Refusal(str(refusal)) from refusal


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--today", type=dt.date.fromisoformat, default=dt.date.today(), help="judge dates as of YYYY-MM-DD"
    )
    args = parser.parse_args(argv)
    if (os.environ.get(SKIP) or "").strip().lower() in ("1", "true", "yes"):
        print(f"preflight: skipped ({SKIP} is set): the model, version, SKU, quota and Python runtime are not checked")
        return 0
    try:
        verdict = run(os.environ, args.today)
    except Refusal as refusal:
        print(f"preflight: {refusal}", file=sys.stderr)
        return 1
    print(f"preflight: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
