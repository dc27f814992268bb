"""The doctor against a Foundry project endpoint (the emulator's ``/api/projects/<p>`` route): with the default
scope it says which scope to set, both from the endpoint (Scope) and from the service's 401 (Azure OpenAI); with
AZURE_OPENAI_TOKEN_SCOPE set it is healthy."""

from __future__ import annotations

from shared.constants import AI_FOUNDRY_SCOPE, COGNITIVE_SERVICES_SCOPE
from tests.conftest import OpenAIEmulator
from tests.doctor.conftest import Doctor

SET_IT = f"set AZURE_OPENAI_TOKEN_SCOPE={AI_FOUNDRY_SCOPE} in the app settings (now {COGNITIVE_SERVICES_SCOPE})"


def project(settings: dict[str, str], aoai: OpenAIEmulator) -> dict[str, str]:
    return {**settings, "AZURE_OPENAI_ENDPOINT": f"{aoai.endpoint}/api/projects/proj-1"}


def test_the_doctor_says_which_scope_a_project_endpoint_needs(
    doctor: Doctor, mi_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    result = doctor(project(mi_settings, aoai), "--json")
    assert result.code == 1
    assert result.reasons() == {"scope": "wrong_audience", "openai": "wrong_audience"}, result.out
    assert "Foundry project endpoint, which takes only https://ai.azure.com" in result["scope"]["detail"]
    assert result["scope"]["fix"] == SET_IT
    openai = result["openai"]
    assert "audience is incorrect (https://ai.azure.com)" in openai["detail"]  # the service's own words
    assert "the endpoint takes tokens for https://ai.azure.com" in openai["detail"]
    assert openai["fix"] == SET_IT


def test_the_doctor_is_healthy_once_the_scope_is_set(
    doctor: Doctor, mi_settings: dict[str, str], aoai: OpenAIEmulator
) -> None:
    result = doctor({**project(mi_settings, aoai), "AZURE_OPENAI_TOKEN_SCOPE": AI_FOUNDRY_SCOPE}, "--json")
    assert result.code == 0, result.out
    assert result.reasons() == {}
    assert f"token audience https://ai.azure.com (scope {AI_FOUNDRY_SCOPE})" in result["scope"]["detail"]
    assert aoai.stats()["by_route"] == {"POST /api/projects/{project}/openai/v1/chat/completions": 1}
