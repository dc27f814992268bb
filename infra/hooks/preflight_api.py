"""The API check of the preflight: refuse a model the worker could not call through the API it is set to use.

A module of the azd preprovision hook (preflight.py); it reads the one list of Responses-only models
(shared/catalogue.py, standard library only too).
"""

from __future__ import annotations

import sys
from pathlib import Path

from preflight_env import Refusal

# The one list of Responses-only models, shared with the worker's settings and the emulator. azd runs the hook as a
# script, so the repository root is not on the path by itself (appended: it shadows nothing installed).
sys.path.append(str(Path(__file__).resolve().parents[2]))
from shared.catalogue import is_responses_only

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
