"""infra/ (Bicep + azd) is keyless, least-privilege, and agrees with the code's settings.

The Bicep CLI cannot be installed here, so the files are parsed with pycep and the checks in
infra_checks.py follow names across modules. There are two entry points, main.bicep (azd, the
subscription) and resources.bicep (`az deployment group create`), and the resource checks hold for
both. The last tests break copies of infra/ to show each check really fails when its subject is
missing.
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


ENTRIES = [checks.MAIN_ENTRY, checks.GROUP_ENTRY]


@cache
def infra(entry: str = checks.MAIN_ENTRY) -> checks.Infra:
    return checks.Infra.load(INFRA, entry)


def sample_values() -> dict[str, str]:
    values: dict[str, str] = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    return values


def run_all(root: Path) -> list[str]:
    problems = []
    for entry in ENTRIES:
        loaded = checks.Infra.load(root, entry)
        problems += [
            *checks.check_roles(loaded),
            *checks.check_security(loaded),
            *checks.check_flex_consumption(loaded),
            *checks.check_app_settings(loaded, SETTINGS, sample_values()),
        ]
    loaded = checks.Infra.load(root)
    return [
        *problems,
        *checks.check_layers(loaded),
        *checks.check_azd(
            loaded, (root.parent / "azure.yaml").read_text(), (root / "main.parameters.json").read_text()
        ),
    ]


APP_MODULES = {"identity", "monitoring", "storage", "openAi", "rbac", "functionApp"}


def test_every_module_is_local_and_parses() -> None:
    loaded = infra()
    assert loaded.problems == []
    assert set(loaded.module_files) == {"resources", *(f"resources.{name}" for name in APP_MODULES)}
    assert "br/" not in "".join(f.text for f in loaded.module_files.values()) + loaded.main.text
    group = infra(checks.GROUP_ENTRY)
    assert group.problems == []
    assert set(group.module_files) == APP_MODULES


def test_main_bicep_only_creates_the_group_and_passes_everything_through_resources_bicep() -> None:
    assert checks.check_layers(infra()) == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_role_assignments_are_exactly_the_expected_ones_each_on_one_resource(entry: str) -> None:
    assert checks.check_roles(infra(entry)) == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_producer_gets_only_its_four_roles_each_on_one_queue_or_container(entry: str) -> None:
    loaded = infra(entry)
    producer = sorted(
        (
            loaded.file(scope).resources[checks.body(resource)["scope"]]["type"].rsplit("/", 1)[1],
            loaded.resource_name(scope, checks.body(resource)["scope"]),
            loaded.file(scope).vars[
                checks.body(resource)["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
            ]["value"],
        )
        for scope, symbol, resource in loaded.all_resources()
        if resource["type"] == checks.ROLE_ASSIGNMENT
        and loaded.resolve(scope, checks.body(resource)["properties"]["principalId"]) == "param:producerPrincipalId"
    )
    assert producer == sorted(
        [
            ("queues", "param:jobsQueueName", checks.ROLE_IDS["Storage Queue Data Message Sender"]),
            ("containers", "param:resultsContainerName", checks.ROLE_IDS["Storage Blob Data Reader"]),
            ("containers", "param:payloadsContainerName", checks.ROLE_IDS["Storage Blob Data Contributor"]),
            ("queues", "param:producerReplyQueueName", checks.ROLE_IDS["Storage Queue Data Message Processor"]),
        ]
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_storage_openai_app_insights_and_app_are_keyless_and_locked_down(entry: str) -> None:
    assert checks.check_security(infra(entry)) == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_function_app_is_flex_consumption_python_311_with_identity_based_deployment(entry: str) -> None:
    assert checks.check_flex_consumption(infra(entry)) == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_app_settings_match_shared_settings_and_the_local_sample(entry: str) -> None:
    assert checks.check_app_settings(infra(entry), SETTINGS, sample_values()) == []


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


def deploy_doc_section(heading: str) -> str:
    text = (REPO / "docs" / "deploy.md").read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_deploy_doc_has_the_resource_group_command_with_every_required_parameter() -> None:
    section = deploy_doc_section("Without azd")
    commands = re.findall(r"az deployment group create[^\n]*(?:\\\n[^\n]*)*", section)
    assert commands, "docs/deploy.md should show `az deployment group create ... -f infra/resources.bicep`"
    for command in commands:
        assert "-f infra/resources.bicep" in command or "--template-file infra/resources.bicep" in command
        for name in checks.GROUP_REQUIRED_PARAMS:
            assert f"{name}=" in command


def test_deploy_doc_grants_a_producer_exactly_the_roles_the_template_does() -> None:
    section = deploy_doc_section("Giving a producer service access")
    by_hand = re.findall(r'--role "([^"]+)" --scope "\$ACCOUNT_ID/(\S+)"', section)
    scopes = {
        "jobs queue": "queueServices/default/queues/jobs",
        "results container": "blobServices/default/containers/results",
        "payloads container": "blobServices/default/containers/job-payloads",
        "reply queue": "queueServices/default/queues/job-replies",
    }
    expected = sorted((role, scopes[where]) for who, role, where in checks.EXPECTED_ROLES if who == "producer")
    assert sorted(by_hand) == expected


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
    "producer payloads role removed": (
        "app/rbac.bicep",
        lambda text: remove_block(text, "resource producerPayloadsWriter "),
        "missing role assignment: producer gets Storage Blob Data Contributor on the payloads container",
    ),
    "producer reply role removed": (
        "app/rbac.bicep",
        lambda text: remove_block(text, "resource producerReplyProcessor "),
        "missing role assignment: producer gets Storage Queue Data Message Processor on the reply queue",
    ),
    "producer payloads role on the results container": (
        "app/rbac.bicep",
        replace(
            "  name: guid(payloadsContainer.id, producerPrincipalId, storageBlobDataContributor)\n"
            "  scope: payloadsContainer\n",
            "  name: guid(resultsContainer.id, producerPrincipalId, storageBlobDataContributor)\n"
            "  scope: resultsContainer\n",
        ),
        "unexpected role assignment rbac.bicep:producerPayloadsWriter: producer gets Storage Blob Data Contributor "
        "on results container",
    ),
    "producer reply role widened to every queue of the account": (
        "app/rbac.bicep",
        replace("  scope: producerReplyQueue\n", "  scope: queueService\n"),
        "unexpected role assignment rbac.bicep:producerReplyProcessor: producer gets Storage Queue Data Message "
        "Processor on",
    ),
    "producer reply role on a queue that is never created": (
        "app/rbac.bicep",
        replace(" && contains(replyQueueNames, producerReplyQueueName)) {", ") {"),
        "rbac.bicep:producerReplyProcessor is scoped to",
    ),
    "producer reply role not conditional on the producer": (
        "app/rbac.bicep",
        replace("if ((!empty(producerPrincipalId)) && contains(", "if (contains("),
        "rbac.bicep:producerReplyProcessor: the producer role must be conditional",
    ),
    "producer reply queue default not a reply queue": (
        "resources.bicep",
        replace(
            "param producerReplyQueueName string = 'job-replies'", "param producerReplyQueueName string = 'replies'"
        ),
        "producerReplyQueueName defaults to 'replies', not one of replyQueueNames ['job-replies']",
    ),
    "producer sender role upgraded to Queue Data Contributor": (
        "app/rbac.bicep",
        replace(
            "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
            "storageQueueDataMessageSender)",
            "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
            "storageQueueDataContributor)",
        ),
        "unexpected role assignment rbac.bicep:producerQueueSender: producer gets Storage Queue Data Contributor "
        "on jobs queue",
    ),
    "rbac module deployed to the subscription": (
        "resources.bicep",
        replace(
            "module rbac 'app/rbac.bicep' = {\n  name: 'rbac'\n",
            "module rbac 'app/rbac.bicep' = {\n  name: 'rbac'\n  scope: subscription()\n",
        ),
        "resources.bicep module rbac deploys to subscription(null), not its own group",
    ),
    "resources module not scoped to the new group": (
        "main.bicep",
        replace("  name: 'resources'\n  scope: rg\n", "  name: 'resources'\n  scope: resourceGroup('shared')\n"),
        "main.bicep module resources must be scoped to the resource group it creates",
    ),
    "main.bicep does not pass the producer through": (
        "main.bicep",
        replace("    producerPrincipalId: producerPrincipalId\n", ""),
        "main.bicep does not pass producerPrincipalId to resources.bicep",
    ),
    "main.bicep default drifts from resources.bicep": (
        "main.bicep",
        replace("param maximumInstanceCount int = 10", "param maximumInstanceCount int = 50"),
        "parameter maximumInstanceCount differs between main.bicep and resources.bicep",
    ),
    "parameter only in resources.bicep": (
        "resources.bicep",
        replace("param principalId string = ''", "param principalId string = ''\nparam extra string = 'x'"),
        "parameter extra is declared in resources.bicep only",
    ),
    "resources.bicep location without a default": (
        "resources.bicep",
        replace("param location string = resourceGroup().location", "param location string"),
        "resources.bicep parameter location needs a default",
    ),
    "output not re-exported": (
        "main.bicep",
        replace("output PAYLOADS_CONTAINER string = resources.outputs.PAYLOADS_CONTAINER\n", ""),
        "main.bicep does not re-export resources.bicep output PAYLOADS_CONTAINER",
    ),
    "output computed in main.bicep instead of re-exported": (
        "main.bicep",
        replace(
            "output RESOURCE_GROUP string = resources.outputs.RESOURCE_GROUP",
            "output RESOURCE_GROUP string = rg.name",
        ),
        "main.bicep output RESOURCE_GROUP should be resources.outputs.RESOURCE_GROUP",
    ),
    "a resource created in main.bicep": (
        "main.bicep",
        replace(
            "module resources 'resources.bicep' = {",
            "resource extra 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {\n"
            "  name: 'id-extra'\n  location: location\n}\n\nmodule resources 'resources.bicep' = {",
        ),
        "main.bicep should create only the resource group",
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
        "resources.bicep",
        replace("    serviceName: 'worker'\n", "    serviceName: 'api'\n"),
        "the Function App needs tag azd-service-name=worker (azure.yaml), has api",
    ),
    "default drifts from the sample": (
        "main.bicep",
        replace("param jobsQueueName string = 'jobs'", "param jobsQueueName string = 'work'"),
        "JOBS_QUEUE: main.bicep default 'work' != local.settings.sample.json 'jobs'",
    ),
    "resources.bicep default drifts from the sample": (
        "resources.bicep",
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


def test_orphaned_claim_check_payloads_expire() -> None:
    # The worker deletes each payload after its result; a lifecycle rule catches the rest.
    storage = re.sub(r"\s+", " ", (INFRA / "app" / "storage.bicep").read_text())
    assert "Microsoft.Storage/storageAccounts/managementPolicies@" in storage
    assert "prefixMatch: [ '${payloadsContainerName}/' ]" in storage
    assert re.search(r"delete: \{ daysAfterModificationGreaterThan: \d+ \}", storage)
