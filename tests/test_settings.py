from __future__ import annotations

import pytest

from shared.errors import ConfigurationError, ContainerClashError
from shared.settings import Settings, StorageNames, is_project_endpoint, v1_base_url

BASE = {"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/", "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-mini"}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.openai_endpoint == "https://res.openai.azure.com"
    assert settings.allowed_deployments == ("gpt-4o-mini",)
    assert settings.jobs_queue == "jobs" and settings.poison_queue == "jobs-poison"
    assert settings.reply_queues_allowed == ()


def test_default_deployment_is_always_allowed() -> None:
    settings = Settings.from_env({**BASE, "AZURE_OPENAI_ALLOWED_DEPLOYMENTS": "gpt-4o, o3"})
    assert settings.allowed_deployments == ("gpt-4o-mini", "gpt-4o", "o3")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "AZURE_OPENAI_ENDPOINT"),
        ({"AZURE_OPENAI_ENDPOINT": "https://x"}, "AZURE_OPENAI_DEPLOYMENT"),
        ({**BASE, "AZURE_OPENAI_ENDPOINT": "http://example.com"}, "https"),
        ({**BASE, "JOBS_QUEUE": "Jobs_Queue"}, "JOBS_QUEUE"),
        ({**BASE, "REPLY_QUEUES_ALLOWED": "ok-queue,../evil"}, "REPLY_QUEUES_ALLOWED"),
        ({**BASE, "MAX_PROMPT_CHARS": "lots"}, "MAX_PROMPT_CHARS"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_env(env)


def test_development_storage_shorthand_means_azurite_default_ports() -> None:
    from shared.storage_clients import StorageEndpoints

    endpoints = StorageEndpoints.from_settings(env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert endpoints.connection_string is not None
    assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1" in endpoints.connection_string


def test_identity_based_storage_from_account_name() -> None:
    from shared.storage_clients import StorageEndpoints

    endpoints = StorageEndpoints.from_settings(env={"AzureWebJobsStorage__accountName": "stjobs"})
    assert endpoints.queue_url == "https://stjobs.queue.core.windows.net"
    assert endpoints.blob_url == "https://stjobs.blob.core.windows.net"
    assert endpoints.connection_string is None


def test_missing_storage_settings_say_what_to_set() -> None:
    from shared.storage_clients import StorageEndpoints

    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage__accountName"):
        StorageEndpoints.from_settings(env={})


def test_settings_page_and_sample_document_every_setting() -> None:
    import json

    from emulators.stack.environment import REPO
    from shared.settings import SETTINGS

    page = (REPO / "docs" / "settings.md").read_text()
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    for name in SETTINGS:
        assert f"| `{name}` |" in page, f"docs/settings.md (make settings-table) lacks {name}"
        assert name in sample, f"local.settings.sample.json lacks {name}"


def test_the_model_is_reached_on_the_v1_route_with_no_api_version() -> None:
    settings = Settings.from_env(BASE)
    assert settings.openai_base_url == "https://res.openai.azure.com/openai/v1/"
    assert not hasattr(settings, "api_version")


@pytest.mark.parametrize(
    ("containers", "named"),
    [
        ({"STAGING_CONTAINER": "results"}, ("RESULTS_CONTAINER", "STAGING_CONTAINER")),
        ({"STAGING_CONTAINER": "job-payloads"}, ("PAYLOADS_CONTAINER", "STAGING_CONTAINER")),
        ({"PAYLOADS_CONTAINER": "results"}, ("RESULTS_CONTAINER", "PAYLOADS_CONTAINER")),
        ({"RESULTS_CONTAINER": "shared", "STAGING_CONTAINER": "shared"}, ("RESULTS_CONTAINER", "STAGING_CONTAINER")),
        ({"RESULTS_CONTAINER": "staging"}, ("RESULTS_CONTAINER", "STAGING_CONTAINER")),  # the staging default
    ],
)
def test_two_container_settings_naming_one_container_are_refused_naming_both(
    containers: dict[str, str], named: tuple[str, str]
) -> None:
    # Producers read results and write payloads, and hold no role on the worker's own container: one
    # container under two of these settings would let them read the worker's state or write results.
    with pytest.raises(ContainerClashError) as raised:
        Settings.from_env({**BASE, **containers})
    assert raised.value.settings == named
    assert all(name in str(raised.value) for name in named)
    assert isinstance(raised.value, ConfigurationError)  # what every caller of from_env already handles


def test_a_producer_refuses_results_and_payloads_in_one_container_but_knows_nothing_of_staging() -> None:
    # A producer's settings (StorageNames) have no STAGING_CONTAINER: only the pair it uses is checked.
    with pytest.raises(ContainerClashError, match="RESULTS_CONTAINER and PAYLOADS_CONTAINER"):
        StorageNames.from_env({"RESULTS_CONTAINER": "box", "PAYLOADS_CONTAINER": "box"})
    assert StorageNames.from_env({"RESULTS_CONTAINER": "staging"}).results_container == "staging"


def test_three_distinct_containers_are_accepted() -> None:
    settings = Settings.from_env(
        {**BASE, "RESULTS_CONTAINER": "a-results", "PAYLOADS_CONTAINER": "a-payloads", "STAGING_CONTAINER": "a-own"}
    )
    assert (settings.results_container, settings.payloads_container, settings.staging_container) == (
        "a-results",
        "a-payloads",
        "a-own",
    )


# --- The token scope and Foundry project endpoints --------------------------------------------------------

PROJECT = "https://res.services.ai.azure.com/api/projects/proj"


def test_the_token_scope_defaults_to_azure_openais() -> None:
    assert Settings.from_env(BASE).token_scope == "https://cognitiveservices.azure.com/.default"
    foundry = Settings.from_env({**BASE, "AZURE_OPENAI_TOKEN_SCOPE": " https://ai.azure.com/.default "})
    assert foundry.token_scope == "https://ai.azure.com/.default"


@pytest.mark.parametrize(
    "scope",
    [
        "https://ai.azure.com",  # a resource, not a scope: get_token wants /.default
        "http://ai.azure.com/.default",
        "ai.azure.com/.default",
        "https:///.default",
        "https://ai.azure.com/.default?x=1",
        "https://ai.azure.com/.default https://cognitiveservices.azure.com/.default",
    ],
)
def test_a_bad_token_scope_names_the_setting_and_both_good_values(scope: str) -> None:
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_TOKEN_SCOPE") as caught:
        Settings.from_env({**BASE, "AZURE_OPENAI_TOKEN_SCOPE": scope})
    assert "https://cognitiveservices.azure.com/.default" in str(caught.value)
    assert "https://ai.azure.com/.default" in str(caught.value)


@pytest.mark.parametrize("given", [PROJECT, f"{PROJECT}/", f"{PROJECT}/openai/v1", f"{PROJECT}/openai/v1/"])
def test_a_project_endpoint_is_reached_on_its_own_v1_route(given: str) -> None:
    settings = Settings.from_env({**BASE, "AZURE_OPENAI_ENDPOINT": given})
    assert settings.openai_endpoint == PROJECT
    assert settings.openai_base_url == f"{PROJECT}/openai/v1/"
    assert is_project_endpoint(settings.openai_endpoint)
    assert not is_project_endpoint(Settings.from_env(BASE).openai_endpoint)


def test_a_resource_endpoint_given_with_its_v1_route_gets_it_once() -> None:
    pool = '[{"endpoint": "https://two.openai.azure.com/openai/v1/", "deployment": "d2"}]'
    settings = Settings.from_env(
        {**BASE, "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/openai/v1/", "AZURE_OPENAI_POOL": pool,
         "AZURE_OPENAI_DEPLOYMENT": "d2"}
    )  # fmt: skip
    assert settings.openai_base_url == "https://res.openai.azure.com/openai/v1/"
    assert [e.endpoint for e in settings.pool] == ["https://two.openai.azure.com"]
    assert v1_base_url(settings.pool[0].endpoint) == "https://two.openai.azure.com/openai/v1/"
