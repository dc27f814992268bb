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
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# A module beside this file: on sys.path when azd runs the hook as a script (tests put it there too).
import sizing

# The one list of Responses-only models, shared with the worker's settings and the emulator. azd runs the hook as a
# script, so the repository root is not on the path by itself (appended: it shadows nothing installed).
sys.path.append(str(Path(__file__).resolve().parents[2]))
from shared.catalogue import is_responses_only

# azd environment value -> (main.bicep parameter, default). infra/main.parameters.json maps each
# parameter to its value with the same default; tests/infra fails when the three drift apart.
PARAMETERS: dict[str, tuple[str, str]] = {
    "AZURE_OPENAI_MODEL_NAME": ("openAiModelName", "gpt-5.4-mini"),
    "AZURE_OPENAI_MODEL_VERSION": ("openAiModelVersion", "2026-03-17"),
    "AZURE_OPENAI_DEPLOYMENT_SKU": ("openAiDeploymentSkuName", "GlobalStandard"),
    "AZURE_OPENAI_DEPLOYMENT_CAPACITY": ("openAiDeploymentCapacity", "50"),
    "AZURE_OPENAI_DEPLOYMENT_NAME": ("openAiDeploymentName", ""),
    # The API the worker calls it through (AZURE_OPENAI_API, each pool entry's api): chat or responses.
    "AZURE_OPENAI_API": ("openAiApi", "chat"),
    # The deployment pool's second account (empty location: none).
    "AZURE_OPENAI_SECONDARY_LOCATION": ("secondaryOpenAiLocation", ""),
    "AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY": ("secondaryOpenAiDeploymentCapacity", "50"),
    # The batch lane's GlobalBatch deployment (empty model: none).
    "AZURE_OPENAI_BATCH_MODEL_NAME": ("openAiBatchModelName", ""),
    "AZURE_OPENAI_BATCH_MODEL_VERSION": ("openAiBatchModelVersion", "2026-03-17"),
    "AZURE_OPENAI_BATCH_DEPLOYMENT_NAME": ("openAiBatchDeploymentName", ""),
    "AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY": ("openAiBatchDeploymentCapacity", "50"),
    # The Function App's Python (functionAppConfig.runtime.version), on Flex Consumption in AZURE_LOCATION.
    "AZURE_PYTHON_VERSION": ("pythonVersion", "3.13"),
    # The Function App's scale-out limit and what deriving it from the quota assumes (sizing.py).
    **sizing.PARAMETERS,
}
# azd environment value -> (main.bicep bool parameter, default), mapped the same way.
SWITCHES: dict[str, tuple[str, str]] = {
    "VNET_ENABLED": ("vnetEnabled", "false"),
}
# main.bicep's @allowed list for openAiDeploymentSkuName (the worker makes synchronous calls, so no
# GlobalBatch; provisioned throughput is bought differently).
ALLOWED_SKUS = ("GlobalStandard", "DataZoneStandard", "Standard")
# main.bicep's @allowed list for pythonVersion, and the versions this project's CI runs the tests on
# (pyproject.toml's classifiers; tests/infra checks both): a version outside the second passes with a note.
ALLOWED_PYTHON = ("3.11", "3.12", "3.13", "3.14")
TESTED_PYTHON = ("3.11", "3.12", "3.13")
# The batch lane's deployment (openai.bicep): its own SKU and quota (enqueued tokens).
BATCH_SKU = "GlobalBatch"
SKIP = "PREFLIGHT_SKIP"
APP = "Function App"  # names the runtime check's part of the line
# lifecycleStatus values that close a model version to new deployments. "Legacy" still deploys (a
# note says so); "GenerallyAvailable" and "Preview" are fine.
CLOSED = {"Deprecating", "Deprecated", "Retired"}
QUOTA_HELP = "https://aka.ms/oai/quotaincrease"
AZ_TIMEOUT_SECONDS = 120
MAX_ALTERNATIVES = 4


class Refusal(Exception):
    """Stop provisioning; the message is the one line to print."""


# ---------------------------------------------------------------- what is asked for


@dataclass(frozen=True)
class Names:
    """The azd values a fix may tell people to set for one deployment. None: that part is not this
    deployment's own to change (the pool's second deployment shares the first's model and SKU)."""

    location: str = "AZURE_OPENAI_LOCATION"
    model: str | None = "AZURE_OPENAI_MODEL_NAME"
    version: str | None = "AZURE_OPENAI_MODEL_VERSION"
    sku: str | None = "AZURE_OPENAI_DEPLOYMENT_SKU"
    capacity: str = "AZURE_OPENAI_DEPLOYMENT_CAPACITY"
    endpoint: str = "AZURE_OPENAI_ENDPOINT"  # the azd output naming its account, once provisioned


SECONDARY_NAMES = Names(
    location="AZURE_OPENAI_SECONDARY_LOCATION", model=None, version=None, sku=None,
    capacity="AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY", endpoint="AZURE_OPENAI_SECONDARY_ENDPOINT",
)  # fmt: skip
BATCH_NAMES = Names(
    model="AZURE_OPENAI_BATCH_MODEL_NAME", version="AZURE_OPENAI_BATCH_MODEL_VERSION", sku=None,
    capacity="AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY",
)  # fmt: skip


def _values(env: Mapping[str, str]) -> dict[str, str]:
    return {name: (env.get(name) or "").strip() or default for name, (_, default) in PARAMETERS.items()}


def _capacity(values: Mapping[str, str], variable: str) -> int:
    raw = values[variable]
    if not raw.isdigit() or int(raw) < 1:
        raise Refusal(
            f"{variable}={raw} is not a whole number of thousands of tokens per minute "
            f"(1 or more). Fix: azd env set {variable} {PARAMETERS[variable][1]}"
        )
    return int(raw)


def _region(value: str) -> str:
    return value.strip().lower().replace(" ", "")


@dataclass(frozen=True)
class Request:
    location: str
    model: str
    version: str
    sku: str
    capacity: int
    deployment: str
    subscription: str
    vnet_enabled: str = "false"  # VNET_ENABLED as azd hands it to main.bicep's vnetEnabled
    names: Names = Names()
    what: str = ""  # which deployment, in a line about several ("" for the live one)

    @property
    def usage_name(self) -> str:
        return f"OpenAI.{self.sku}.{self.model}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Request:
        values = _values(env)
        location = (env.get("AZURE_OPENAI_LOCATION") or env.get("AZURE_LOCATION") or "").strip()
        if not location:
            raise Refusal("no region: AZURE_LOCATION is not set. Fix: azd env set AZURE_LOCATION <region>")
        sku = values["AZURE_OPENAI_DEPLOYMENT_SKU"]
        if sku not in ALLOWED_SKUS:
            raise Refusal(
                f"AZURE_OPENAI_DEPLOYMENT_SKU={sku} is not a SKU main.bicep deploys ({', '.join(ALLOWED_SKUS)}). "
                "Fix: azd env set AZURE_OPENAI_DEPLOYMENT_SKU GlobalStandard"
            )
        capacity = _capacity(values, "AZURE_OPENAI_DEPLOYMENT_CAPACITY")
        model = values["AZURE_OPENAI_MODEL_NAME"]
        check_api(values["AZURE_OPENAI_API"], model, values["AZURE_OPENAI_DEPLOYMENT_NAME"] or model)
        return cls(
            location=_region(location),
            model=model,
            version=values["AZURE_OPENAI_MODEL_VERSION"],
            sku=sku,
            capacity=capacity,
            deployment=values["AZURE_OPENAI_DEPLOYMENT_NAME"] or model,
            subscription=(env.get("AZURE_SUBSCRIPTION_ID") or "").strip(),
            vnet_enabled=(env.get("VNET_ENABLED") or "").strip().lower() or SWITCHES["VNET_ENABLED"][1],
        )

    def secondary(self, env: Mapping[str, str]) -> Request | None:
        """The deployment pool's second deployment: this one, in AZURE_OPENAI_SECONDARY_LOCATION."""
        values = _values(env)
        location = _region(values["AZURE_OPENAI_SECONDARY_LOCATION"])
        if not location:
            return None
        capacity = _capacity(values, "AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY")
        same = ", the first one's region too: no regional fallback" if location == self.location else ""
        what = f"second account ({location}{same})"
        return replace(self, location=location, capacity=capacity, names=SECONDARY_NAMES, what=what)

    def batch(self, env: Mapping[str, str]) -> Request | None:
        """The batch lane's GlobalBatch deployment on the first account, named <model>-batch unless named."""
        values = _values(env)
        model = values["AZURE_OPENAI_BATCH_MODEL_NAME"]
        if not model:
            return None
        deployment = values["AZURE_OPENAI_BATCH_DEPLOYMENT_NAME"] or f"{model}-batch"
        if deployment == self.deployment:
            raise Refusal(
                f"the batch deployment would be named {deployment}, as the live deployment is: one would replace "
                "the other. Fix: azd env set AZURE_OPENAI_BATCH_DEPLOYMENT_NAME <another name>"
            )
        capacity = _capacity(values, "AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY")
        version = values["AZURE_OPENAI_BATCH_MODEL_VERSION"]
        return replace(
            self, model=model, version=version, sku=BATCH_SKU, capacity=capacity, deployment=deployment,
            names=BATCH_NAMES, what=f"batch deployment {deployment}",
        )  # fmt: skip


APIS = ("chat", "responses")  # main.bicep's @allowed list for openAiApi


def check_api(api: str, model: str, deployment: str) -> None:
    """Refuse what the worker could not call: a Responses-only model (or a deployment the worker's settings take
    for one, since they judge it by its name) through Chat Completions. Azure would answer every job 400
    OperationNotSupported; the worker's settings refuse such a deployment at start."""
    if api not in APIS:
        raise Refusal(
            f"AZURE_OPENAI_API={api} is not an API main.bicep takes ({', '.join(APIS)}). Fix: azd env set "
            f"AZURE_OPENAI_API {'responses' if is_responses_only(model) else 'chat'}"
        )
    if api == "responses":
        return
    fix = "Fix: azd env set AZURE_OPENAI_API responses"
    if is_responses_only(model):
        raise Refusal(
            f"{model} is served through the Responses API only (Chat Completions answer 400 OperationNotSupported) "
            f"and AZURE_OPENAI_API is chat: the worker would refuse to start. {fix}"
        )
    if is_responses_only(deployment):
        raise Refusal(
            f"the deployment name {deployment} reads as a Responses-only model and AZURE_OPENAI_API is chat: the "
            f"worker's settings judge a deployment by its name and would refuse to start. Fix: azd env set "
            f"AZURE_OPENAI_DEPLOYMENT_NAME <another name> (or, if {model} takes the Responses API, azd env set "
            "AZURE_OPENAI_API responses)"
        )


# ---------------------------------------------------------------- what the region offers
#
# The shapes are the Azure CLI's: `model list` and `usage list` print the `value` arrays of the
# Models - List and Usages - List REST calls (azure-cli, src/azure-cli/azure/cli/command_modules/
# cognitiveservices/tests/latest/test_subscription_level_apis.py reads models[0]['kind'],
# ['skuName'], ['model']['skus'][0]['name'] and usages[0]['currentValue'], ['limit'],
# ['name']['value']). Fields per azure-rest-api-specs, specification/cognitiveservices/
# resource-manager/Microsoft.CognitiveServices/stable/2024-10-01/examples/ListLocationModels.json
# ({kind, skuName, model{format, name, version, lifecycleStatus, deprecation{fineTune, inference},
# skus[{name, usageName, deprecationDate, capacity{minimum, maximum, step, default}}]}}) and
# ListUsages.json ({name{value, localizedValue}, currentValue, limit, unit}). Quota is counted in
# the unit of a deployment's capacity, thousands of tokens per minute. Any field may be missing or
# null: absent means "not limited by it".


def _date(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


@dataclass(frozen=True)
class Sku:
    name: str
    usage_name: str
    retires: dt.date | None
    maximum: int | None


@dataclass(frozen=True)
class Offer:
    """One model version the region offers to OpenAI accounts."""

    name: str
    version: str
    status: str
    retires: dt.date | None
    chat: bool
    default: bool
    skus: dict[str, Sku] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> Offer | None:
        model = entry.get("model") or {}
        if entry.get("kind") != "OpenAI" or (model.get("format") or "OpenAI") != "OpenAI" or not model.get("name"):
            return None
        skus: dict[str, Sku] = {}
        for sku in model.get("skus") or []:
            name = str(sku.get("name") or "")
            maximum = (sku.get("capacity") or {}).get("maximum")
            usage = str(sku.get("usageName") or f"OpenAI.{name}.{model['name']}")
            skus[name] = Sku(name, usage, _date(sku.get("deprecationDate")), int(maximum) if maximum else None)
        capabilities = model.get("capabilities") or {}
        return cls(
            name=str(model["name"]),
            version=str(model.get("version") or ""),
            status=str(model.get("lifecycleStatus") or "GenerallyAvailable"),
            retires=_date((model.get("deprecation") or {}).get("inference")),
            chat=str(capabilities.get("chatCompletion", "true")).lower() == "true",
            default=bool(model.get("isDefaultVersion")),
            skus=skus,
        )


@dataclass(frozen=True)
class Region:
    location: str
    offers: list[Offer]
    free: dict[str, tuple[float, float]]  # usage name (lower case) -> (free, limit)
    today: dt.date

    @classmethod
    def parse(cls, location: str, models: Any, usages: Any, today: dt.date) -> Region:
        offers = [offer for entry in _entries(models) if (offer := Offer.parse(entry)) is not None]
        free: dict[str, tuple[float, float]] = {}
        for usage in _entries(usages):
            name = str((usage.get("name") or {}).get("value") or "").lower()
            limit = float(usage.get("limit") or 0)
            free[name] = (limit - float(usage.get("currentValue") or 0), limit)
        return cls(location, offers, free, today)

    def quota(self, usage_name: str) -> tuple[float, float]:
        """(free, limit) in thousands of TPM; no entry means no quota."""
        return self.free.get(usage_name.lower(), (0.0, 0.0))

    def open_for(self, offer: Offer, sku: str) -> bool:
        """New deployments of this version with this SKU are possible here today."""
        found = offer.skus.get(sku)
        return (
            offer.status not in CLOSED
            and not self.past(offer.retires)
            and found is not None
            and not self.past(found.retires)
        )

    def past(self, day: dt.date | None) -> bool:
        return day is not None and day <= self.today

    def alternatives(self, request: Request, skip: Offer | None = None) -> list[Offer]:
        """Chat models open for the SKU with room for the capacity: GA first, the longest-lived first."""
        found = [
            offer
            for offer in self.offers
            if offer.chat
            and offer != skip
            and self.open_for(offer, request.sku)
            and self.quota(offer.skus[request.sku].usage_name)[0] >= request.capacity
        ]
        found.sort(key=lambda o: (o.status != "GenerallyAvailable", -(o.retires or dt.date.max).toordinal(), o.label))
        unique = list({offer.label: offer for offer in found}.values())
        return unique[:MAX_ALTERNATIVES]


def _entries(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, dict):  # a raw REST body, {"value": [...]}
        value = value.get("value")
    return [item for item in value or [] if isinstance(item, dict)]


# ---------------------------------------------------------------- the verdict


def _on(day: dt.date | None) -> str:
    return f", retires {day.isoformat()}" if day else ""


def _switch(region: Region, request: Request, skip: Offer | None) -> str:
    """How to move: to another model (the first alternative) or, when there is none (or the model is
    not this deployment's to change), another region."""
    names = request.names
    others = region.alternatives(request, skip) if names.model and names.version else []
    if not others:
        why = "no other chat model here has" if names.model else "the model is the first deployment's; this region"
        return (
            f"another region (azd env set {names.location} <region>): {why} {request.capacity} units of "
            f"{request.sku} quota free"
        )
    best = others[0]
    listed = ", ".join(o.label + (f" ({o.status})" if o.status != "GenerallyAvailable" else "") for o in others)
    return (
        f"azd env set {names.model} {best.name} && azd env set {names.version} "
        f"{best.version} (open for {request.sku} here with {request.capacity} units free: {listed})"
    )


def _find(region: Region, request: Request) -> Offer:
    same = [o for o in region.offers if o.name == request.model]
    exact = next((o for o in same if o.version == request.version), None)
    if exact is not None:
        return exact
    where = f"{request.model} {request.version} is not offered in {region.location}"
    usable = [o for o in same if o.chat and region.open_for(o, request.sku)]
    if usable and request.names.version:
        best = next((o for o in usable if o.default), usable[0])
        versions = ", ".join(o.version for o in usable)
        raise Refusal(
            f"{where} (versions open for {request.sku} here: {versions}). "
            f"Fix: azd env set {request.names.version} {best.version}"
        )
    raise Refusal(f"{where}. Fix: {_switch(region, request, None)}")


def _check_lifecycle(region: Region, request: Request, offer: Offer) -> None:
    if offer.status in CLOSED:
        raise Refusal(
            f"{offer.label} is {offer.status} in {region.location} (closed to new deployments{_on(offer.retires)}). "
            f"Fix: {_switch(region, request, offer)}. A subscription that already runs this version may still "
            f"deploy it: azd env set {SKIP} 1"
        )
    if region.past(offer.retires):
        raise Refusal(f"{offer.label} was retired on {offer.retires}. Fix: {_switch(region, request, offer)}")


def _check_sku(region: Region, request: Request, offer: Offer) -> Sku:
    sku = offer.skus.get(request.sku)
    open_skus = [name for name in ALLOWED_SKUS if name in offer.skus and region.open_for(offer, name)]
    if sku is None or region.past(sku.retires):
        state = "is not offered" if sku is None else f"was retired on {sku.retires}"
        fix = (
            f"Fix: azd env set {request.names.sku} {open_skus[0]} (open here: {', '.join(open_skus)})"
            if open_skus and request.names.sku
            else f"Fix: {_switch(region, request, offer)}"
        )
        raise Refusal(f"{request.sku} {state} for {offer.label} in {region.location}. {fix}")
    if sku.maximum is not None and request.capacity > sku.maximum:
        raise Refusal(
            f"capacity {request.capacity} is over the {sku.maximum} a {request.sku} deployment of {offer.label} "
            f"can have. Fix: azd env set {request.names.capacity} {sku.maximum}"
        )
    return sku


def _check_quota(region: Region, request: Request, offer: Offer, sku: Sku, held: int, claimed: int) -> float:
    free, limit = region.quota(sku.usage_name)
    free += held - claimed
    if request.capacity <= free:
        return free
    room = max(int(free), 0)
    lower = f"azd env set {request.names.capacity} {room}; " if room >= 1 else ""
    others = [
        name
        for name in ALLOWED_SKUS
        if name != request.sku
        and request.names.sku
        and region.open_for(offer, name)
        and region.quota(offer.skus[name].usage_name)[0] >= request.capacity
    ]
    other_skus = f"azd env set {request.names.sku} {others[0]}; " if others else ""
    shared = f", after the {claimed} units the deployment(s) above take from it" if claimed else ""
    raise Refusal(
        f"capacity {request.capacity} is over the free {sku.usage_name} quota in {region.location}{shared}: {room} "
        f"of {int(limit)} units ({_unit(request)}) free. Fix, any one of: {lower}{other_skus}"
        f"ask for more quota ({QUOTA_HELP}); or {_switch(region, request, offer)}"
    )


def _unit(request: Request) -> str:
    # GlobalBatch quota counts enqueued tokens (held while a batch runs), not tokens per minute.
    return "GlobalBatch quota counts enqueued tokens" if request.sku == BATCH_SKU else "thousands of tokens per minute"


def check(
    region: Region, request: Request, held: Mapping[str, Any] | None = None, claimed: dict[str, int] | None = None
) -> str:
    """The one line to print when provisioning may go on; raises Refusal otherwise. `held` is this
    environment's existing deployment of the same name (a re-provision), if any. `claimed`: units of
    this region's quotas (by usage name) the deployments checked before this one take; this one's
    capacity is added to it when it passes."""
    offer = _find(region, request)
    _check_lifecycle(region, request, offer)
    sku = _check_sku(region, request, offer)
    held_units = _held_units(held, request)
    claimed = {} if claimed is None else claimed
    usage = sku.usage_name.lower()
    free = _check_quota(region, request, offer, sku, held_units, claimed.get(usage, 0))
    claimed[usage] = claimed.get(usage, 0) + request.capacity
    notes = [f"{offer.status}{_on(offer.retires)}"]
    if held_units:
        notes.append(f"counting the {held_units} units this environment's deployment already holds")
    if offer.status == "Legacy":
        notes.append("Legacy: it still deploys, plan a move before it is deprecated")
    notes += _version_notes(region, request, held)
    notes += _network_notes(request)
    return (
        f"ok: {offer.label} {request.sku} in {region.location}, capacity {request.capacity} of {int(free)} "
        f"units free ({'; '.join(notes)})"
    )


def _held_units(held: Mapping[str, Any] | None, request: Request) -> int:
    """Capacity the existing deployment holds in the quota this one needs (same model and SKU)."""
    if not held:
        return 0
    sku = held.get("sku") or {}
    model = (held.get("properties") or {}).get("model") or {}
    if sku.get("name") != request.sku or model.get("name") != request.model:
        return 0
    return int(sku.get("capacity") or 0)


def _network_notes(request: Request) -> list[str]:
    """Private networking changes nothing checked here: the pass line says it is on (and what the
    Flex Consumption VNet integration needs that the template cannot do: the Microsoft.App provider)."""
    if request.vnet_enabled == "true":
        return [
            "private networking on (VNET_ENABLED=true): storage and Azure OpenAI only through private endpoints "
            "in a new VNet; the subscription needs the Microsoft.App resource provider "
            "(az provider register -n Microsoft.App)"
        ]
    if request.vnet_enabled == "false":
        return []
    return [
        f"VNET_ENABLED={request.vnet_enabled} is neither true nor false (main.bicep's vnetEnabled is a bool): "
        "azd env set VNET_ENABLED true, or false"
    ]


def _version_notes(region: Region, request: Request, held: Mapping[str, Any] | None) -> list[str]:
    notes = []
    running = str((((held or {}).get("properties") or {}).get("model") or {}).get("version") or "")
    if running and running != request.version:
        notes.append(
            f"the deployment runs {running} (auto-upgraded): this provision asks for {request.version} again "
            f"unless azd env set {request.names.version or 'AZURE_OPENAI_MODEL_VERSION'} {running}"
        )
    default = next((o for o in region.offers if o.name == request.model and o.default), None)
    if default is not None and default.version != request.version and default.version != running:
        notes.append(f"the region's default version is now {default.version}")
    return notes


# ---------------------------------------------------------------- the Function App's Python on Flex Consumption
#
# `az functionapp list-flexconsumption-runtimes --location L --runtime python` prints one object per
# version the region offers Flex Consumption apps (the Function App Stacks API, stack=python, sku=FC1,
# without hidden or deprecated stacks): azure-cli's _FlexFunctionAppStackRuntimeHelper.Runtime
# (src/azure-cli/azure/cli/command_modules/appservice/custom.py), its attributes camel-cased as the CLI
# prints objects: {name, version, appInsights, default, endOfLifeDate, githubActionsProperties, sku{skuCode,
# instanceMemoryMB[], maximumInstanceCount, functionAppConfigProperties{runtime{name, version}}}}.
# sku.functionAppConfigProperties.runtime.version is the value functionAppConfig.runtime.version takes;
# `version` is the same text with anything but digits and dots removed. Read from the CLI's source, not
# captured from a live run: a field missing here is taken from the other, a missing date means none.


@dataclass(frozen=True)
class Runtime:
    """The Function App's Python version, asked for in the Function App's region."""

    location: str
    version: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Runtime:
        version = _values(env)["AZURE_PYTHON_VERSION"]
        if version not in ALLOWED_PYTHON:
            default = PARAMETERS["AZURE_PYTHON_VERSION"][1]
            raise Refusal(
                f"AZURE_PYTHON_VERSION={version} is not a Python version main.bicep deploys "
                f"({', '.join(ALLOWED_PYTHON)}). Fix: azd env set AZURE_PYTHON_VERSION {default}"
            )
        location = (env.get("AZURE_LOCATION") or "").strip()
        if not location:
            raise Refusal("no region: AZURE_LOCATION is not set. Fix: azd env set AZURE_LOCATION <region>")
        return cls(location=_region(location), version=version)


def flex_python(listing: Any) -> dict[str, dt.date | None]:
    """Python version -> end-of-life date (None: none published), as the CLI lists them."""
    offered: dict[str, dt.date | None] = {}
    for entry in _entries(listing):
        if str(entry.get("name") or "python").lower() != "python":
            continue
        runtime = ((entry.get("sku") or {}).get("functionAppConfigProperties") or {}).get("runtime") or {}
        version = str(runtime.get("version") or entry.get("version") or "")
        if version:
            offered[version] = _date(entry.get("endOfLifeDate")) if entry.get("endOfLifeDate") else None
    return offered


def _newest_first(versions: Sequence[str]) -> list[str]:
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))

    return sorted(versions, key=key, reverse=True)


def check_runtime(offered: Mapping[str, dt.date | None], runtime: Runtime, today: dt.date) -> str:
    """The pass line's part for the Function App; raises Refusal when the region does not offer the version."""
    where = f"Flex Consumption in {runtime.location}"
    if not offered:
        raise Refusal(
            f"{where} offers no Python version (not a Flex Consumption region: az functionapp "
            "list-flexconsumption-locations). Fix: azd env set AZURE_LOCATION <region>"
        )
    open_here = [v for v in _newest_first(list(offered)) if v in ALLOWED_PYTHON and not _ended(offered[v], today)]
    ended = offered.get(runtime.version)
    if runtime.version not in offered or _ended(ended, today):
        state = "is not offered" if runtime.version not in offered else f"reached end of life on {ended}"
        if not open_here:
            allowed = ", ".join(ALLOWED_PYTHON)
            fix = f"another region (azd env set AZURE_LOCATION <region>): none of {allowed} is offered here"
        else:
            best = next((v for v in open_here if v in TESTED_PYTHON), open_here[0])
            fix = f"azd env set AZURE_PYTHON_VERSION {best} (offered here: {', '.join(open_here)}), or another region"
        raise Refusal(f"Python {runtime.version} {state} on {where}. Fix: {fix}")
    notes = [f"end of life {ended.isoformat()}" if ended else "no end of life published"]
    if runtime.version not in TESTED_PYTHON:
        notes.append(f"this project's CI does not test {runtime.version} (README: Runtime)")
    return f"ok: Python {runtime.version} on {where} ({'; '.join(notes)})"


def _ended(day: dt.date | None, today: dt.date) -> bool:
    return day is not None and day <= today


# ---------------------------------------------------------------- the Azure CLI


class AzError(Exception):
    pass


@dataclass(frozen=True)
class Az:
    executable: str
    subscription: str

    @classmethod
    def find(cls, subscription: str) -> Az:
        executable = shutil.which("az")
        if executable is None:
            raise Refusal(
                "the Azure CLI (az) is not on PATH, and this check asks it what the region offers. Fix: install it "
                f"(https://aka.ms/azcli) and az login, or skip the check: azd env set {SKIP} 1"
            )
        return cls(executable, subscription)

    def json(self, *args: str) -> Any:
        command = [self.executable, *args, "--output", "json", "--only-show-errors"]
        if self.subscription:
            command += ["--subscription", self.subscription]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=AZ_TIMEOUT_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AzError(f"`az {' '.join(args[:3])}` did not run: {exc}") from exc
        if done.returncode != 0:
            raise AzError(_first_line(done.stderr) or f"`az {' '.join(args[:3])}` exited {done.returncode}")
        try:
            return json.loads(done.stdout or "null")
        except ValueError as exc:
            raise AzError(f"`az {' '.join(args[:3])}` printed no JSON: {exc}") from exc

    def listing(self, what: str, location: str) -> Any:
        try:
            return self.json("cognitiveservices", what, "list", "--location", location)
        except AzError as exc:
            raise Refusal(_cli_failure(f"az cognitiveservices {what} list", str(exc))) from exc

    def flex_runtimes(self, location: str) -> Any:
        try:
            return self.json(
                "functionapp", "list-flexconsumption-runtimes", "--location", location, "--runtime", "python"
            )
        except AzError as exc:
            raise Refusal(_cli_failure("az functionapp list-flexconsumption-runtimes", str(exc))) from exc

    def held(self, env: Mapping[str, str], request: Request) -> Mapping[str, Any] | None:
        """The deployment this environment provisioned before (azd keeps the outputs), if it exists."""
        account = (urlparse(env.get(request.names.endpoint) or "").hostname or "").split(".")[0]
        group = (env.get("AZURE_RESOURCE_GROUP") or "").strip()
        if not (account and group):
            return None
        try:
            found = self.json(
                "cognitiveservices", "account", "deployment", "show",
                "--name", account, "--resource-group", group, "--deployment-name", request.deployment,
            )  # fmt: skip
        except AzError:
            return None  # not there (yet), or not readable: nothing held
        return found if isinstance(found, dict) else None


def _first_line(text: str) -> str:
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return line.removeprefix("ERROR:").strip()


def _cli_failure(command: str, error: str) -> str:
    if "az login" in error or "AADSTS" in error or "expired" in error.lower():
        return (
            f"the Azure CLI is not logged in ({command}: {error}). The check uses az, not azd's own login. "
            f"Fix: az login (az account set -s <subscription>), or skip the check: azd env set {SKIP} 1"
        )
    return f"{command} failed: {error}. Fix the az error, or skip the check: azd env set {SKIP} 1"


# ---------------------------------------------------------------- entry point


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
