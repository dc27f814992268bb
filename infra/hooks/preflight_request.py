"""What the preflight is asked for: each model deployment main.bicep would create, from the azd environment.

A module of the azd preprovision hook (preflight.py): the live deployment, the deployment pool's second
account's and the batch lane's; a value main.bicep would refuse is refused here first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from preflight_api import check_api
from preflight_env import PARAMETERS, SWITCHES, Refusal, env_values, region_name

# main.bicep's @allowed list for openAiDeploymentSkuName (the worker makes synchronous calls, so no
# GlobalBatch; provisioned throughput is bought differently).
ALLOWED_SKUS = ("GlobalStandard", "DataZoneStandard", "Standard")
# The batch lane's deployment (openai.bicep): its own SKU and quota (enqueued tokens).
BATCH_SKU = "GlobalBatch"


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


def _capacity(values: Mapping[str, str], variable: str) -> int:
    raw = values[variable]
    if not raw.isdigit() or int(raw) < 1:
        raise Refusal(
            f"{variable}={raw} is not a whole number of thousands of tokens per minute "
            f"(1 or more). Fix: azd env set {variable} {PARAMETERS[variable][1]}"
        )
    return int(raw)


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
        values = env_values(env)
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
            location=region_name(location),
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
        values = env_values(env)
        location = region_name(values["AZURE_OPENAI_SECONDARY_LOCATION"])
        if not location:
            return None
        capacity = _capacity(values, "AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY")
        same = ", the first one's region too: no regional fallback" if location == self.location else ""
        what = f"second account ({location}{same})"
        return replace(self, location=location, capacity=capacity, names=SECONDARY_NAMES, what=what)

    def batch(self, env: Mapping[str, str]) -> Request | None:
        """The batch lane's GlobalBatch deployment on the first account, named <model>-batch unless named."""
        values = env_values(env)
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
