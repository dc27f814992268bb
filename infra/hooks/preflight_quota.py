"""The model checks of the preflight: is the version open, the SKU offered, the capacity within the free quota.

A module of the azd preprovision hook (preflight.py): `check` judges one deployment against what its region
offers (preflight_offers.py) and returns the pass line's part for it, or refuses with the fix.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from preflight_env import SKIP, Refusal
from preflight_offers import CLOSED, Offer, Region, Sku
from preflight_request import ALLOWED_SKUS, BATCH_SKU, Request

QUOTA_HELP = "https://aka.ms/oai/quotaincrease"


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
