from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings

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
