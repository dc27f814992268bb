"""Unit tests of the failure policy's error mapping: errors built by hand -> verdicts (plain values)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest
from azure.core.exceptions import ServiceRequestError

from shared.policy import GiveUp, RetryLater, Transient, classify
from shared.routing import ModelUnavailable
from shared.settings import Settings

RUNTIME: Any = SimpleNamespace(
    identity={"oid": "1111-oid", "appid": "2222-app"},
    settings=Settings.from_env(
        {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "d"}
    ),
)


def status_error(cls: type[openai.APIStatusError], status: int, body: dict[str, Any], **headers: str) -> Exception:
    request = httpx2.Request("POST", "https://res.openai.azure.com/openai/deployments/d/chat/completions")
    response = httpx2.Response(status, json=body, headers=headers, request=request)
    message = body.get("error", {}).get("message") or body.get("message", "")
    return cls(message, response=response, body=body.get("error", body))


def test_permission_denied_names_principal_and_role() -> None:
    exc = status_error(openai.AuthenticationError, 401, {"error": {"code": "PermissionDenied", "message": "nope"}})
    verdict = classify(exc, RUNTIME)
    assert isinstance(verdict, RetryLater) and verdict.reason == "permission_denied"
    assert "1111-oid" in verdict.message and "Cognitive Services OpenAI User" in verdict.message
    assert "az role assignment create" in verdict.message


def test_403_permission_denied_is_the_same_case() -> None:
    exc = status_error(openai.PermissionDeniedError, 403, {"error": {"code": "PermissionDenied", "message": "no"}})
    assert isinstance(classify(exc, RUNTIME), RetryLater)


def test_wrong_audience_fails_at_once_naming_the_scope() -> None:
    body = {"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid, audience is incorrect"}
    verdict = classify(status_error(openai.AuthenticationError, 401, body), RUNTIME)
    assert isinstance(verdict, GiveUp) and verdict.code == "token_rejected"
    assert "https://cognitiveservices.azure.com/.default" in verdict.message


@pytest.mark.parametrize(
    ("headers", "delay"), [({"retry-after-ms": "150000"}, 150.0), ({"retry-after": "42"}, 42.0), ({}, 30.0)]
)
def test_throttle_uses_the_advertised_wait(headers: dict[str, str], delay: float) -> None:
    exc = status_error(openai.RateLimitError, 429, {"error": {"code": "429", "message": "slow down"}}, **headers)
    verdict = classify(exc, RUNTIME)
    assert isinstance(verdict, RetryLater) and verdict.reason == "throttled" and verdict.delay == delay


def test_content_filter_and_missing_deployment_are_invalid() -> None:
    filtered = status_error(openai.BadRequestError, 400, {"error": {"code": "content_filter", "message": "x"}})
    missing = status_error(openai.NotFoundError, 404, {"error": {"code": "DeploymentNotFound", "message": "x"}})
    assert classify(filtered, RUNTIME) == GiveUp(
        "content_filter", "the prompt was blocked by Azure OpenAI's content filter"
    )
    assert isinstance(verdict := classify(missing, RUNTIME), GiveUp) and verdict.code == "deployment_not_found"


@pytest.mark.parametrize("status", [500, 503, 408])
def test_server_errors_are_an_outage_waited_out_on_the_queue(status: int) -> None:
    exc = status_error(openai.InternalServerError if status >= 500 else openai.APIStatusError, status, {"error": {}})
    verdict = classify(exc, RUNTIME)
    assert isinstance(verdict, RetryLater) and verdict.reason == "outage", verdict


def test_connection_errors_are_an_outage_and_storage_errors_transient() -> None:
    request = httpx2.Request("POST", "https://res.openai.azure.com/")
    for exc in (openai.APIConnectionError(request=request), openai.APITimeoutError(request=request)):
        verdict = classify(exc, RUNTIME)
        assert isinstance(verdict, RetryLater) and verdict.reason == "outage", verdict
    assert classify(ServiceRequestError("storage unreachable"), RUNTIME) == Transient()


def test_every_circuit_open_is_an_outage_with_the_time_to_the_next_probe() -> None:
    verdict = classify(ModelUnavailable(12.0, ["primary", "secondary"]), RUNTIME)
    assert isinstance(verdict, RetryLater) and (verdict.reason, verdict.delay) == ("outage", 12.0)
    assert "primary, secondary" in verdict.message


@pytest.mark.parametrize(
    ("code", "param", "advice"),
    [
        ("unsupported_value", "temperature", "accept only the default"),
        ("unsupported_parameter", "stop", "leave stop out"),
        ("unsupported_parameter", "max_tokens", "max_completion_tokens"),
        ("unsupported_parameter", "reasoning_effort", "only reasoning models"),
    ],
)
def test_unsupported_parameters_name_the_parameter_the_deployment_and_the_fix(
    code: str, param: str, advice: str
) -> None:
    body = {"error": {"code": code, "param": param, "message": f"Unsupported parameter: '{param}'", "type": "x"}}
    verdict = classify(status_error(openai.BadRequestError, 400, body), RUNTIME, deployment="gpt-5.4-mini")
    assert isinstance(verdict, GiveUp) and verdict.code == "unsupported_parameter"
    assert f"'{param}'" in verdict.message and "'gpt-5.4-mini'" in verdict.message and advice in verdict.message
