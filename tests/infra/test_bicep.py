"""infra/ (Bicep + azd) is keyless, least-privilege, and agrees with the code's settings.

The Bicep CLI cannot be installed here, so the files are parsed with pycep and the checks in
infra_checks.py follow names across modules. There are two entry points, main.bicep (azd, the
subscription) and resources.bicep (`az deployment group create`), and the resource checks hold for
both, with private networking off and on (``vnetEnabled``: the checks evaluate the switch, so
each judges what that value deploys), and with the optional parts off (the defaults) and on (the
deployment pool's second Azure OpenAI account, ``secondaryOpenAiLocation``, and the batch lane's
GlobalBatch deployment, ``openAiBatchModelName``). The last tests break copies of infra/ to show
each check really fails when its subject is missing.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from shared.settings import SETTINGS, Settings
from tests.infra import infra_checks as checks

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


ENTRIES = [checks.MAIN_ENTRY, checks.GROUP_ENTRY]
# Every resource check runs on both entry points with private networking off and on, and with the
# optional parts off (defaults) and on.
VNET = [False, True]
# The optional parts on: the pool's second account in another region, and the batch lane.
POOL = {"secondaryOpenAiLocation": "swedencentral"}
BATCH = {"openAiBatchModelName": "gpt-5.4-mini"}
FULL = {**POOL, **BATCH}
VARIANTS = [
    pytest.param(entry, vnet, full, id=f"{entry}-vnet{'On' if vnet else 'Off'}{'-pool+batch' if full else ''}")
    for entry in ENTRIES
    for vnet in VNET
    for full in (False, True)
]


@cache
def infra(entry: str = checks.MAIN_ENTRY, vnet: bool = False, full: bool = False) -> checks.Infra:
    return checks.Infra.load(INFRA, entry, {checks.SWITCH: vnet, **(FULL if full else {})})


@cache
def with_values(entry: str, **values: bool | str) -> checks.Infra:
    return checks.Infra.load(INFRA, entry, values)


def sample_values() -> dict[str, str]:
    values: dict[str, str] = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    return values


# The resource checks taking only the loaded infra (check_app_settings also takes the settings).
CHECKS: list[Callable[[checks.Infra], list[str]]] = [
    checks.check_pool_and_batch,
    checks.check_roles,
    checks.check_security,
    checks.check_flex_consumption,
    checks.check_model_deployment,
    checks.check_network,
    checks.check_monitoring,
    checks.check_worker_only_store,
    checks.check_lifecycle,
]


def run_all(root: Path) -> list[str]:
    return list(problems_of(root))


def problems_of(root: Path) -> Iterator[str]:
    """Every check's problems with the copy of infra/ at ``root``, in each entry and switch setting, lazily: a test
    looking for one problem stops at it rather than loading the copy seven times."""
    for entry in ENTRIES:
        for vnet, extra in ((False, {}), (True, {}), (True, FULL)):
            loaded = checks.Infra.load(root, entry, {checks.SWITCH: vnet, **extra})
            for check in CHECKS:
                yield from check(loaded)
            yield from checks.check_app_settings(loaded, SETTINGS, sample_values())
    loaded = checks.Infra.load(root)
    yield from checks.check_layers(loaded)
    yield from checks.check_azd(
        loaded, (root.parent / "azure.yaml").read_text(), (root / "main.parameters.json").read_text()
    )


APP_MODULES = {
    "identity", "monitoring", "storage", "openAi", "secondaryOpenAi", "rbac", "functionApp", "network",
    "privateEndpoints", "alerts",
}  # fmt: skip


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


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_role_assignments_are_exactly_the_expected_ones_each_on_one_resource(
    entry: str, vnet: bool, full: bool
) -> None:
    assert checks.check_roles(infra(entry, vnet, full)) == []


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


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_producers_hold_no_role_on_the_worker_only_container_and_the_worker_writes_it(
    entry: str, vnet: bool, full: bool
) -> None:
    assert checks.check_worker_only_store(infra(entry, vnet, full)) == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_only_the_worker_and_the_operator_hold_a_blob_role_covering_the_worker_only_container(entry: str) -> None:
    # The retry store holds other producers' whole prompts: the worker writes it (Owner on the account);
    # the person running azd up reads it (`status`, `replay`, a worker on a laptop). A producer's blob roles
    # are on the results and payloads containers only, neither of which covers it.
    loaded = infra(entry)
    staging = checks.setting_containers(loaded, [])[checks.WORKER_ONLY_SETTING]
    assert staging.endswith(" param:stagingContainerName>")
    assert {(who, role) for _, who, role, _ in checks.roles_covering(loaded, staging, [])} == {
        ("app", "Storage Blob Data Owner"),
        ("user", "Storage Blob Data Contributor"),
    }


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_every_prefix_the_worker_leaves_blobs_under_has_a_delete_rule_outliving_its_use(
    entry: str, vnet: bool, full: bool
) -> None:
    assert checks.check_lifecycle(infra(entry, vnet, full)) == []


def test_lifecycle_retention_is_read_against_the_deployed_settings_and_the_code() -> None:
    loaded, sample = infra(), sample_values()
    bounds, rules = checks.lifecycle_bounds(loaded, []), checks.lifecycle_rules(loaded, [])
    payloads, staging = "{param:payloadsContainerName}/", "{param:stagingContainerName}/"
    retries = f"{staging}retries/"
    assert set(bounds) == set(rules) == {payloads, retries, f"{staging}jobs/", f"{staging}batches/"}
    # RETRY_MAX_SECONDS as deployed (function.bicep's default) is the sample's, which the code's default is.
    assert bounds[retries][0] == int(sample["RETRY_MAX_SECONDS"]) + checks.QUEUE_MESSAGE_TTL_SECONDS
    unset = {name: value for name, value in sample.items() if name != "RETRY_MAX_SECONDS"}
    assert Settings.from_env(unset).retry_max_seconds == int(sample["RETRY_MAX_SECONDS"])
    # The values docs/deploy.md states.
    assert {prefix: days for prefix, (days, _) in rules.items()} == {
        payloads: 8, retries: 8, f"{staging}jobs/": 21, f"{staging}batches/": 21
    }  # fmt: skip


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_storage_openai_app_insights_and_app_are_keyless_and_locked_down(entry: str, vnet: bool, full: bool) -> None:
    assert checks.check_security(infra(entry, vnet, full)) == []


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_function_app_is_flex_consumption_python_311_with_identity_based_deployment(
    entry: str, vnet: bool, full: bool
) -> None:
    assert checks.check_flex_consumption(infra(entry, vnet, full)) == []


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_app_settings_match_shared_settings_and_the_local_sample(entry: str, vnet: bool, full: bool) -> None:
    assert checks.check_app_settings(infra(entry, vnet, full), SETTINGS, sample_values()) == []


# ------------------------------------------------------------ private networking (vnetEnabled)


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_private_networking_follows_the_switch(entry: str, vnet: bool, full: bool) -> None:
    # On: public access off on storage and Azure OpenAI, the app in a delegated subnet, every
    # endpoint with its zone group and linked zones. Off: public access on, no network resources.
    assert checks.check_network(infra(entry, vnet, full)) == []


def test_private_networking_is_off_by_default_and_an_azd_value() -> None:
    assert infra().main.params[checks.SWITCH]["default"] is False
    assert checks.check_network(checks.Infra.load(INFRA)) == []  # loaded without a value: the default
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters[checks.SWITCH] == {"value": "${VNET_ENABLED=false}"}


def created(loaded: checks.Infra, type_: str) -> list[str]:
    return sorted(loaded.resource_name(scope, symbol) for _, scope, symbol, _ in loaded.created_of_type(type_))


@pytest.mark.parametrize("entry", ENTRIES)
def test_private_networking_adds_the_vnet_four_endpoints_and_five_zones_and_nothing_else(entry: str) -> None:
    off, on = infra(entry, False), infra(entry, True)
    added = sorted({r["type"] for key, (_, _, r) in on.created.items() if key not in off.created})
    assert added == sorted(
        [checks.PRIVATE_ENDPOINT, checks.ZONE_GROUP, checks.DNS_ZONE, checks.DNS_ZONE_LINK, checks.VNET]
    )
    assert set(off.created) < set(on.created)
    assert sorted(name.rsplit("-", 1)[1] for name in created(on, checks.PRIVATE_ENDPOINT)) == [
        "account", "blob", "queue", "table"
    ]  # fmt: skip
    assert created(on, checks.DNS_ZONE) == sorted(zone for zones in checks.PRIVATE_ENDPOINTS.values() for zone in zones)
    assert len(created(on, checks.DNS_ZONE_LINK)) == 5
    assert created(off, checks.VNET) == created(off, checks.PRIVATE_ENDPOINT) == created(off, checks.DNS_ZONE) == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_private_networking_leaves_the_roles_as_they_are(entry: str) -> None:
    def roles(loaded: checks.Infra) -> list[str]:
        return sorted(key for key, (_, _, r) in loaded.created.items() if r["type"] == checks.ROLE_ASSIGNMENT)

    assert roles(infra(entry, True)) == roles(infra(entry, False))
    assert len(roles(infra(entry, True))) == len(checks.EXPECTED_ROLES)


@pytest.mark.parametrize("entry", ENTRIES)
def test_model_deployment_is_explicit_parameterised_and_follows_new_default_versions(entry: str) -> None:
    assert checks.check_model_deployment(infra(entry)) == []


def test_default_model_is_gpt_5_4_mini_and_nothing_in_infra_names_gpt_4o_mini() -> None:
    defaults = {name: infra().main.params[name].get("default") for name in checks.MODEL_PARAMETERS.values()}
    assert defaults == {
        "openAiModelName": "gpt-5.4-mini",
        "openAiModelVersion": "2026-03-17",
        "openAiDeploymentSkuName": "GlobalStandard",
        "openAiDeploymentCapacity": 50,
    }
    # gpt-4o-mini 2024-07-18 is Deprecated: a new subscription can no longer deploy it.
    offenders = [
        str(path.relative_to(REPO))
        for path in INFRA.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and "gpt-4o-mini" in path.read_text()
    ]
    assert offenders == []


def test_azure_yaml_parameters_and_outputs_agree_with_main_bicep() -> None:
    azure_yaml = (REPO / "azure.yaml").read_text()
    parameters = (INFRA / "main.parameters.json").read_text()
    assert checks.check_azd(infra(), azure_yaml, parameters) == []


# ------------------------------------------------------------ the deployment pool and the batch lane


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_pool_setting_batch_deployment_and_outputs_follow_the_optional_parts(
    entry: str, vnet: bool, full: bool
) -> None:
    # AZURE_OPENAI_POOL lists the first deployment (priority 1) and, with a second account, its
    # deployment (priority 2); BATCH_DEPLOYMENT names the GlobalBatch deployment or is empty.
    assert checks.check_pool_and_batch(infra(entry, vnet, full)) == []


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_model_deployments_follow_their_parameters(entry: str, vnet: bool, full: bool) -> None:
    assert checks.check_model_deployment(infra(entry, vnet, full)) == []


def added(entry: str, before: dict[str, bool | str], after: dict[str, bool | str]) -> dict[str, list[str]]:
    """Resources `after` creates that `before` does not, by type (the names as resolved)."""
    old, new = with_values(entry, **before), with_values(entry, **after)
    assert set(old.created) <= set(new.created)
    found: dict[str, list[str]] = {}
    for key, (scope, symbol, resource) in new.created.items():
        if key not in old.created:
            found.setdefault(resource["type"], []).append(new.resource_name(scope, symbol))
    return found


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_defaults_have_no_second_account_and_no_batch_lane(entry: str) -> None:
    main = infra(entry).main
    assert {name: main.params[name]["default"] for name in checks.TEXT_SWITCHES} == {
        "secondaryOpenAiLocation": "",
        "openAiBatchModelName": "",
    }
    loaded = infra(entry)
    assert list(checks.openai_accounts(loaded, [])) == ["openai account"]
    assert checks.batch_deployments(loaded) == [] and loaded.created_of_type(checks.ROLE_DEFINITION) == []
    settings = loaded.app_settings([])
    assert loaded.resolve(*settings["BATCH_DEPLOYMENT"]) == ""
    scope, expr = settings["AZURE_OPENAI_POOL"]
    (pool,) = checks.structure(loaded, scope, expr["function"]["parameters"]["value_to_convert"])
    assert list(pool) == list(checks.POOL_KEYS) and (pool["name"], pool["priority"]) == ("primary", 1)


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_second_region_adds_an_account_its_deployment_and_the_openai_user_role_on_it(entry: str) -> None:
    new = added(entry, {}, POOL)
    assert sorted(new) == sorted([checks.OPENAI_ACCOUNT, checks.OPENAI_DEPLOYMENT, checks.ROLE_ASSIGNMENT])
    assert len(new[checks.OPENAI_ACCOUNT]) == len(new[checks.OPENAI_DEPLOYMENT]) == 1
    assert len(new[checks.ROLE_ASSIGNMENT]) == len(checks.POOL_ROLES) == 2  # the worker and the developer
    loaded = with_values(entry, **POOL)
    assert checks.expected_roles(loaded) == checks.EXPECTED_ROLES | checks.POOL_ROLES
    assert checks.check_roles(loaded) == []
    # The worker may call each account: Cognitive Services OpenAI User on both, and nothing more on the second.
    worker = {(role, where) for who, role, where in checks.expected_roles(loaded) if who == "app"}
    assert {where for role, where in worker if role == "Cognitive Services OpenAI User"} == {
        "openai account", "secondary openai account"
    }  # fmt: skip
    assert [role for role, where in worker if where == "secondary openai account"] == ["Cognitive Services OpenAI User"]


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_batch_lane_adds_a_globalbatch_deployment_a_custom_role_and_its_two_assignments(entry: str) -> None:
    new = added(entry, {}, BATCH)
    assert sorted(new) == sorted([checks.OPENAI_DEPLOYMENT, checks.ROLE_DEFINITION, checks.ROLE_ASSIGNMENT])
    loaded = with_values(entry, **BATCH)
    ((key, scope, _, deployment),) = checks.batch_deployments(loaded)
    config = checks.body(deployment)
    assert loaded.resolve(scope, config["sku"]["name"]) == "GlobalBatch"
    assert loaded.resolve(scope, config["properties"]["model"]["name"]) == "param:openAiBatchModelName"
    # On the worker's account (AZURE_OPENAI_ENDPOINT), never the pool's second.
    assert key.startswith(f"<{checks.openai_accounts(loaded, [])['openai account'][0]}/")
    assert checks.expected_roles(loaded) == checks.EXPECTED_ROLES | checks.BATCH_ROLES
    assert checks.check_roles(loaded) == []


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_batch_role_is_exactly_the_files_and_batches_data_actions(entry: str) -> None:
    loaded = with_values(entry, **BATCH)
    ((_, scope, _, definition),) = loaded.created_of_type(checks.ROLE_DEFINITION)
    properties = checks.body(definition)["properties"]
    (permissions,) = properties["permissions"]
    assert checks.structure(loaded, scope, permissions["dataActions"]) == checks.BATCH_DATA_ACTIONS
    assert not any("*" in action for action in checks.BATCH_DATA_ACTIONS)
    assert permissions["actions"] == permissions["notActions"] == permissions["notDataActions"] == []
    assert loaded.resolve(scope, properties["assignableScopes"]) == "[resource_group(null,null).id]"
    # Each assignment of it is on the one OpenAI account, never wider.
    assert {where for _, role, where in checks.BATCH_ROLES} == {"openai account"}


@pytest.mark.parametrize("entry", ENTRIES)
def test_with_private_networking_the_second_account_gets_its_own_endpoint_in_the_same_zones(entry: str) -> None:
    new = added(entry, {checks.SWITCH: True}, {checks.SWITCH: True, **POOL})
    assert sorted(new[checks.PRIVATE_ENDPOINT]) == ["pe-{" + new[checks.OPENAI_ACCOUNT][0] + "}-account"]
    assert checks.DNS_ZONE not in new and checks.DNS_ZONE_LINK not in new
    assert len(new[checks.ZONE_GROUP]) == 1


def test_staging_container_and_the_batch_settings_default_to_the_sample() -> None:
    loaded, sample = infra(), sample_values()
    assert "param:stagingContainerName" in loaded.created_names(checks.CONTAINER)
    params = loaded.main.params
    assert {name: str(params[name]["default"]) for name in (
        "stagingContainerName", "batchSubmitSchedule", "batchCollectSchedule", "batchOnFailure",
        "batchMaxRequestsPerFile", "batchMaxTokensPerFile", "modelOutageToleranceSeconds",
        "modelAdmissionWaitSeconds",
    )} == {
        "stagingContainerName": sample["STAGING_CONTAINER"], "batchSubmitSchedule": sample["BATCH_SUBMIT_SCHEDULE"],
        "batchCollectSchedule": sample["BATCH_COLLECT_SCHEDULE"], "batchOnFailure": sample["BATCH_ON_FAILURE"],
        "batchMaxRequestsPerFile": sample["BATCH_MAX_REQUESTS_PER_FILE"],
        "batchMaxTokensPerFile": sample["BATCH_MAX_TOKENS_PER_FILE"],
        "modelOutageToleranceSeconds": sample["MODEL_OUTAGE_TOLERANCE_SECONDS"],
        "modelAdmissionWaitSeconds": sample["MODEL_ADMISSION_WAIT_SECONDS"],
    }  # fmt: skip
    allowed = next(d["argument"] for d in params["batchOnFailure"]["decorators"] if d["type"] == "allowed")
    assert allowed == ["restage", "live"]
    assert sample["BATCH_DEPLOYMENT"] == sample["AZURE_OPENAI_POOL"] == ""  # batch lane off, today's pool


def test_the_optional_parts_are_azd_values() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert {name: parameters[name]["value"] for name in (
        "secondaryOpenAiLocation", "secondaryOpenAiDeploymentCapacity", "openAiBatchModelName",
        "openAiBatchModelVersion", "openAiBatchDeploymentName", "openAiBatchDeploymentCapacity",
    )} == {
        "secondaryOpenAiLocation": "${AZURE_OPENAI_SECONDARY_LOCATION}",
        "secondaryOpenAiDeploymentCapacity": "${AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY=50}",
        "openAiBatchModelName": "${AZURE_OPENAI_BATCH_MODEL_NAME}",
        "openAiBatchModelVersion": "${AZURE_OPENAI_BATCH_MODEL_VERSION=2026-03-17}",
        "openAiBatchDeploymentName": "${AZURE_OPENAI_BATCH_DEPLOYMENT_NAME}",
        "openAiBatchDeploymentCapacity": "${AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY=50}",
    }  # fmt: skip


def test_the_pool_setting_is_json_the_worker_reads() -> None:
    # string() of the array, as ARM writes it: compact JSON. Filled in with example endpoints, it is
    # a list of {name, endpoint, deployment, priority}, priorities 1 then 2, one endpoint each.
    loaded = with_values(checks.MAIN_ENTRY, **POOL)
    pool = checks.expected_pool(loaded, [])
    endpoints = {entry["endpoint"]: f"https://oai{i}.openai.azure.com/" for i, entry in enumerate(pool)}
    text = json.dumps(
        [{**entry, "endpoint": endpoints[entry["endpoint"]], "deployment": "gpt-5.4-mini"} for entry in pool],
        separators=(",", ":"),
    )
    parsed = json.loads(text)
    assert [(e["name"], e["priority"]) for e in parsed] == [("primary", 1), ("secondary", 2)]
    assert all(set(e) == set(checks.POOL_KEYS) and e["endpoint"].startswith("https://") for e in parsed)
    assert len({e["endpoint"] for e in parsed}) == 2 and len({e["deployment"] for e in parsed}) == 1


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


# ------------------------------------------------------------ monitoring (app/alerts.bicep)


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_alerts_diagnostics_and_workbook_are_wired_to_the_workspace_and_the_action_group(
    entry: str, vnet: bool, full: bool
) -> None:
    # Every alert notifies the one action group; the log alerts query the workspace (query, threshold,
    # windows); the metric alert counts 429s of the OpenAI account; Azure OpenAI and the queue service
    # log to the workspace; the workbook's JSON loads and each panel names its metric.
    assert checks.check_monitoring(infra(entry, vnet, full)) == []


def alerts_module(loaded: checks.Infra) -> str:
    return next(scope for scope, file in loaded.module_files.items() if file.path.name == "alerts.bicep")


def metric_names() -> dict[str, str]:
    loaded = infra()
    names = checks.evaluate(loaded, alerts_module(loaded), checks.METRICS_VARIABLE)
    assert isinstance(names, dict)
    return names


def test_the_action_group_emails_only_when_an_address_is_given() -> None:
    loaded = infra()
    ((_, scope, _, group),) = loaded.created_of_type(checks.ACTION_GROUP)
    receivers = loaded.resolve(scope, checks.body(group)["properties"]["emailReceivers"])
    assert receivers.startswith("if(empty(param:alertEmail),[],[{name: email,emailAddress: param:alertEmail,")
    assert loaded.main.params["alertEmail"]["default"] == ""
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["alertEmail"] == {"value": "${ALERT_EMAIL}"}


def test_alert_thresholds_default_to_the_documented_values() -> None:
    defaults = {name: infra().main.params[name]["default"] for name in infra().main.params if name.startswith("alert")}
    assert defaults == {
        "alertEmail": "",
        "alertFailedJobsThreshold": 5,
        "alertQueueWaitP95Seconds": 300,
        "alertThrottledRequestsThreshold": 50,
        "alertFunctionErrorsThreshold": 5,
    }


# The workbook's placeholders, filled in by alerts.bicep: from the metrics variable, and the workspace.
WORKBOOK_PLACEHOLDERS = {
    "__JOBS_FINISHED__": "jobsFinished", "__QUEUE_WAIT__": "queueWait", "__REQUEUED__": "requeued",
    "__THROTTLED__": "throttled", "__QUEUE_DEPTH__": "queueDepth", "__QUEUE_AGE__": "queueAge",
    "__TOKEN_USAGE__": "tokenUsage",
}  # fmt: skip


def test_the_workbook_json_parses_and_every_panel_names_its_metric() -> None:
    # The file as stored (placeholders in), then as deployed (filled in).
    text = (INFRA / "app" / "workbook.json").read_text()
    assert set(re.findall(r"__[A-Z_]+__", json.dumps(json.loads(text)))) == {"__WORKSPACE_ID__", *WORKBOOK_PLACEHOLDERS}
    names = metric_names()
    for placeholder, key in WORKBOOK_PLACEHOLDERS.items():
        text = text.replace(placeholder, names[key])
    workspace = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/log"
    document = json.loads(text.replace("__WORKSPACE_ID__", workspace))
    assert checks.check_workbook_document(document, workspace, names, "workbook.json") == []
    alerts = (INFRA / "app" / "alerts.bicep").read_text()
    assert all(f"'{placeholder}', metrics.{key})" in alerts for placeholder, key in WORKBOOK_PLACEHOLDERS.items())


def test_metric_names_match_what_the_worker_emits() -> None:
    # The names live in ONE place (alerts.bicep var metrics); the worker's telemetry must use them.
    names = metric_names()
    assert names == {
        "jobsFinished": "worker.jobs.finished",
        "queueWait": "worker.jobs.queue_wait",
        "requeued": "worker.jobs.requeued",
        "throttled": "worker.model.throttled",
        "queueDepth": "worker.queue.depth",
        "queueAge": "worker.queue.oldest_message.age",
        "tokenUsage": "gen_ai.client.token.usage",
    }
    code = "\n".join(path.read_text() for path in (REPO / "shared" / "telemetry").rglob("*.py"))
    assert [name for name in names.values() if f'"{name}"' not in code] == []


def test_the_job_line_the_alerts_parse_is_the_one_the_worker_writes() -> None:
    worker = (REPO / "shared" / "delivery.py").read_text()  # the per-job line is written where a delivery ends
    assert '"job id=%s status=%s code=%s deployment=%s ' in worker


def test_telemetry_is_configured_once_by_the_python_worker_keylessly() -> None:
    loaded = infra()
    settings = loaded.app_settings([])
    resolved = {name: loaded.resolve(*settings[name]) for name in checks.HOST_SETTINGS}
    ((identity_key, *_),) = loaded.created_of_type(checks.IDENTITY)
    ((insights_key, *_),) = loaded.created_of_type(checks.APP_INSIGHTS)
    client_id = f"{identity_key}.properties.clientId"
    assert resolved == {
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={{{client_id}}};Authorization=AAD",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": f"{insights_key}.properties.ConnectionString",
        "AzureFunctionsJobHost__telemetryMode": "OpenTelemetry",
    }
    assert not set(settings) & checks.DOUBLE_TELEMETRY
    # The Metrics Publisher role, which Entra ingestion needs, is the app's, on App Insights only.
    assert {(who, where) for who, role, where in checks.EXPECTED_ROLES if role == "Monitoring Metrics Publisher"} == {
        ("app", "app insights")
    }


def test_opentelemetry_mode_is_the_deployed_hosts_only() -> None:
    # PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY goes with the host's telemetryMode OpenTelemetry, set
    # by the app setting that overrides host.json (checked above), so that in Azure the host and the
    # worker export through one pipeline; host.json itself keeps the default, so `func start` without
    # Application Insights behaves as before (portal log stream etc. are not in play locally).
    host = json.loads((REPO / "host.json").read_text())
    assert "telemetryMode" not in host


DEPLOYED = ["function_app.py", "host.json", "requirements.txt", "shared/settings/__init__.py", "shared/jobs.py",
            "schemas/job.schema.json"]  # fmt: skip
NOT_DEPLOYED = [
    "tests/test_x.py", "tests/infra/test_bicep.py", "emulators/azurite.py", "infra/main.bicep", "infra/app/rbac.bicep",
    "node_modules/azurite/package.json", ".venv/bin/python", ".venv-infra/bin/checkov", "bench/run.py",
    "samples/job.json", "examples/x.py", "docs/deploy.md", ".ci/run", ".ci/checkov.sh", "README.md",
    "package.json", "package-lock.json", "Makefile", "local.settings.json", "local.settings.sample.json",
    "requirements-dev.txt", "requirements-infra.txt", "requirements-infra-test.txt", "pyproject.toml",
    "azure.yaml", ".azure/dev/.env", ".git/config", "shared/__pycache__/settings.cpython-311.pyc",
    "infra/hooks/preflight.py", ".venv-3.12/bin/python", ".venv-3.13/lib/python3.13/site-packages/x.py",
    "mkdocs.yml", "site/index.html", "site/assets/javascripts/bundle.js", "docs/settings_table.py",
    "requirements-docs.txt",
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


def broken_copy(folder: Path, relative: str, edit: Callable[[str], str]) -> Path:
    """A copy of infra/ in `folder` with one file (relative to infra/) edited; its infra/ folder."""
    root = folder / "infra"
    shutil.copytree(INFRA, root)
    target = root / relative
    target.write_text(edit(target.read_text()))
    return root


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
        replace("param maximumInstanceCount int = 0", "param maximumInstanceCount int = 50"),
        "parameter maximumInstanceCount differs between main.bicep and resources.bicep",
    ),
    "the Function App's cap ignores the parameter and the quota": (
        "resources.bicep",
        replace("    maximumInstanceCount: instanceCap\n", "    maximumInstanceCount: 100\n"),
        "scaleAndConcurrency.maximumInstanceCount must be the main.bicep parameter maximumInstanceCount when set",
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
        "app setting JOBS_QUEUE is read by shared/settings/ but not set in infra/",
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
    "python version hard-coded": (
        "app/function.bicep",
        replace("        version: pythonVersion\n", "        version: '3.13'\n"),
        "functionAppConfig.runtime.version must be the pythonVersion parameter, is 3.13",
    ),
    "python version not passed down": (
        "resources.bicep",
        replace("    pythonVersion: pythonVersion\n", "    pythonVersion: '3.12'\n"),
        "functionAppConfig.runtime.version must be the pythonVersion parameter, is 3.12",
    ),
    "not a python version allowed": (
        "main.bicep",
        replace("  '3.14'\n])\n@description('Python version", "  'latest'\n])\n@description('Python version"),
        "pythonVersion allows 'latest', which is not a Python version",
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
    "model version left to the service": (
        "app/openai.bicep",
        replace("      version: modelVersion\n", ""),
        "openai.bicep:deployment sets no properties.model.version",
    ),
    "deployment pinned until its version expires": (
        "app/openai.bicep",
        replace(
            "versionUpgradeOption: 'OnceNewDefaultVersionAvailable'",
            "versionUpgradeOption: 'OnceCurrentVersionExpired'",
        ),
        "versionUpgradeOption is OnceCurrentVersionExpired, must be OnceNewDefaultVersionAvailable",
    ),
    "capacity hard-coded": (
        "app/openai.bicep",
        replace("    capacity: capacity\n", "    capacity: 30\n"),
        "sku.capacity is 30, must be the main.bicep parameter openAiDeploymentCapacity",
    ),
    "model default drifts from the sample deployment": (
        "resources.bicep",
        replace("param openAiModelName string = 'gpt-5.4-mini'", "param openAiModelName string = 'gpt-5.4-nano'"),
        "AZURE_OPENAI_DEPLOYMENT: main.bicep default 'gpt-5.4-nano' != local.settings.sample.json 'gpt-5.4-mini'",
    ),
    "storage public access left on with vnetEnabled": (
        "app/storage.bicep",
        replace("publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'", "publicNetworkAccess: 'Enabled'"),
        "properties.publicNetworkAccess is Enabled with vnetEnabled=true, must be Disabled",
    ),
    "storage public access off even without a VNet": (
        "app/storage.bicep",
        replace("publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'", "publicNetworkAccess: 'Disabled'"),
        "properties.publicNetworkAccess is Disabled with vnetEnabled=false, must be Enabled",
    ),
    "storage firewall lets trusted services in with vnetEnabled": (
        "app/storage.bicep",
        replace("bypass: vnetEnabled ? 'None' : 'AzureServices'", "bypass: 'AzureServices'"),
        "properties.networkAcls.bypass is AzureServices with vnetEnabled=true, must be None",
    ),
    "OpenAI public access left on with vnetEnabled": (
        "app/openai.bicep",
        replace("publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'", "publicNetworkAccess: 'Enabled'"),
        "Microsoft.CognitiveServices/accounts account: properties.publicNetworkAccess is Enabled with vnetEnabled=true",
    ),
    "OpenAI firewall allowing all with vnetEnabled": (
        "app/openai.bicep",
        replace("defaultAction: vnetEnabled ? 'Deny' : 'Allow'", "defaultAction: 'Allow'"),
        "properties.networkAcls.defaultAction is Allow with vnetEnabled=true, must be Deny",
    ),
    "vnetEnabled not passed to openai.bicep": (
        "resources.bicep",
        replace(
            "    batchCapacity: openAiBatchDeploymentCapacity\n    vnetEnabled: vnetEnabled\n",
            "    batchCapacity: openAiBatchDeploymentCapacity\n",
        ),
        "properties.publicNetworkAccess is Enabled with vnetEnabled=true, must be Disabled",
    ),
    "queue endpoint removed": (
        "app/private-endpoints.bicep",
        lambda text: remove_block(remove_block(text, "resource queueZoneGroup "), "resource queueEndpoint "),
        "missing private endpoint: queue on the storage account",
    ),
    "blob endpoint without its zone group": (
        "app/private-endpoints.bicep",
        lambda text: remove_block(text, "resource blobZoneGroup "),
        "registers in zones none (no zone group), must be ['privatelink.blob.{environment().suffixes.storage}']",
    ),
    "OpenAI endpoint without the cognitiveservices zone": (
        "app/private-endpoints.bicep",
        replace(
            "      {\n        name: 'cognitiveservices'\n        properties: {\n"
            "          privateDnsZoneId: cognitiveServicesZoneId\n        }\n      }\n",
            "",
        ),
        "(account on the openai account) registers in zones ['privatelink.openai.azure.com'], must be",
    ),
    "table endpoint registered in the blob zone": (
        "app/private-endpoints.bicep",
        replace("privateDnsZoneId: tableZoneId", "privateDnsZoneId: blobZoneId"),
        "(table on the storage account) registers in zones ['privatelink.blob.",
    ),
    "storage zone name hard-coded for one cloud": (
        "app/network.bicep",
        replace("name: 'privatelink.queue.${storageSuffix}'", "name: 'privatelink.queue.core.windows.net'"),
        "registers in zones ['privatelink.queue.core.windows.net'], must be ['privatelink.queue.{environment()",
    ),
    "zone not linked to the VNet": (
        "app/network.bicep",
        lambda text: remove_block(text, "resource tableZoneLink "),
        "private DNS zone privatelink.table.{environment().suffixes.storage} is not linked to the VNet",
    ),
    "app subnet delegated to serverFarms": (
        "app/network.bicep",
        replace("serviceName: 'Microsoft.App/environments'", "serviceName: 'Microsoft.Web/serverFarms'"),
        "subnet snet-app of the Function App must be delegated to Microsoft.App/environments",
    ),
    "endpoints in the app subnet": (
        "resources.bicep",
        replace("subnetId: network.outputs.privateEndpointSubnetId", "subnetId: network.outputs.appSubnetId"),
        "must be in the VNet's private-endpoint subnet (not delegated), is in snet-app",
    ),
    "app not integrated with the VNet": (
        "app/function.bicep",
        replace("virtualNetworkSubnetId: vnetEnabled ? appSubnetId : null", "virtualNetworkSubnetId: null"),
        "the Function App's virtualNetworkSubnetId is null, must be a subnet of the VNet",
    ),
    "network deployed without the switch": (
        "resources.bicep",
        replace("module network 'app/network.bicep' = if (vnetEnabled) {", "module network 'app/network.bicep' = {"),
        "vnetEnabled=false still creates Microsoft.Network/virtualNetworks",
    ),
    "VNet output not emptied without the switch": (
        "resources.bicep",
        replace(
            "output AZURE_VNET_NAME string = vnetEnabled ? network.outputs.vnetName : ''",
            "output AZURE_VNET_NAME string = network.outputs.vnetName",
        ),
        "output AZURE_VNET_NAME is vnet-",
    ),
    "vnetEnabled azd default drifts": (
        "main.parameters.json",
        replace('"${VNET_ENABLED=false}"', '"${VNET_ENABLED=true}"'),
        "main.parameters.json default 'true' for vnetEnabled is not main.bicep's false",
    ),
    "telemetry switch removed": (
        "app/function.bicep",
        remove_setting("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"),
        "app setting PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is read by the Functions host / Python worker but "
        "not set in infra/",
    ),
    "telemetry auth string without the client id": (
        "app/function.bicep",
        replace("value: 'ClientId=${identityClientId};Authorization=AAD'", "value: 'Authorization=AAD'"),
        "app setting APPLICATIONINSIGHTS_AUTHENTICATION_STRING resolves to Authorization=AAD, expected ClientId=",
    ),
    "telemetry configured by the code as well": (
        "app/function.bicep",
        replace(
            "      appSettings: [\n",
            "      appSettings: [\n        {\n          name: 'PYTHON_ENABLE_OPENTELEMETRY'\n"
            "          value: 'true'\n        }\n",
        ),
        "app setting PYTHON_ENABLE_OPENTELEMETRY must not be set: the Python worker already sets up telemetry",
    ),
    "metrics publisher role on the storage account": (
        "app/rbac.bicep",
        replace(
            "  name: guid(appInsights.id, appPrincipalId, monitoringMetricsPublisher)\n  scope: appInsights\n",
            "  name: guid(storage.id, appPrincipalId, monitoringMetricsPublisher)\n  scope: storage\n",
        ),
        "unexpected role assignment rbac.bicep:appMetricsPublisher: app gets Monitoring Metrics Publisher on storage "
        "account",
    ),
    "log alert without the action group": (
        "app/alerts.bicep",
        replace("      actionGroups: [\n        actionGroup.id\n      ]\n", "      actionGroups: []\n"),
        "alerts.bicep:failedJobsAlert does not notify the action group",
    ),
    "log alert without a window": (
        "app/alerts.bicep",
        replace("    windowSize: 'PT15M'\n", ""),
        "alerts.bicep:failedJobsAlert: windowSize must be an ISO 8601 duration",
    ),
    "queue wait threshold hard-coded": (
        "app/alerts.bicep",
        replace("threshold: queueWaitP95Seconds", "threshold: 600"),
        "alerts.bicep:queueWaitAlert (queue wait p95): threshold is 600, must be param:alertQueueWaitP95Seconds",
    ),
    "poison alert removed": (
        "app/alerts.bicep",
        lambda text: remove_block(text, "resource poisonQueueAlert "),
        "log alert 'poison queue not empty' must be exactly one scheduled query rule, is none",
    ),
    "throttling alert counting every status code": (
        "app/alerts.bicep",
        replace("values: [\n                '429'\n", "values: [\n                '*'\n"),
        "alerts.bicep:throttlingAlert: dimensions must be exactly",
    ),
    "throttling alert on the storage account": (
        "app/alerts.bicep",
        replace("    scopes: [\n      openAi.id\n    ]\n", "    scopes: [\n      storage.id\n    ]\n"),
        "alerts.bicep:throttlingAlert: scopes is [<Microsoft.Storage/storageAccounts",
    ),
    "action group e-mails an empty address": (
        "app/alerts.bicep",
        replace("emailReceivers: empty(alertEmail) ? [] : [", "emailReceivers: ["),
        "alerts.bicep:actionGroup: emailReceivers must be [] when alertEmail is empty",
    ),
    "OpenAI usage logs not collected": (
        "app/alerts.bicep",
        replace("      {\n        category: 'AzureOpenAIRequestUsage'\n        enabled: true\n      }\n", ""),
        "alerts.bicep:openAiDiagnostics: logs categories are ['Audit', 'RequestResponse', 'Trace'], must be",
    ),
    "queue logs sent nowhere": (
        "app/alerts.bicep",
        replace(
            "  scope: queueService\n  properties: {\n    workspaceId: workspace.id\n",
            "  scope: queueService\n  properties: {\n",
        ),
        "alerts.bicep:queueDiagnostics must send to the Log Analytics workspace",
    ),
    "workbook panel loses its metric": (
        "app/workbook.json",
        replace('Name == \\"__TOKEN_USAGE__\\"', 'Name == \\"tokens\\"'),
        "workbook panel tokens-by-deployment does not mention ['Name == \"gen_ai.client.token.usage\"']",
    ),
    "workbook placeholder not filled in": (
        "app/alerts.bicep",
        replace(", '__QUEUE_AGE__', metrics.queueAge)", ", '__QUEUE_AGES__', metrics.queueAge)"),
        "placeholders left unfilled: ['__QUEUE_AGE__']",
    ),
    "metric renamed in one place only": (
        "app/alerts.bicep",
        replace("  queueDepth: 'worker.queue.depth'\n", "  depth: 'worker.queue.depth'\n"),
        "alerts.bicep needs var metrics naming the metrics",
    ),
    "required parameter not in main.parameters.json": (
        "main.bicep",
        replace("param principalId string = ''", "param principalId string\nparam newRequired string"),
        "main.bicep parameter newRequired has no default and main.parameters.json does not set it",
    ),
    "second account without the worker's role": (
        "app/rbac.bicep",
        lambda text: remove_block(text, "resource appSecondaryOpenAiUser "),
        "missing role assignment: app gets Cognitive Services OpenAI User on the secondary openai account",
    ),
    "the worker's second-account role put on the first account": (
        "app/rbac.bicep",
        replace(
            "  name: guid(secondaryOpenAi.id, appPrincipalId, cognitiveServicesOpenAiUser)\n  scope: secondaryOpenAi\n",
            "  name: guid(openAi.id, appPrincipalId, cognitiveServicesOpenAiUser)\n  scope: openAi\n",
        ),
        "rbac.bicep:appSecondaryOpenAiUser duplicates rbac.bicep:appOpenAiUser",
    ),
    "second account's role granted without a second account": (
        "app/rbac.bicep",
        replace(
            "resource appSecondaryOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = "
            "if (!empty(secondaryOpenAiAccountName)) {",
            "resource appSecondaryOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {",
        ),
        "rbac.bicep:appSecondaryOpenAiUser duplicates rbac.bicep:appOpenAiUser",
    ),
    "batch role widened to every OpenAI data action": (
        "app/rbac.bicep",
        replace(
            "  'Microsoft.CognitiveServices/accounts/OpenAI/files/write'\n",
            "  'Microsoft.CognitiveServices/accounts/OpenAI/*'\n",
        ),
        "(Azure OpenAI Batch): dataActions is ['Microsoft.CognitiveServices/accounts/OpenAI/*',",
    ),
    "batch role with a control-plane action": (
        "app/rbac.bicep",
        replace(
            "        actions: []\n",
            "        actions: [\n          'Microsoft.CognitiveServices/accounts/deployments/write'\n        ]\n",
        ),
        "(Azure OpenAI Batch): actions is ['Microsoft.CognitiveServices/accounts/deployments/write'], must be []",
    ),
    "batch role assignable in the whole subscription": (
        "app/rbac.bicep",
        replace(
            "    assignableScopes: [\n      resourceGroup().id\n    ]\n",
            "    assignableScopes: [\n      subscription().id\n    ]\n",
        ),
        "(Azure OpenAI Batch): assignableScopes is [subscription(null).id], must be [resource_group(null,null).id]",
    ),
    "batch role id without its comment": (
        "app/rbac.bicep",
        replace("// Azure OpenAI Batch (custom role defined below)", "// The custom role defined below"),
        "needs a comment naming the role (Azure OpenAI Batch)",
    ),
    "batch role defined without the batch lane": (
        "app/rbac.bicep",
        replace(
            "resource batchRoleDefinition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = "
            "if (!empty(batchDeploymentName)) {",
            "resource batchRoleDefinition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {",
        ),
        "1 custom role definition(s) ['rbac.bicep:batchRoleDefinition'], expected 0",
    ),
    "batch role assignment removed": (
        "app/rbac.bicep",
        lambda text: remove_block(text, "resource appBatch "),
        "missing role assignment: app gets Azure OpenAI Batch on the openai account",
    ),
    "batch deployment created without the batch lane": (
        "app/openai.bicep",
        replace(
            "resource batchDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = "
            "if (!empty(batchDeploymentName)) {",
            "resource batchDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {",
        ),
        "the openai account has 1 GlobalBatch deployment(s) with openAiBatchModelName empty, expected 0",
    ),
    "batch deployment as a GlobalStandard one": (
        "app/openai.bicep",
        replace("    name: 'GlobalBatch'\n", "    name: 'GlobalStandard'\n"),
        "the openai account has 0 GlobalBatch deployment(s) with openAiBatchModelName set, expected 1",
    ),
    "batch capacity hard-coded": (
        "app/openai.bicep",
        replace("    capacity: batchCapacity\n", "    capacity: 100\n"),
        "sku.capacity is 100, must be the main.bicep parameter openAiBatchDeploymentCapacity",
    ),
    "batch deployment on the second account too": (
        "resources.bicep",
        replace(
            "    capacity: secondaryOpenAiDeploymentCapacity\n",
            "    capacity: secondaryOpenAiDeploymentCapacity\n    batchDeploymentName: batchDeploymentName\n"
            "    batchModelName: openAiBatchModelName\n    batchModelVersion: openAiBatchModelVersion\n",
        ),
        "the secondary openai account has 1 GlobalBatch deployment(s) with openAiBatchModelName set, expected 0",
    ),
    "BATCH_DEPLOYMENT set to the model name": (
        "resources.bicep",
        replace(
            "    batchDeploymentName: openAi.outputs.batchDeploymentName\n    stagingContainerName:",
            "    batchDeploymentName: openAiBatchModelName\n    stagingContainerName:",
        ),
        "app setting BATCH_DEPLOYMENT is param:openAiBatchModelName, must be empty (no batch deployment)",
    ),
    "second account in the first one's region": (
        "resources.bicep",
        replace("    location: secondaryOpenAiLocation\n", "    location: location\n"),
        "the second Azure OpenAI account is in param:location, must be param:secondaryOpenAiLocation",
    ),
    "second account's capacity taken from the first": (
        "resources.bicep",
        replace("    capacity: secondaryOpenAiDeploymentCapacity\n", "    capacity: openAiDeploymentCapacity\n"),
        "sku.capacity is param:openAiDeploymentCapacity, must be the main.bicep parameter "
        "secondaryOpenAiDeploymentCapacity",
    ),
    "second account public with vnetEnabled": (
        "resources.bicep",
        replace(
            "    capacity: secondaryOpenAiDeploymentCapacity\n    vnetEnabled: vnetEnabled\n",
            "    capacity: secondaryOpenAiDeploymentCapacity\n",
        ),
        "Microsoft.CognitiveServices/accounts account: properties.publicNetworkAccess is Enabled with vnetEnabled=true",
    ),
    "second account's private endpoint removed": (
        "app/private-endpoints.bicep",
        lambda text: remove_block(
            remove_block(text, "resource secondaryOpenAiZoneGroup "), "resource secondaryOpenAiEndpoint "
        ),
        "missing private endpoint: account on the secondary openai account",
    ),
    "pool lists the second deployment first": (
        "resources.bicep",
        replace(
            "    deployment: secondaryOpenAi.outputs.deploymentName\n    priority: 2\n",
            "    deployment: secondaryOpenAi.outputs.deploymentName\n    priority: 1\n",
        ),
        "app setting AZURE_OPENAI_POOL is [",
    ),
    "pool's second entry on the first endpoint": (
        "resources.bicep",
        replace("    endpoint: secondaryOpenAi.outputs.endpoint\n", "    endpoint: openAi.outputs.endpoint\n"),
        "app setting AZURE_OPENAI_POOL is [",
    ),
    "pool always lists the second account": (
        "resources.bicep",
        replace("], empty(secondaryOpenAiLocation) ? [] : [\n", "], [\n"),
        "app setting AZURE_OPENAI_POOL is [",
    ),
    "pool setting not JSON": (
        "app/function.bicep",
        replace("          value: string(openAiPool)\n", "          value: join(openAiPool, ',')\n"),
        "app setting AZURE_OPENAI_POOL must be string(<array of entries>)",
    ),
    "staging container not created": (
        "app/storage.bicep",
        lambda text: remove_block(text, "resource stagingContainer "),
        "app setting STAGING_CONTAINER",
    ),
    "outage tolerance default drifts from the sample": (
        "resources.bicep",
        replace("param modelOutageToleranceSeconds int = 1800", "param modelOutageToleranceSeconds int = 600"),
        "MODEL_OUTAGE_TOLERANCE_SECONDS: main.bicep default '600' != local.settings.sample.json '1800'",
    ),
    "admission wait not passed through main.bicep": (
        "main.bicep",
        replace("    modelAdmissionWaitSeconds: modelAdmissionWaitSeconds\n", ""),
        "main.bicep does not pass modelAdmissionWaitSeconds to resources.bicep",
    ),
    "producer reads the whole blob service": (
        "app/rbac.bicep",
        replace("  scope: resultsContainer\n", "  scope: blobService\n"),
        "blobServices default>, which covers the worker-only container STAGING_CONTAINER",
    ),
    "producer payloads role on the storage account": (
        "app/rbac.bicep",
        replace("  scope: payloadsContainer\n", "  scope: storage\n"),
        "rbac.bicep:producerPayloadsWriter: producer gets Storage Blob Data Contributor on <Microsoft.Storage/",
    ),
    "producer payloads role on the staging container": (
        "resources.bicep",
        replace(
            "    payloadsContainerName: storage.outputs.payloadsContainerName\n    replyQueueNames",
            "    payloadsContainerName: storage.outputs.stagingContainerName\n    replyQueueNames",
        ),
        "containers param:stagingContainerName>, which covers the worker-only container STAGING_CONTAINER",
    ),
    "worker's blob role narrowed to the results container": (
        "app/rbac.bicep",
        replace(
            "  name: guid(storage.id, appPrincipalId, storageBlobDataOwner)\n  scope: storage\n",
            "  name: guid(resultsContainer.id, appPrincipalId, storageBlobDataOwner)\n  scope: resultsContainer\n",
        ),
        "the worker's identity holds no role that writes the worker-only container",
    ),
    "STAGING_CONTAINER set to the results container": (
        "app/function.bicep",
        replace(
            "          name: 'STAGING_CONTAINER'\n          value: stagingContainerName\n",
            "          name: 'STAGING_CONTAINER'\n          value: resultsContainerName\n",
        ),
        "app settings RESULTS_CONTAINER and STAGING_CONTAINER name one container",
    ),
    "retry state deleted after two days": (
        "app/storage.bicep",
        replace(
            "retries/' ]\n            }\n            actions: {\n              baseBlob: {\n"
            "                delete: { daysAfterModificationGreaterThan: 8 }",
            "retries/' ]\n            }\n            actions: {\n              baseBlob: {\n"
            "                delete: { daysAfterModificationGreaterThan: 2 }",
        ),
        "{param:stagingContainerName}/retries/* is deleted after 2 days, not longer than the 7.08 days",
    ),
    "payloads deleted after a week, while their message may still wait": (
        "app/storage.bicep",
        replace(
            "{payloadsContainerName}/' ]\n            }\n            actions: {\n              baseBlob: {\n"
            "                delete: { daysAfterModificationGreaterThan: 8 }",
            "{payloadsContainerName}/' ]\n            }\n            actions: {\n              baseBlob: {\n"
            "                delete: { daysAfterModificationGreaterThan: 7 }",
        ),
        "{param:payloadsContainerName}/* is deleted after 7 days, not longer than the 7.00 days",
    ),
    "manifests without a rule": (
        "app/storage.bicep",
        replace("'${stagingContainerName}/batches/'", "'${stagingContainerName}/batch/'"),
        "no lifecycle rule deletes {param:stagingContainerName}/batches/*",
    ),
    "a rule deleting results": (
        "app/storage.bicep",
        replace("'${payloadsContainerName}/'", "'${resultsContainerName}/'"),
        "deletes {param:resultsContainerName}/*, none of the worker's leftovers",
    ),
    "a rule with no prefix": (
        "app/storage.bicep",
        replace("              prefixMatch: [ '${stagingContainerName}/jobs/' ]\n", ""),
        "rule expire-staged-batch-jobs: no prefixMatch, so it deletes every blob of the account",
    ),
    "secondary endpoint output not emptied without a second account": (
        "resources.bicep",
        replace(
            "output AZURE_OPENAI_SECONDARY_ENDPOINT string = empty(secondaryOpenAiLocation) ? '' : "
            "secondaryOpenAi.outputs.endpoint",
            "output AZURE_OPENAI_SECONDARY_ENDPOINT string = secondaryOpenAi.outputs.endpoint",
        ),
        "output AZURE_OPENAI_SECONDARY_ENDPOINT is <",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_checks_fail_on_a_broken_copy(tmp_path: Path, breakage: str) -> None:
    relative, edit, expected = BREAKAGES[breakage]
    root = broken_copy(tmp_path, relative, edit)
    shutil.copy(REPO / "azure.yaml", tmp_path / "azure.yaml")

    found = any(expected in problem for problem in problems_of(root))

    assert found, "\n".join(run_all(root))
