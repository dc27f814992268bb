"""maximumInstanceCount from the quota (issue 23 item 4): resources.bicep's instanceCap and the preflight's
sizing.py agree on every input, and the hook says what it derived, takes an override, and refuses what the
template or Flex Consumption would refuse, before asking az where it can."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from emulators import az as az_standin
from tests.infra import infra_checks as checks
from tests.infra.test_preflight import MODELS, RUNTIMES, Hook, load_hook_module

REPO = Path(__file__).resolve().parents[2]
sizing = load_hook_module("sizing")


# ------------------------------------------------------------ the Bicep expression, evaluated


def evaluate(expr: Any, names: dict[str, Any], variables: dict[str, Any]) -> Any:
    """An ARM integer/bool expression as pycep parses it (fully parenthesised: pycep has no precedence):
    the operators and functions instanceCap uses."""
    if isinstance(expr, bool | int):
        return expr
    if isinstance(expr, str):
        if expr in names:
            return names[expr]
        return evaluate(variables[expr]["value"], names, variables)
    if "function" in expr:
        kind, args = expr["function"]["type"], list(expr["function"]["parameters"].values())
        values = [evaluate(arg, names, variables) for arg in args]
        functions = {"min": min, "max": max, "empty": lambda v: len(v) == 0}
        return functions[kind](*values)
    operator = expr["operator"]
    operands = operator["operands"]
    if operator["type"] == "conditional":
        taken = evaluate(operands["condition"], names, variables)
        return evaluate(operands["true_value" if taken else "false_value"], names, variables)
    a, b = (evaluate(operands[k], names, variables) for k in ("operand_1", "operand_2"))
    binary = {
        "add": lambda: a + b,
        "substract": lambda: a - b,  # pycep's spelling
        "multiply": lambda: a * b,
        "divide": lambda: a // b,  # ARM's div truncates; every operand here is positive
        "greater_than": lambda: a > b,
    }
    return binary[operator["type"]]()


def bicep_cap(**values: Any) -> int:
    resources = checks.Infra.load(REPO / "infra", checks.GROUP_ENTRY).main
    names = {name: param.get("default") for name, param in resources.params.items()}
    names.update(values)
    return int(evaluate("instanceCap", names, resources.vars))


def sizing_cap(
    capacity: int, secondary: int | None, tokens: int, seconds: int, override: int, host: tuple[int, int]
) -> int:
    pool = (("primary", capacity),) + ((("second account (x)", secondary),) if secondary is not None else ())
    return int(
        sizing.Sizing(
            capacities=pool,
            batch_size=host[0],
            new_batch_threshold=host[1],
            tokens_per_call=tokens,
            seconds_per_call=seconds,
            override=override,
        ).count
    )


def test_the_bicep_cap_is_the_preflights_for_every_input() -> None:
    host = sizing.host_concurrency()
    grid = itertools.product((1, 50, 1000, 30000), (None, 7), (1, 16, 1000, 100000), (1, 5, 60), (0, 3))
    checked = 0
    for capacity, secondary, tokens, seconds, override in grid:
        values = {
            "openAiDeploymentCapacity": capacity,
            "secondaryOpenAiLocation": "" if secondary is None else "westus",
            "secondaryOpenAiDeploymentCapacity": secondary or 50,
            "expectedTokensPerCall": tokens,
            "expectedSecondsPerCall": seconds,
            "maximumInstanceCount": override,
        }
        expected = sizing_cap(capacity, secondary, tokens, seconds, override, host)
        assert bicep_cap(**values) == expected, values
        checked += 1
    assert checked == 4 * 2 * 4 * 3 * 2
    # The grid reaches both clamps and the override.
    assert bicep_cap(expectedTokensPerCall=1, expectedSecondsPerCall=60) == 1000
    assert bicep_cap() == 1 and bicep_cap(maximumInstanceCount=7) == 7
    assert bicep_cap(openAiDeploymentCapacity=1000) == 4  # 1,000,000 TPM over 288,000 per instance


def test_the_bicep_concurrency_is_host_json() -> None:
    resources = checks.Infra.load(REPO / "infra", checks.GROUP_ENTRY).main
    assert resources.vars["instanceConcurrency"]["value"] == sum(sizing.host_concurrency())
    assert checks.described_concurrency(checks.Infra.load(REPO / "infra")) == sum(sizing.host_concurrency())


def test_main_bicep_passes_the_sizing_parameters_through() -> None:
    main = checks.Infra.load(REPO / "infra").main
    passed = checks.body(main.modules["resources"])["params"]
    for param, _ in sizing.PARAMETERS.values():
        assert passed[param] == param
        assert main.params[param]["type"] == "int"


def test_host_concurrency_takes_the_extensions_defaults(tmp_path: Path) -> None:
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"version": "2.0"}))
    assert sizing.host_concurrency(host) == (16, 8)
    host.write_text(json.dumps({"extensions": {"queues": {"batchSize": 10}}}))
    assert sizing.host_concurrency(host) == (10, 5)


# ------------------------------------------------------------ the hook


@pytest.fixture
def hook(azure_cli: Any) -> Hook:
    return Hook(azure_cli)


def sized(line: str) -> str:
    return line.split(" | ")[-1]


def test_a_bigger_quota_derives_more_instances_and_says_how(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_DEPLOYMENT_CAPACITY="1000")
    assert status == 0, line
    assert sized(line).startswith(
        "maximumInstanceCount = 4: the pool has 1,000,000 TPM (gpt-5.4-mini 1000 units); one instance's 24 slots "
        "(host.json batchSize 4 + newBatchThreshold 20) of 1,000-token calls lasting 5 s ask for 288,000 TPM: "
        "ceil(1,000,000 / 288,000) = 4. Override: azd env set MAXIMUM_INSTANCE_COUNT <n>"
    )


def test_small_slow_calls_need_more_instances_for_the_same_quota(hook: Hook) -> None:
    status, line = hook.run(
        AZURE_OPENAI_DEPLOYMENT_CAPACITY="500", EXPECTED_TOKENS_PER_CALL="200", EXPECTED_SECONDS_PER_CALL="20"
    )
    assert status == 0, line
    # 24 slots x 3 calls a minute x 200 tokens = 14,400 TPM an instance; 500,000 / 14,400 = 34.7.
    assert "ask for 14,400 TPM: ceil(500,000 / 14,400) = 35" in sized(line)
    assert sized(line).startswith("maximumInstanceCount = 35: ")


def test_the_derived_cap_stops_at_flex_consumptions_1000(hook: Hook) -> None:
    status, line = hook.run(EXPECTED_TOKENS_PER_CALL="1", EXPECTED_SECONDS_PER_CALL="60")
    assert status == 0, line
    assert sized(line).startswith("maximumInstanceCount = 1000: ")
    assert "ceil(50,000 / 24) = 1000" in sized(line)


def test_a_set_count_wins_and_the_line_says_what_the_quota_would_give(hook: Hook) -> None:
    status, line = hook.run(MAXIMUM_INSTANCE_COUNT="40")
    assert status == 0, line
    assert sized(line).startswith(
        "maximumInstanceCount = 40: set by MAXIMUM_INSTANCE_COUNT (derived from the quota it would be 1: "
    )
    assert "instances past 1 only wait in the pacing gate or meet 429s" in sized(line)
    assert sized(line).endswith("azd env set MAXIMUM_INSTANCE_COUNT 0 derives it")
    status, line = hook.run(MAXIMUM_INSTANCE_COUNT="1", AZURE_OPENAI_DEPLOYMENT_CAPACITY="1000")
    assert status == 0 and "instances past" not in sized(line)


@pytest.mark.parametrize(
    ("azd", "expected"),
    [
        ({"MAXIMUM_INSTANCE_COUNT": "1001"}, "MAXIMUM_INSTANCE_COUNT=1001 is not a whole number from 0 to 1000"),
        ({"MAXIMUM_INSTANCE_COUNT": "-1"}, "MAXIMUM_INSTANCE_COUNT=-1 is not a whole number from 0 to 1000"),
        ({"MAXIMUM_INSTANCE_COUNT": "ten"}, "MAXIMUM_INSTANCE_COUNT=ten is not a whole number"),
        ({"EXPECTED_TOKENS_PER_CALL": "0"}, "EXPECTED_TOKENS_PER_CALL=0 is not a whole number from 1 or more"),
        ({"EXPECTED_SECONDS_PER_CALL": "2.5"}, "EXPECTED_SECONDS_PER_CALL=2.5 is not a whole number from 1 or more"),
    ],
)
def test_bad_sizing_values_are_refused_before_asking_az(hook: Hook, azd: dict[str, str], expected: str) -> None:
    status, line = hook.run(**azd)
    assert status == 1
    assert line.startswith(f"preflight: {expected}")
    name = next(iter(azd))
    assert line.endswith(f"Fix: azd env set {name} {sizing.PARAMETERS[name][1]}")
    assert hook.invocations() == []


def with_flex_limits(lowest: int, highest: int) -> dict[str, Any]:
    """The default catalogue, its Flex Consumption listing giving the Stacks API's instance count range."""
    catalogue = az_standin.default_catalogue()
    for runtime in catalogue["flexRuntimes"]:
        runtime["sku"]["maximumInstanceCount"].update(
            lowestMaximumInstanceCount=lowest, highestMaximumInstanceCount=highest
        )
    return catalogue


def test_a_cap_below_the_regions_lowest_is_refused_naming_it(hook: Hook) -> None:
    # Flex Consumption's lowest maximum instance count per region is unconfirmed (it was 40 in preview):
    # the listing says, and the hook refuses a derived 1 there instead of letting ARM fail mid-deployment.
    hook.catalogue(with_flex_limits(40, 1000))
    status, line = hook.run()
    assert status == 1
    assert line == (
        "preflight: Function App: maximumInstanceCount 1 (derived from the quota) is outside the 40 to 1000 Flex "
        "Consumption takes in this region. Fix: azd env set MAXIMUM_INSTANCE_COUNT 40"
    )
    assert hook.invocations() == [*MODELS, RUNTIMES]
    status, line = hook.run(MAXIMUM_INSTANCE_COUNT="40")
    assert status == 0 and sized(line).startswith("maximumInstanceCount = 40: set by MAXIMUM_INSTANCE_COUNT")


def test_a_set_cap_above_the_regions_highest_is_refused(hook: Hook) -> None:
    hook.catalogue(with_flex_limits(1, 500))
    status, line = hook.run(MAXIMUM_INSTANCE_COUNT="800")
    assert status == 1
    assert line.endswith(
        "maximumInstanceCount 800 (set by MAXIMUM_INSTANCE_COUNT) is outside the 1 to 500 Flex Consumption takes "
        "in this region. Fix: azd env set MAXIMUM_INSTANCE_COUNT 500"
    )


def test_flex_limits_read_the_listed_version_and_default_when_absent() -> None:
    listing = with_flex_limits(40, 900)["flexRuntimes"]
    assert sizing.flex_limits(listing, "3.13") == (40, 900)
    assert sizing.flex_limits(listing, "3.9") == (sizing.LOWEST, sizing.HIGHEST)  # not listed
    assert sizing.flex_limits(az_standin.default_flex_runtimes(), "3.13") == (1, 1000)  # no range given
    assert sizing.flex_limits({"value": "not a list"}, "3.13") == (1, 1000)
