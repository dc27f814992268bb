"""The preflight and the API the worker calls the model through: main.bicep's ``openAiApi`` (azd: AZURE_OPENAI_API)
sets the AZURE_OPENAI_API app setting and every AZURE_OPENAI_POOL entry's ``api``, and the preflight refuses a
Responses-only model (shared/catalogue.py, the worker's own list) with ``chat`` before asking az anything."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any, get_args

import pytest

from emulators import az as az_standin
from shared.catalogue import RESPONSES_ONLY_MODELS
from shared.jobs import Api
from tests.conftest import AzureCli
from tests.infra import infra_checks as checks
from tests.infra.test_preflight import (
    MODELS,
    PREFLIGHT,
    REPO,
    RUNTIME_OK,
    RUNTIMES,
    TODAY,
    Hook,
    preflight_api,
    preflight_env,
)

INFRA = REPO / "infra"
PRO = "gpt-5-pro"
PRO_VERSION = "2025-10-06"


@pytest.fixture
def hook(azure_cli: AzureCli) -> Hook:
    return Hook(azure_cli)


def with_model(name: str, version: str) -> dict[str, Any]:
    """The default catalogue offering ``name`` ``version`` on GlobalStandard too, with its own quota."""
    catalogue = az_standin.default_catalogue()
    offer = copy.deepcopy(catalogue["models"][0])  # gpt-5.4-mini, GlobalStandard and GlobalBatch
    offer["model"].update(name=name, version=version)
    offer["model"]["skus"] = [{**offer["model"]["skus"][0], "usageName": f"OpenAI.GlobalStandard.{name}"}]
    usage = copy.deepcopy(catalogue["usages"][1])
    usage["name"]["value"] = f"OpenAI.GlobalStandard.{name}"
    catalogue["models"].append(offer)
    catalogue["usages"].append(usage)
    return catalogue


# ------------------------------------------------------------ the hook, as azd runs it


def test_a_responses_only_model_called_through_chat_is_refused_before_az_runs(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_MODEL_NAME=PRO, AZURE_OPENAI_MODEL_VERSION=PRO_VERSION)
    assert status == 1
    assert line == (
        f"preflight: {PRO} is served through the Responses API only (Chat Completions answer 400 "
        "OperationNotSupported) and AZURE_OPENAI_API is chat: the worker would refuse to start. "
        "Fix: azd env set AZURE_OPENAI_API responses"
    )
    assert hook.invocations() == []  # nothing asked of Azure for a deployment the app could not use


def test_a_responses_only_model_with_api_responses_goes_on_to_the_region_checks(hook: Hook) -> None:
    hook.catalogue(with_model(PRO, PRO_VERSION))
    status, line = hook.run(
        AZURE_OPENAI_MODEL_NAME=PRO, AZURE_OPENAI_MODEL_VERSION=PRO_VERSION, AZURE_OPENAI_API="responses"
    )
    assert status == 0, line
    assert line.startswith(f"preflight: ok: {PRO} {PRO_VERSION} GlobalStandard in eastus, capacity 50 of 1000")
    assert f" | {RUNTIME_OK} | maximumInstanceCount = " in line  # the Function App's parts, as for any model
    assert hook.invocations() == [*MODELS, RUNTIMES]


def test_the_default_model_passes_with_either_api(hook: Hook) -> None:
    _, default = hook.run()
    assert hook.run(AZURE_OPENAI_API="chat") == (0, default)
    assert hook.run(AZURE_OPENAI_API="responses") == (0, default)  # gpt-5.4-mini takes both APIs


def test_a_deployment_named_like_a_responses_only_model_is_refused_with_chat(hook: Hook) -> None:
    # The worker's settings judge a deployment by its name: gpt-5.4-mini deployed as "gpt-5.1-codex" would not start.
    status, line = hook.run(AZURE_OPENAI_DEPLOYMENT_NAME="gpt-5.1-codex")
    assert status == 1
    assert line.startswith("preflight: the deployment name gpt-5.1-codex reads as a Responses-only model")
    assert "Fix: azd env set AZURE_OPENAI_DEPLOYMENT_NAME <another name>" in line
    assert "azd env set AZURE_OPENAI_API responses" in line
    assert hook.invocations() == []


@pytest.mark.parametrize(("value", "fix"), [("Responses", "chat"), ("completions", "chat")])
def test_an_api_main_bicep_does_not_take_is_refused(hook: Hook, value: str, fix: str) -> None:
    status, line = hook.run(AZURE_OPENAI_API=value)
    assert status == 1
    assert line == (
        f"preflight: AZURE_OPENAI_API={value} is not an API main.bicep takes (chat, responses). "
        f"Fix: azd env set AZURE_OPENAI_API {fix}"
    )


def test_a_bad_api_for_a_responses_only_model_suggests_responses(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_MODEL_NAME="o3-pro", AZURE_OPENAI_API="resp")
    assert status == 1 and line.endswith("Fix: azd env set AZURE_OPENAI_API responses")


def test_the_hook_reads_the_catalogue_without_site_packages() -> None:
    # azd runs it with whatever python3 is on PATH, before the project's venv exists: -S leaves out every installed
    # package, -E every PYTHON* variable. The refusal proves shared/catalogue.py was read.
    done = subprocess.run(
        [sys.executable, "-S", "-E", str(PREFLIGHT), "--today", TODAY],
        env={"AZURE_LOCATION": "eastus", "AZURE_OPENAI_MODEL_NAME": "codex-mini", "PATH": ""},
        capture_output=True, text=True, timeout=60, check=False, cwd=INFRA,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("preflight: codex-mini is served through the Responses API only"), done.stderr


# ------------------------------------------------------------ the rule, and the template's side of it


@pytest.mark.parametrize("model", RESPONSES_ONLY_MODELS)
def test_every_catalogue_responses_only_model_needs_api_responses(model: str) -> None:
    with pytest.raises(preflight_env.Refusal, match="Fix: azd env set AZURE_OPENAI_API responses"):
        preflight_api.check_api("chat", model, model)
    preflight_api.check_api("responses", model, model)


def test_the_apis_are_the_workers_and_main_bicep_allows_exactly_them() -> None:
    assert get_args(Api) == preflight_api.APIS
    for entry in (checks.MAIN_ENTRY, checks.GROUP_ENTRY):
        param = checks.Infra.load(INFRA, entry, {checks.SWITCH: False}).main.params["openAiApi"]
        allowed = next(d["argument"] for d in param["decorators"] if d["type"] == "allowed")
        assert (tuple(allowed), param["default"]) == (preflight_api.APIS, "chat"), entry


@pytest.mark.parametrize("entry", [checks.MAIN_ENTRY, checks.GROUP_ENTRY])
@pytest.mark.parametrize("vnet", [False, True])
def test_the_app_setting_and_every_pool_entry_follow_the_api_parameter(entry: str, vnet: bool) -> None:
    infra = checks.Infra.load(INFRA, entry, {checks.SWITCH: vnet, "secondaryOpenAiLocation": "westus"})
    problems: list[str] = []
    scope, expr = infra.app_settings(problems)["AZURE_OPENAI_API"]
    assert infra.resolve(scope, expr) == "param:openAiApi"
    pool = checks.expected_pool(infra, problems)
    assert [e["api"] for e in pool] == ["param:openAiApi"] * 2 and problems == []
    assert checks.check_pool_and_batch(infra) == []
