"""`python -m shared doctor` with the batch lane on: the Azure OpenAI check also calls the Files and
Batches APIs through the same token and client, and says what to grant when they refuse."""

from __future__ import annotations

import httpx2
import openai

from shared.batch import CONTRIBUTOR_ROLE
from shared.doctor.batch_probe import _batch_failed
from shared.doctor.model import Context, Options
from shared.settings import Settings
from tests.conftest import DEPLOYMENT, OpenAIEmulator
from tests.doctor.conftest import Doctor

BATCH_DEPLOYMENT = "gpt-5.4-mini-batch"


def test_the_batch_lanes_apis_are_checked_when_it_is_on(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    aoai.add_batch_deployment(BATCH_DEPLOYMENT, model=DEPLOYMENT)
    result = doctor({**dev_settings, "BATCH_DEPLOYMENT": BATCH_DEPLOYMENT}, "--json")
    assert result.code == 0, result.out
    served = result["openai"]
    assert (served["status"], served["reason"]) == ("ok", "ok")
    assert f"the Files and Batches APIs answered for deployment {BATCH_DEPLOYMENT}" in served["detail"]
    routes = aoai.stats()["by_route"]
    assert routes.get("POST /openai/v1/files") == 1 and routes.get("GET /openai/v1/batches") == 1
    assert aoai.stats()["batch"]["files"] == 0  # the probe's file is deleted


def test_without_the_batch_lane_nothing_batch_is_called(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    result = doctor(dev_settings, "--json")
    assert result.code == 0 and "batch lane" not in result["openai"]["detail"], result.out
    assert not any("/files" in route or "/batches" in route for route in aoai.stats()["by_route"])


def test_batch_apis_refusing_is_a_failure_that_says_so(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    aoai.configure_batches(max_input_files=0, max_input_files_with_expiry=0)  # every upload refused
    result = doctor({**dev_settings, "BATCH_DEPLOYMENT": BATCH_DEPLOYMENT}, "--json")
    assert result.code == 1
    failed = result["openai"]
    assert (failed["status"], failed["reason"]) == ("fail", "batch_unavailable")
    assert "BATCH_DEPLOYMENT" in failed["fix"]


def test_a_missing_batch_role_names_the_contributor_role() -> None:
    request = httpx2.Request("POST", "https://aoai-x.openai.azure.com/openai/v1/files")
    body = {"code": "PermissionDenied", "message": "Principal does not have access to API/Operation."}
    denied = openai.PermissionDeniedError("Error code: 403", response=httpx2.Response(403, request=request), body=body)
    ctx = Context(env={}, options=Options(), source="environment", claims={"oid": "0bad"})
    settings = Settings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": "https://aoai-x.openai.azure.com",
            "AZURE_OPENAI_DEPLOYMENT": "d",
            "BATCH_DEPLOYMENT": "b",
        }
    )
    check = _batch_failed(ctx, settings, denied)
    assert (check.status, check.reason) == ("fail", "batch_role_missing")
    assert check.fix is not None and CONTRIBUTOR_ROLE in check.fix and "--assignee 0bad" in check.fix


def test_with_a_pool_the_batch_lanes_apis_are_checked_once(
    doctor: Doctor, dev_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    aoai.add_batch_deployment(BATCH_DEPLOYMENT, model=DEPLOYMENT)
    allowed = f"{DEPLOYMENT},{BATCH_DEPLOYMENT}"  # two deployments probed on the batch lane's own resource
    env = {**dev_settings, "BATCH_DEPLOYMENT": BATCH_DEPLOYMENT, "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": allowed}
    result = doctor(env, "--json")
    assert result.code == 0, result.out
    first, second = result["openai"]["detail"].splitlines()[1:]
    assert "batch lane" in first and "batch lane" not in second
    routes = aoai.stats()["by_route"]
    assert routes.get("POST /openai/v1/files") == 1 and routes.get("GET /openai/v1/batches") == 1
