"""The azd environment the preflight reads: its values, the main.bicep parameters they map to, and the refusal.

A module of the azd preprovision hook (preflight.py, which says what it checks); standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping

# A module beside this file: on sys.path when azd runs the hook as a script (tests load it by file first).
import sizing

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
SKIP = "PREFLIGHT_SKIP"


class Refusal(Exception):
    """Stop provisioning; the message is the one line to print."""


def env_values(env: Mapping[str, str]) -> dict[str, str]:
    """Every PARAMETERS value as azd hands it to main.bicep: set and not blank, else the default."""
    return {name: (env.get(name) or "").strip() or default for name, (_, default) in PARAMETERS.items()}


def region_name(value: str) -> str:
    """A region as az names it ("East US" -> eastus)."""
    return value.strip().lower().replace(" ", "")
