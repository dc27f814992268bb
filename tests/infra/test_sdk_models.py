"""Every property infra/ writes exists in Azure's own model of the resource, is writable and takes
the literal given (tests/infra/sdk_models.py): checked for every variant the other infra tests
evaluate, and shown to fail on broken copies of infra/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra import infra_checks as checks
from tests.infra import sdk_models
from tests.infra.summary import SUMMARY
from tests.infra.test_bicep import FULL, VARIANTS, broken_copy, infra, replace


@pytest.mark.parametrize(("entry", "vnet", "full"), VARIANTS)
def test_every_property_is_one_azure_defines_writable_and_of_an_allowed_value(
    entry: str, vnet: bool, full: bool
) -> None:
    assert sdk_models.check_sdk_models(infra(entry, vnet, full)) == []


def test_every_resource_type_has_its_sdk_model_and_the_api_versions_are_listed() -> None:
    rows = sdk_models.api_coverage(infra(checks.MAIN_ENTRY, True, True))
    lines = []
    for row in rows:
        if row.models is None:
            lines.append(
                f"{row.type}@{row.api}: NOT MODELLED ({sdk_models.UNMODELLED.get(row.type, 'no reason given')})"
            )
            continue
        models = row.models
        nearest = "" if models.api == row.api else f" (nearest to {row.api}: see NOT_IN_DECLARED)"
        lines.append(
            f"{row.type}@{row.api}: {models.pip} {models.version} {models.module}.{models.write.__name__}{nearest}"
        )
    SUMMARY["Azure SDK models the infra was checked against"] = lines
    assert [row.type for row in rows if row.models is None and row.type not in sdk_models.UNMODELLED] == []
    assert {row.type for row in rows} >= set(sdk_models.RESOURCE_MODELS)  # the table has nothing stale


def test_a_declared_api_version_the_sdk_lacks_is_held_to_that_version() -> None:
    # scheduledQueryRules@2021-08-01 is checked with the SDK's 2022-08-01-preview models, less what
    # 2021-08-01 does not have.
    models = sdk_models.models_for("Microsoft.Insights/scheduledQueryRules", "2021-08-01")
    assert models is not None and models.api == "2022-08-01-preview"
    node = sdk_models.node_of(models.write)
    assert "ruleResolveConfiguration" in (node.fields["properties"].node() or sdk_models.Node("")).fields


def add_after(anchor: str, text: str) -> Callable[[str], str]:
    def edit(source: str) -> str:
        assert anchor in source, anchor
        return source.replace(anchor, anchor + text, 1)

    return edit


# name -> (file under infra/, edit, the problem expected)
BREAKAGES: dict[str, tuple[str, Callable[[str], str], str]] = {
    "unknown property inside functionAppConfig": (
        "app/function.bicep",
        add_after("    functionAppConfig: {\n", "      notARealProperty: true\n"),
        "function.bicep:site (Microsoft.Web/sites@2024-04-01): properties.functionAppConfig.notARealProperty is "
        "not a property of FunctionAppConfig; closest: none (it has deployment, runtime, scaleAndConcurrency)",
    ),
    "misspelled storage account property": (
        "app/storage.bicep",
        replace("    allowSharedKeyAccess: false\n", "    allowSharedKeyAcces: false\n"),
        "storage.bicep:storage (Microsoft.Storage/storageAccounts@2023-05-01): properties.allowSharedKeyAcces is "
        "not a property of StorageAccountCreateParameters.properties; closest: allowSharedKeyAccess",
    ),
    "read-only provisioningState set on the storage account": (
        "app/storage.bicep",
        add_after("    allowSharedKeyAccess: false\n", "    provisioningState: 'Succeeded'\n"),
        "properties.provisioningState is read-only in StorageAccount.properties: Azure sets it, a template cannot",
    ),
    "read-only provisioningState set on the OpenAI account": (
        "app/openai.bicep",
        add_after("    disableLocalAuth: true\n", "    provisioningState: 'Succeeded'\n"),
        "openai.bicep:account (Microsoft.CognitiveServices/accounts@2024-10-01): properties.provisioningState is "
        "read-only in AccountProperties",
    ),
    "TLS version no model allows": (
        "app/storage.bicep",
        replace("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS9_9'"),
        "properties.minimumTlsVersion is 'TLS9_9', not one of MinimumTlsVersion ['TLS1_0', 'TLS1_1', 'TLS1_2', "
        "'TLS1_3']",
    ),
    "enum literal in one branch of a switch": (
        "app/storage.bicep",
        replace(
            "publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'",
            "publicNetworkAccess: vnetEnabled ? 'Off' : 'Enabled'",
        ),
        "properties.publicNetworkAccess is 'Off', not one of PublicNetworkAccess",
    ),
    "a parameter allowing a value the enum does not have": (
        "main.bicep",
        replace(
            "  'Group'\n])\n@description('Kind of principalId:",
            "  'Group'\n  'Robot'\n])\n@description('Kind of principalId:",
        ),
        "properties.principalType comes from parameter principalType, whose @allowed value 'Robot' is not one of "
        "PrincipalType",
    ),
    "a misspelled lifecycle rule property (the staged jobs' rule)": (
        "app/storage.bicep",
        replace("daysAfterModificationGreaterThan: 21", "daysAfterModifiedGreaterThan: 21"),
        "storage.bicep:lifecycle (Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01): "
        "properties.policy.rules[2].definition.actions.baseBlob.delete.daysAfterModifiedGreaterThan is not a "
        "property of DateAfterModification; closest: daysAfterModificationGreaterThan",
    ),
    "a bool given as a string": (
        "app/function.bicep",
        replace("    httpsOnly: true\n", "    httpsOnly: 'true'\n"),
        "function.bicep:site (Microsoft.Web/sites@2024-04-01): properties.httpsOnly is 'true': the model wants bool",
    ),
    "a property of a newer API version than the one declared": (
        "app/alerts.bicep",
        add_after("    autoMitigate: true\n", "    ruleResolveConfiguration: {\n      autoResolved: true\n    }\n"),
        "properties.ruleResolveConfiguration is not in API 2021-08-01: only the SDK's 2022-08-01-preview has it",
    ),
    "enum literal in a metric alert criterion (a subtype picked by criterionType)": (
        "app/alerts.bicep",
        replace("          timeAggregation: 'Total'\n", "          timeAggregation: 'Totl'\n"),
        "properties.criteria.allOf[0].timeAggregation is 'Totl', not one of AggregationTypeEnum",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_sdk_model_check_fails_on_a_broken_copy(tmp_path: Path, breakage: str) -> None:
    relative, edit, expected = BREAKAGES[breakage]
    root = broken_copy(tmp_path, relative, edit)

    problems = [
        problem
        for entry in (checks.MAIN_ENTRY, checks.GROUP_ENTRY)
        for vnet in (False, True)
        for problem in sdk_models.check_sdk_models(checks.Infra.load(root, entry, {checks.SWITCH: vnet, **FULL}))
    ]

    assert any(expected in problem for problem in problems), "\n".join(problems)
