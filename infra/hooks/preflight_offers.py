"""What a region offers to OpenAI accounts: its model versions, their SKUs, and the quota left.

A module of the azd preprovision hook (preflight.py), read from `az cognitiveservices model list` and
`az cognitiveservices usage list` (preflight_az.py runs them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from preflight_az import entries, parse_date
from preflight_request import Request

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

# lifecycleStatus values that close a model version to new deployments. "Legacy" still deploys (a
# note says so); "GenerallyAvailable" and "Preview" are fine.
CLOSED = {"Deprecating", "Deprecated", "Retired"}
MAX_ALTERNATIVES = 4


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
            skus[name] = Sku(name, usage, parse_date(sku.get("deprecationDate")), int(maximum) if maximum else None)
        capabilities = model.get("capabilities") or {}
        return cls(
            name=str(model["name"]),
            version=str(model.get("version") or ""),
            status=str(model.get("lifecycleStatus") or "GenerallyAvailable"),
            retires=parse_date((model.get("deprecation") or {}).get("inference")),
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
        offers = [offer for entry in entries(models) if (offer := Offer.parse(entry)) is not None]
        free: dict[str, tuple[float, float]] = {}
        for usage in entries(usages):
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
