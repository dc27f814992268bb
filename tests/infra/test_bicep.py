"""infra/ (Bicep + azd) is keyless, least-privilege, and agrees with the code's settings.

The Bicep CLI cannot be installed here, so the files are parsed with pycep and the checks in
infra_checks.py follow names across modules. The last tests break copies of infra/ to show
each check really fails when its subject is missing.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from shared.settings import SETTINGS
from tests.infra import infra_checks as checks

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


@cache
def infra() -> checks.Infra:
    return checks.Infra.load(INFRA)


def sample_values() -> dict[str, str]:
    values: dict[str, str] = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    return values


def run_all(root: Path) -> list[str]:
    loaded = checks.Infra.load(root)
    return [
        *checks.check_roles(loaded),
        *checks.check_security(loaded),
        *checks.check_flex_consumption(loaded),
        *checks.check_app_settings(loaded, SETTINGS, sample_values()),
        *checks.check_azd(
            loaded, (root.parent / "azure.yaml").read_text(), (root / "main.parameters.json").read_text()
        ),
    ]


def test_every_module_is_local_and_parses() -> None:
    loaded = infra()
    assert loaded.problems == []
    assert set(loaded.module_files) == {"identity", "monitoring", "storage", "openAi", "rbac", "functionApp"}
    assert "br/" not in "".join(f.text for f in loaded.module_files.values()) + loaded.main.text


def test_role_assignments_are_exactly_the_expected_ones_each_on_one_resource() -> None:
    assert checks.check_roles(infra()) == []


def test_producer_gets_only_send_on_the_jobs_queue_and_read_on_the_results_container() -> None:
    loaded = infra()
    producer = [
        (symbol, loaded.file(scope).resources[checks.body(resource)["scope"]]["type"])
        for scope, symbol, resource in loaded.all_resources()
        if resource["type"] == checks.ROLE_ASSIGNMENT
        and loaded.resolve(scope, checks.body(resource)["properties"]["principalId"]) == "param:producerPrincipalId"
    ]
    assert sorted(t for _, t in producer) == [checks.CONTAINER, checks.QUEUE]


def test_storage_openai_app_insights_and_app_are_keyless_and_locked_down() -> None:
    assert checks.check_security(infra()) == []


def test_function_app_is_flex_consumption_python_311_with_identity_based_deployment() -> None:
    assert checks.check_flex_consumption(infra()) == []


def test_app_settings_match_shared_settings_and_the_local_sample() -> None:
    assert checks.check_app_settings(infra(), SETTINGS, sample_values()) == []


def test_azure_yaml_parameters_and_outputs_agree_with_main_bicep() -> None:
    azure_yaml = (REPO / "azure.yaml").read_text()
    parameters = (INFRA / "main.parameters.json").read_text()
    assert checks.check_azd(infra(), azure_yaml, parameters) == []


def test_maximum_instance_count_description_matches_host_json_concurrency() -> None:
    host_json = REPO / "host.json"
    if not host_json.exists():
        pytest.skip("host.json is not in the tree yet")
    queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
    batch = int(queues.get("batchSize", 16))
    threshold = int(queues.get("newBatchThreshold", batch // 2))
    assert checks.described_concurrency(infra()) == batch + threshold, (
        "main.bicep maximumInstanceCount's quota math must use host.json's batchSize + newBatchThreshold"
    )


DEPLOYED = ["function_app.py", "host.json", "requirements.txt", "shared/settings.py", "shared/jobs.py",
            "schemas/job.schema.json"]  # fmt: skip
NOT_DEPLOYED = [
    "tests/test_x.py", "tests/infra/test_bicep.py", "emulators/azurite.py", "infra/main.bicep", "infra/app/rbac.bicep",
    "node_modules/azurite/package.json", ".venv/bin/python", ".venv-infra/bin/checkov", "bench/run.py",
    "samples/job.json", "examples/x.py", "docs/deploy.md", ".ci/run", ".ci/checkov.sh", "README.md",
    "package.json", "package-lock.json", "Makefile", "local.settings.json", "local.settings.sample.json",
    "requirements-dev.txt", "requirements-infra.txt", "requirements-infra-test.txt", "pyproject.toml",
    "azure.yaml", ".azure/dev/.env", ".git/config", "shared/__pycache__/settings.cpython-311.pyc",
]  # fmt: skip


@pytest.mark.parametrize("path", DEPLOYED)
def test_funcignore_keeps_what_the_app_needs(path: str) -> None:
    assert not checks.funcignore_excludes((REPO / ".funcignore").read_text(), path)


@pytest.mark.parametrize("path", NOT_DEPLOYED)
def test_funcignore_leaves_out_tests_tools_and_docs(path: str) -> None:
    assert checks.funcignore_excludes((REPO / ".funcignore").read_text(), path)


def test_the_whole_tree_passes() -> None:
    assert run_all(INFRA) == []


# ------------------------------------------------------------ the checks catch breakage


def remove_block(text: str, start: str) -> str:
    """Remove the top-level declaration starting with `start` up to its closing `}` line."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i in range(first, len(lines)) if lines[i].rstrip() == "}")
    return "".join(lines[:first] + lines[last + 1 :])


def remove_setting(name: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        edited, count = re.subn(rf"\n\s*\{{\s*name: '{name}'\s*value: [^\n]*\n\s*\}}", "", text)
        assert count == 1
        return edited

    return edit


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)

    return edit


BREAKAGES: dict[str, tuple[str, Callable[[str], str], str]] = {
    "producer send role removed": (
        "app/rbac.bicep",
        lambda text: remove_block(text, "resource producerQueueSender "),
        "missing role assignment: producer gets Storage Queue Data Message Sender on the jobs queue",
    ),
    "role widened to the resource group": (
        "app/rbac.bicep",
        replace("  scope: openAi\n", ""),
        "has no scope: it would apply to the whole resource group/subscription",
    ),
    "producer role moved to the storage account": (
        "app/rbac.bicep",
        replace("  scope: resultsContainer\n", "  scope: storage\n"),
        "unexpected role assignment rbac.bicep:producerResultsReader: producer gets Storage Blob Data Reader on",
    ),
    "role id without its comment": (
        "app/rbac.bicep",
        replace("// Monitoring Metrics Publisher: send telemetry", "// send telemetry"),
        "needs a comment naming the role (Monitoring Metrics Publisher)",
    ),
    "user role not conditional": (
        "app/rbac.bicep",
        replace(
            "resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {",
            "resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {",
        ),
        "the user role must be conditional",
    ),
    "JOBS_QUEUE app setting removed": (
        "app/function.bicep",
        remove_setting("JOBS_QUEUE"),
        "app setting JOBS_QUEUE is read by shared/settings.py but not set in infra/",
    ),
    "connection string added": (
        "app/function.bicep",
        replace(
            "      appSettings: [\n",
            "      appSettings: [\n        {\n          name: 'AzureWebJobsStorage'\n"
            "          value: 'DefaultEndpointsProtocol=https;AccountKey=x'\n        }\n",
        ),
        "app setting AzureWebJobsStorage must not be set",
    ),
    "payloads container not created": (
        "app/storage.bicep",
        lambda text: remove_block(text, "resource payloadsContainer "),
        "app setting PAYLOADS_CONTAINER (param:payloadsContainerName) is not a container this deployment creates",
    ),
    "shared keys on": (
        "app/storage.bicep",
        replace("allowSharedKeyAccess: false", "allowSharedKeyAccess: true"),
        "properties.allowSharedKeyAccess is true, must be false",
    ),
    "OpenAI keys on": (
        "app/openai.bicep",
        replace("disableLocalAuth: true", "disableLocalAuth: false"),
        "properties.disableLocalAuth is false, must be true",
    ),
    "App Insights keys on": (
        "app/monitoring.bicep",
        replace("DisableLocalAuth: true", "DisableLocalAuth: false"),
        "properties.DisableLocalAuth is false, must be true",
    ),
    "python 3.12": (
        "app/function.bicep",
        replace(
            "  '3.11'\n])\nparam pythonVersion string = '3.11'", "  '3.12'\n])\nparam pythonVersion string = '3.12'"
        ),
        "functionAppConfig.runtime must be python 3.11",
    ),
    "azd tag renamed": (
        "main.bicep",
        replace("    serviceName: 'worker'\n", "    serviceName: 'api'\n"),
        "the Function App needs tag azd-service-name=worker (azure.yaml), has api",
    ),
    "default drifts from the sample": (
        "main.bicep",
        replace("param jobsQueueName string = 'jobs'", "param jobsQueueName string = 'work'"),
        "JOBS_QUEUE: main.bicep default 'work' != local.settings.sample.json 'jobs'",
    ),
    "required parameter not in main.parameters.json": (
        "main.bicep",
        replace("param principalId string = ''", "param principalId string\nparam newRequired string"),
        "main.bicep parameter newRequired has no default and main.parameters.json does not set it",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_checks_fail_on_a_broken_copy(tmp_path: Path, breakage: str) -> None:
    relative, edit, expected = BREAKAGES[breakage]
    root = tmp_path / "infra"
    shutil.copytree(INFRA, root)
    shutil.copy(REPO / "azure.yaml", tmp_path / "azure.yaml")
    target = root / relative
    target.write_text(edit(target.read_text()))

    problems = run_all(root)

    assert any(expected in problem for problem in problems), "\n".join(problems)
