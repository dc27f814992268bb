"""infra/hooks/preflight.py, the azd preprovision hook, run as azd runs it against the `az` stand-in.

The stand-in (emulators/az.py) answers `az cognitiveservices model list / usage list / account
deployment show` with the real CLI's JSON shapes, from a catalogue each test can write; its default
is a region as the model lifecycle stood in late 2026. Dates are judged as of 2026-11-30 (--today),
so the default catalogue keeps meaning the same thing after its dates have passed.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from emulators import az as az_standin
from tests.conftest import AzureCli
from tests.infra import infra_checks as checks

REPO = Path(__file__).resolve().parents[2]
PREFLIGHT = REPO / "infra" / "hooks" / "preflight.py"
TODAY = "2026-11-30"
ACCOUNT = "oai-abc123"
# What the hook asks az for, as the stand-in logs it (the first three arguments), and the Function App's
# part of the pass line with the defaults (Python 3.13, AZURE_LOCATION eastus).
MODELS = ["cognitiveservices model list", "cognitiveservices usage list"]
RUNTIMES = "functionapp list-flexconsumption-runtimes --location"
RUNTIME_OK = "Function App: ok: Python 3.13 on Flex Consumption in eastus (end of life 2029-10-31)"
# The last part: maximumInstanceCount derived from the default quota (50 units) and host.json's 24 slots.
SIZED = (
    "maximumInstanceCount = 1: the pool has 50,000 TPM (gpt-5.4-mini 50 units); one instance's 24 slots "
    "(host.json batchSize 4 + newBatchThreshold 20) of 1,000-token calls lasting 5 s ask for 288,000 TPM: "
    "ceil(50,000 / 288,000) = 1. Override: azd env set MAXIMUM_INSTANCE_COUNT <n>; size it for your jobs: "
    "EXPECTED_TOKENS_PER_CALL, EXPECTED_SECONDS_PER_CALL"
)
APP_OK = f"{RUNTIME_OK} | {SIZED}"


def load_hook_module(name: str) -> ModuleType:
    """A module of infra/hooks by file, as the hook script finds its sibling (sizing.py) beside it."""
    spec = importlib.util.spec_from_file_location(name, PREFLIGHT.parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The hook's modules, each loaded after those it imports (the script finds them beside it on sys.path).
sizing = load_hook_module("sizing")
preflight_env = load_hook_module("preflight_env")
preflight_api = load_hook_module("preflight_api")
preflight_request = load_hook_module("preflight_request")
preflight_az = load_hook_module("preflight_az")
preflight_offers = load_hook_module("preflight_offers")
preflight_quota = load_hook_module("preflight_quota")
preflight_runtime = load_hook_module("preflight_runtime")
preflight = load_hook_module("preflight")


class Hook:
    """Runs the hook with an azd environment: the az stand-in on PATH, logged in, nothing else."""

    def __init__(self, cli: AzureCli) -> None:
        self.cli = cli

    def env(self, **azd: str) -> dict[str, str]:
        base = {name: self.cli.env[name] for name in ("PATH", "AZURE_CONFIG_DIR", "AZ_STANDIN_PYTHON")}
        return {**base, "AZURE_LOCATION": "eastus", "AZURE_SUBSCRIPTION_ID": az_standin.DEFAULT_SUBSCRIPTION, **azd}

    def run(self, *, env: dict[str, str] | None = None, today: str = TODAY, **azd: str) -> tuple[int, str]:
        """(exit status, the one line printed): anything else on stdout or stderr fails the test."""
        done = subprocess.run(
            [sys.executable, str(PREFLIGHT), "--today", today],
            env=env if env is not None else self.env(**azd),
            capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
        )  # fmt: skip
        lines = (done.stdout + done.stderr).splitlines()
        assert len(lines) == 1, f"one line expected, got {lines}"
        assert lines[0].startswith("preflight: ")
        assert (done.stderr if done.returncode else done.stdout).strip() == lines[0]
        return done.returncode, lines[0]

    def catalogue(self, catalogue: dict[str, Any]) -> None:
        (self.cli.config_dir / az_standin.CATALOGUE_FILE).write_text(json.dumps(catalogue))

    def invocations(self) -> list[str]:
        log = self.cli.config_dir / "invocations.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def hook(azure_cli: AzureCli) -> Hook:
    return Hook(azure_cli)


def catalogue_with(usage_name: str, **changes: float) -> dict[str, Any]:
    catalogue = az_standin.default_catalogue()
    for usage in catalogue["usages"]:
        if usage["name"]["value"] == usage_name:
            usage.update(changes)
    return catalogue


# ------------------------------------------------------------ pass


def test_the_defaults_pass_in_a_region_that_offers_them(hook: Hook) -> None:
    status, line = hook.run()
    assert status == 0
    assert line == (
        "preflight: ok: gpt-5.4-mini 2026-03-17 GlobalStandard in eastus, capacity 50 of 1000 units free "
        f"(GenerallyAvailable, retires 2027-09-21) | {APP_OK}"
    )
    assert hook.invocations() == [*MODELS, RUNTIMES]


def test_the_openai_location_is_the_region_checked(hook: Hook) -> None:
    catalogue = az_standin.default_catalogue()
    catalogue["locations"] = {"swedencentral": {"models": [], "usages": []}}
    hook.catalogue(catalogue)
    assert hook.run(AZURE_LOCATION="swedencentral")[0] == 1
    status, line = hook.run(AZURE_LOCATION="swedencentral", AZURE_OPENAI_LOCATION="eastus")
    assert status == 0 and "in eastus" in line


def test_a_legacy_model_still_deploys_with_a_note(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_MODEL_NAME="gpt-4.1-mini", AZURE_OPENAI_MODEL_VERSION="2025-04-14")
    assert status == 0
    assert "Legacy, retires 2027-04-14" in line and "plan a move" in line


def test_skip_switch_skips_without_running_az(hook: Hook) -> None:
    status, line = hook.run(PREFLIGHT_SKIP="1", AZURE_OPENAI_MODEL_NAME="no-such-model")
    assert status == 0 and "skipped (PREFLIGHT_SKIP is set)" in line
    assert hook.invocations() == []


def test_a_reprovision_counts_the_capacity_its_deployment_already_holds(hook: Hook) -> None:
    # The environment's own deployment holds 900 of the 1,000 units: asking for 900 again is no new quota.
    catalogue = catalogue_with("OpenAI.GlobalStandard.gpt-5.4-mini", currentValue=900.0)
    catalogue["deployments"] = [
        az_standin.deployment(
            account=ACCOUNT, name="gpt-5.4-mini", model="gpt-5.4-mini", version="2026-03-17",
            sku="GlobalStandard", capacity=900,
        )
    ]  # fmt: skip
    hook.catalogue(catalogue)
    provisioned = {
        "AZURE_OPENAI_ENDPOINT": f"https://{ACCOUNT}.openai.azure.com/",
        "AZURE_RESOURCE_GROUP": az_standin.STANDIN_RESOURCE_GROUP,
    }
    status, line = hook.run(env=hook.env(AZURE_OPENAI_DEPLOYMENT_CAPACITY="900", **provisioned))
    assert status == 0, line
    assert "capacity 900 of 1000 units free" in line and "the 900 units this environment's deployment" in line
    # Without the earlier deployment (a first provision), 900 does not fit in the 100 left.
    status, line = hook.run(AZURE_OPENAI_DEPLOYMENT_CAPACITY="900")
    assert status == 1 and "100 of 1000 units" in line


def test_a_deployment_auto_upgraded_to_another_version_is_named(hook: Hook) -> None:
    catalogue = az_standin.default_catalogue()
    catalogue["deployments"] = [
        az_standin.deployment(
            account=ACCOUNT, name="gpt-5.4-mini", model="gpt-5.4-mini", version="2026-09-01",
            sku="GlobalStandard", capacity=50,
        )
    ]  # fmt: skip
    hook.catalogue(catalogue)
    status, line = hook.run(
        AZURE_OPENAI_ENDPOINT=f"https://{ACCOUNT}.openai.azure.com/",
        AZURE_RESOURCE_GROUP=az_standin.STANDIN_RESOURCE_GROUP,
    )
    assert status == 0
    assert "the deployment runs 2026-09-01 (auto-upgraded)" in line
    assert "azd env set AZURE_OPENAI_MODEL_VERSION 2026-09-01" in line


# ------------------------------------------------------------ refusal 1: model or version not offered


def test_a_model_the_region_does_not_offer_is_refused_naming_alternatives(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_MODEL_NAME="gpt-9", AZURE_OPENAI_MODEL_VERSION="2027-01-01")
    assert status == 1
    assert line.startswith("preflight: gpt-9 2027-01-01 is not offered in eastus. Fix: ")
    assert (
        "azd env set AZURE_OPENAI_MODEL_NAME gpt-5.4-mini && azd env set AZURE_OPENAI_MODEL_VERSION 2026-03-17" in line
    )
    listed = re.search(r"units free: (.*)\)$", line)
    assert listed is not None
    # GA first, longest-lived first; never the deprecated one, the embeddings model or a GlobalBatch-only one.
    assert listed.group(1).split(", ")[:3] == [
        "gpt-5.4-mini 2026-03-17",
        "gpt-5.4-nano 2026-03-17",
        "gpt-5-mini 2025-08-07",
    ]
    assert "gpt-4o-mini" not in line and "embedding" not in line


def test_a_version_the_region_does_not_offer_is_refused_naming_the_versions_it_does(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_MODEL_VERSION="2025-01-01")
    assert status == 1
    assert line == (
        "preflight: gpt-5.4-mini 2025-01-01 is not offered in eastus (versions open for GlobalStandard here: "
        "2026-03-17). Fix: azd env set AZURE_OPENAI_MODEL_VERSION 2026-03-17"
    )


def test_a_sku_the_model_lacks_is_refused_naming_the_ones_it_has(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_DEPLOYMENT_SKU="DataZoneStandard")
    assert status == 1
    assert "DataZoneStandard is not offered for gpt-5.4-mini 2026-03-17 in eastus" in line
    assert "Fix: azd env set AZURE_OPENAI_DEPLOYMENT_SKU GlobalStandard" in line


# ------------------------------------------------------------ refusal 2: deprecated or retired


def test_a_deprecated_model_is_refused_naming_its_retirement_and_alternatives(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_MODEL_NAME="gpt-4o-mini", AZURE_OPENAI_MODEL_VERSION="2024-07-18")
    assert status == 1
    assert line.startswith(
        "preflight: gpt-4o-mini 2024-07-18 is Deprecated in eastus (closed to new deployments, retires 2027-04-14). "
        "Fix: azd env set AZURE_OPENAI_MODEL_NAME gpt-5.4-mini && azd env set AZURE_OPENAI_MODEL_VERSION 2026-03-17"
    )
    assert "gpt-5.4-nano 2026-03-17" in line
    assert line.endswith("may still deploy it: azd env set PREFLIGHT_SKIP 1")


def test_a_deprecating_model_is_refused_too(hook: Hook) -> None:
    catalogue = az_standin.default_catalogue()
    catalogue["models"][0]["model"]["lifecycleStatus"] = "Deprecating"
    hook.catalogue(catalogue)
    status, line = hook.run()
    assert status == 1
    assert "gpt-5.4-mini 2026-03-17 is Deprecating in eastus (closed to new deployments, retires 2027-09-21)" in line
    assert "azd env set AZURE_OPENAI_MODEL_NAME gpt-5.4-nano" in line


def test_a_model_past_its_inference_deprecation_date_is_refused(hook: Hook) -> None:
    # The same default catalogue, judged after 2027-09-21: every chat model in it has retired.
    status, line = hook.run(today="2027-10-01")
    assert status == 1
    assert line.startswith("preflight: gpt-5.4-mini 2026-03-17 was retired on 2027-09-21. Fix: another region")


def test_a_sku_past_its_deprecation_date_is_refused(hook: Hook) -> None:
    catalogue = az_standin.default_catalogue()
    nano = catalogue["models"][1]["model"]
    assert nano["name"] == "gpt-5.4-nano"
    nano["skus"][1]["deprecationDate"] = "2026-06-30T00:00:00Z"  # DataZoneStandard
    hook.catalogue(catalogue)
    status, line = hook.run(AZURE_OPENAI_MODEL_NAME="gpt-5.4-nano", AZURE_OPENAI_DEPLOYMENT_SKU="DataZoneStandard")
    assert status == 1
    assert "DataZoneStandard was retired on 2026-06-30 for gpt-5.4-nano 2026-03-17 in eastus" in line
    assert "azd env set AZURE_OPENAI_DEPLOYMENT_SKU GlobalStandard" in line


# ------------------------------------------------------------ refusal 3: capacity over the free quota


def test_capacity_over_the_quota_limit_is_refused_naming_what_fits(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_DEPLOYMENT_CAPACITY="1500")
    assert status == 1
    assert line.startswith(
        "preflight: capacity 1500 is over the free OpenAI.GlobalStandard.gpt-5.4-mini quota in eastus: "
        "1000 of 1000 units (thousands of tokens per minute) free. Fix, any one of: "
        "azd env set AZURE_OPENAI_DEPLOYMENT_CAPACITY 1000; ask for more quota (https://aka.ms/oai/quotaincrease); "
        "or azd env set AZURE_OPENAI_MODEL_NAME gpt-5.4-nano"
    )


def test_capacity_over_what_other_deployments_left_is_refused(hook: Hook) -> None:
    hook.catalogue(catalogue_with("OpenAI.GlobalStandard.gpt-5.4-mini", currentValue=980.0))
    status, line = hook.run()
    assert status == 1
    assert "capacity 50 is over the free OpenAI.GlobalStandard.gpt-5.4-mini quota in eastus: 20 of 1000" in line
    assert "azd env set AZURE_OPENAI_DEPLOYMENT_CAPACITY 20" in line


def test_no_quota_entry_at_all_means_no_quota(hook: Hook) -> None:
    catalogue = az_standin.default_catalogue()
    catalogue["usages"] = [u for u in catalogue["usages"] if "gpt-5.4-mini" not in u["name"]["value"]]
    hook.catalogue(catalogue)
    status, line = hook.run()
    assert status == 1
    assert "0 of 0 units" in line and "CAPACITY 0" not in line


def test_capacity_over_the_sku_maximum_is_refused(hook: Hook) -> None:
    hook.catalogue(catalogue_with("OpenAI.GlobalStandard.gpt-5.4-mini", limit=50000.0))
    status, line = hook.run(AZURE_OPENAI_DEPLOYMENT_CAPACITY="20000")
    assert status == 1
    assert "capacity 20000 is over the 10000 a GlobalStandard deployment of gpt-5.4-mini 2026-03-17 can have" in line


# ------------------------------------------------------------ no answer from az, bad input


def test_az_logged_out_is_one_line_naming_az_login(hook: Hook) -> None:
    hook.cli.logout()
    status, line = hook.run()
    assert status == 1
    assert line.startswith("preflight: the Azure CLI is not logged in (az cognitiveservices model list: Please run")
    assert "Fix: az login" in line and "azd env set PREFLIGHT_SKIP 1" in line


def test_az_missing_is_one_line_naming_the_install(hook: Hook, tmp_path: Path) -> None:
    env = {**hook.env(), "PATH": str(tmp_path)}
    status, line = hook.run(env=env)
    assert status == 1
    assert "the Azure CLI (az) is not on PATH" in line and "azd env set PREFLIGHT_SKIP 1" in line


def test_az_failing_otherwise_is_one_line_with_its_error(hook: Hook, tmp_path: Path) -> None:
    fake = tmp_path / "az"
    fake.write_text(
        "#!/bin/sh\necho 'ERROR: (AuthorizationFailed) The client does not have authorization' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    status, line = hook.run(env={**hook.env(), "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    assert status == 1
    assert line.startswith("preflight: az cognitiveservices model list failed: (AuthorizationFailed)")


@pytest.mark.parametrize(
    ("azd", "expected"),
    [
        ({"AZURE_LOCATION": ""}, "no region: AZURE_LOCATION is not set"),
        ({"AZURE_OPENAI_DEPLOYMENT_CAPACITY": "lots"}, "AZURE_OPENAI_DEPLOYMENT_CAPACITY=lots is not a whole number"),
        ({"AZURE_OPENAI_DEPLOYMENT_CAPACITY": "0"}, "AZURE_OPENAI_DEPLOYMENT_CAPACITY=0 is not a whole number"),
        ({"AZURE_OPENAI_DEPLOYMENT_SKU": "GlobalBatch"}, "AZURE_OPENAI_DEPLOYMENT_SKU=GlobalBatch is not a SKU"),
        ({"AZURE_PYTHON_VERSION": "3.10"}, "AZURE_PYTHON_VERSION=3.10 is not a Python version main.bicep deploys"),
        ({"AZURE_PYTHON_VERSION": "3.13.1"}, "Fix: azd env set AZURE_PYTHON_VERSION 3.13"),
    ],
)
def test_bad_azd_values_are_refused_before_asking_az(hook: Hook, azd: dict[str, str], expected: str) -> None:
    status, line = hook.run(env=hook.env(**azd))
    assert status == 1 and expected in line
    assert hook.invocations() == []


def test_the_subscription_azd_deploys_to_is_the_one_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="[]", stderr="")

    monkeypatch.setattr(preflight_az.subprocess, "run", fake_run)
    preflight_az.Az("az", "sub-1").json("cognitiveservices", "model", "list", "--location", "eastus")
    assert calls == [
        ["az", "cognitiveservices", "model", "list", "--location", "eastus", "--output", "json", "--only-show-errors",
         "--subscription", "sub-1"],
    ]  # fmt: skip


# ------------------------------------------------------------ the stand-in speaks the CLI's shapes


def test_the_standin_answers_with_the_cli_shapes(hook: Hook) -> None:
    def az(*args: str) -> Any:
        done = subprocess.run(["az", *args], env=hook.env(), capture_output=True, text=True, check=True, timeout=60)
        return json.loads(done.stdout)

    models = az("cognitiveservices", "model", "list", "--location", "eastus", "-o", "json")
    first = models[0]
    assert {"kind", "skuName", "model"} <= set(first)
    assert {"format", "name", "version", "lifecycleStatus", "deprecation", "skus"} <= set(first["model"])
    assert {"name", "usageName", "deprecationDate", "capacity"} <= set(first["model"]["skus"][0])
    usages = az("cognitiveservices", "usage", "list", "-l", "eastus")
    assert all({"name", "currentValue", "limit", "unit"} <= set(u) and "value" in u["name"] for u in usages)
    kinds = {(m["kind"], m["model"]["name"], m["model"]["version"], m["model"]["lifecycleStatus"]) for m in models}
    assert ("OpenAI", "gpt-4o-mini", "2024-07-18", "Deprecated") in kinds
    assert ("OpenAI", "gpt-4.1-mini", "2025-04-14", "Legacy") in kinds
    assert ("AIServices", "gpt-5.4-mini", "2026-03-17", "GenerallyAvailable") in kinds


def test_the_standin_keeps_account_commands_and_counts_every_run(hook: Hook) -> None:
    hook.run()
    done = subprocess.run(
        ["az", "account", "get-access-token", "--resource", "https://cognitiveservices.azure.com"],
        env=hook.env(), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(done.stdout)["tokenType"] == "Bearer"
    assert hook.cli.invocations() == 4


# ------------------------------------------------------------ the hook agrees with azure.yaml and the Bicep


def test_azure_yaml_runs_the_preflight_before_provisioning_on_every_os() -> None:
    hooks = checks.parse_simple_yaml((REPO / "azure.yaml").read_text())["hooks"]["preprovision"]
    assert hooks["posix"] == {"shell": "sh", "run": "python3 infra/hooks/preflight.py", "interactive": "true"}
    assert hooks["windows"]["shell"] == "pwsh"
    assert hooks["windows"]["run"] == "python infra/hooks/preflight.py; exit $LASTEXITCODE"


def test_preflight_inputs_and_defaults_are_main_bicep_and_main_parameters_json() -> None:
    main = checks.Infra.load(REPO / "infra").main
    parameters = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    for variable, (param, default) in preflight_env.PARAMETERS.items():
        assert str(main.params[param].get("default")) == default, param
        wanted = {f"${{{variable}={default}}}"} if default else {f"${{{variable}}}"}
        assert parameters[param]["value"] in wanted, param
    allowed = next(
        d["argument"] for d in main.params["openAiDeploymentSkuName"]["decorators"] if d["type"] == "allowed"
    )
    assert tuple(allowed) == preflight_request.ALLOWED_SKUS
    assert parameters["openAiLocation"]["value"] == "${AZURE_OPENAI_LOCATION}"


def test_the_default_catalogue_offers_the_bicep_default() -> None:
    catalogue = copy.deepcopy(az_standin.default_catalogue())
    today = preflight_az.parse_date(TODAY)
    region = preflight_offers.Region.parse("eastus", catalogue["models"], catalogue["usages"], today)
    request = preflight_request.Request.from_env({"AZURE_LOCATION": "eastus"})
    assert (request.model, request.version, request.sku, request.capacity) == (
        "gpt-5.4-mini", "2026-03-17", "GlobalStandard", 50,
    )  # fmt: skip
    assert request.deployment == "gpt-5.4-mini"
    assert preflight_quota.check(region, request).startswith("ok: ")


# ------------------------------------------------------------ private networking (VNET_ENABLED)


def test_private_networking_is_named_in_the_pass_line_and_asks_az_nothing_more(hook: Hook) -> None:
    status, line = hook.run(VNET_ENABLED="true")
    assert status == 0
    assert line.startswith("preflight: ok: gpt-5.4-mini 2026-03-17 GlobalStandard in eastus")
    assert "private networking on (VNET_ENABLED=true)" in line
    assert "az provider register -n Microsoft.App" in line
    assert hook.invocations() == [*MODELS, RUNTIMES]


def test_private_networking_off_leaves_the_pass_line_as_it_was(hook: Hook) -> None:
    _, default = hook.run()
    for value in ("false", "False", ""):
        status, line = hook.run(VNET_ENABLED=value)
        assert (status, line) == (0, default)
    assert "private networking" not in default


def test_a_vnet_value_that_is_not_a_bool_is_named_not_refused(hook: Hook) -> None:
    status, line = hook.run(VNET_ENABLED="yes")
    assert status == 0
    assert "VNET_ENABLED=yes is neither true nor false" in line and "azd env set VNET_ENABLED true" in line


def test_preflight_switches_are_main_bicep_bools_mapped_by_main_parameters_json() -> None:
    main = checks.Infra.load(REPO / "infra").main
    parameters = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    for variable, (param, default) in preflight_env.SWITCHES.items():
        assert main.params[param]["type"] == "bool", param
        assert json.dumps(main.params[param]["default"]) == default, param
        assert parameters[param]["value"] == f"${{{variable}={default}}}", param


# ------------------------------------------------------------ the pool's second region and the batch deployment


def with_region(location: str, catalogue: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default catalogue, and `location` answering as `catalogue` says (default: the same)."""
    base = az_standin.default_catalogue()
    region = catalogue if catalogue is not None else az_standin.default_catalogue()
    base["locations"] = {location: {"models": region["models"], "usages": region["usages"]}}
    return base


def test_a_second_region_is_checked_too_and_named_in_the_pass_line(hook: Hook) -> None:
    hook.catalogue(with_region("swedencentral"))
    status, line = hook.run(AZURE_OPENAI_SECONDARY_LOCATION="swedencentral")
    assert status == 0, line
    first, second, app, sized = line.split(" | ")
    assert first == (
        "preflight: ok: gpt-5.4-mini 2026-03-17 GlobalStandard in eastus, capacity 50 of 1000 units free "
        "(GenerallyAvailable, retires 2027-09-21)"
    )
    assert second.startswith(
        "second account (swedencentral): ok: gpt-5.4-mini 2026-03-17 GlobalStandard in swedencentral, capacity 50"
    )
    # The Function App's region is eastus (AZURE_LOCATION): asked once, after the models.
    assert app == RUNTIME_OK
    # Both accounts' quota feeds the instances: 100,000 TPM over 288,000 per instance is still 1.
    assert sized.startswith(
        "maximumInstanceCount = 1: the pool has 100,000 TPM (gpt-5.4-mini 50 units + second account "
        "(swedencentral) 50 units)"
    )
    assert hook.invocations() == [*MODELS, *MODELS, RUNTIMES]


def test_a_second_region_without_the_model_is_refused_naming_another_region(hook: Hook) -> None:
    hook.catalogue(with_region("swedencentral", {"models": [], "usages": []}))
    status, line = hook.run(AZURE_OPENAI_SECONDARY_LOCATION="swedencentral")
    assert status == 1
    assert line.startswith(
        "preflight: second account (swedencentral): gpt-5.4-mini 2026-03-17 is not offered in swedencentral. "
        "Fix: another region (azd env set AZURE_OPENAI_SECONDARY_LOCATION <region>)"
    )
    # Its model is the first deployment's: no advice to change it for the second alone.
    assert "AZURE_OPENAI_MODEL_NAME" not in line


def test_a_second_account_in_the_same_region_shares_the_quota(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_SECONDARY_LOCATION="eastus", AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY="960")
    assert status == 1
    assert line.startswith(
        "preflight: second account (eastus, the first one's region too: no regional fallback): capacity 960 is over "
        "the free OpenAI.GlobalStandard.gpt-5.4-mini quota in eastus, after the 50 units the deployment(s) above "
        "take from it: 950 of 1000 units"
    )
    assert "azd env set AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY 950" in line
    status, line = hook.run(AZURE_OPENAI_SECONDARY_LOCATION="eastus", AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY="950")
    assert status == 0 and "capacity 950 of 950 units free" in line


def test_a_reprovision_counts_what_the_second_deployment_already_holds(hook: Hook) -> None:
    catalogue = with_region("swedencentral", catalogue_with("OpenAI.GlobalStandard.gpt-5.4-mini", currentValue=990.0))
    catalogue["deployments"] = [
        az_standin.deployment(
            account="oai2-abc123", name="gpt-5.4-mini", model="gpt-5.4-mini", version="2026-03-17",
            sku="GlobalStandard", capacity=50,
        )
    ]  # fmt: skip
    hook.catalogue(catalogue)
    env = hook.env(
        AZURE_OPENAI_SECONDARY_LOCATION="swedencentral",
        AZURE_OPENAI_SECONDARY_ENDPOINT="https://oai2-abc123.openai.azure.com/",
        AZURE_RESOURCE_GROUP=az_standin.STANDIN_RESOURCE_GROUP,
    )
    status, line = hook.run(env=env)
    assert status == 0, line
    assert "second account (swedencentral): ok:" in line and "the 50 units this environment's deployment" in line


def test_the_batch_deployment_is_checked_against_the_globalbatch_quota(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_BATCH_MODEL_NAME="gpt-5.4-mini")
    assert status == 0, line
    assert line.endswith(
        " | batch deployment gpt-5.4-mini-batch: ok: gpt-5.4-mini 2026-03-17 GlobalBatch in eastus, capacity 50 of "
        f"5000 units free (GenerallyAvailable, retires 2027-09-21) | {APP_OK}"
    )
    # The first account's region: asked once.
    assert hook.invocations() == [*MODELS, RUNTIMES]


def test_a_batch_model_outside_the_batch_matrix_is_refused_naming_one_inside(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_BATCH_MODEL_NAME="gpt-5.4-nano")
    assert status == 1
    assert line.startswith(
        "preflight: batch deployment gpt-5.4-nano-batch: GlobalBatch is not offered for gpt-5.4-nano 2026-03-17 in "
        "eastus. Fix: azd env set AZURE_OPENAI_BATCH_MODEL_NAME gpt-5.4-mini && azd env set "
        "AZURE_OPENAI_BATCH_MODEL_VERSION 2026-03-17"
    )


def test_batch_capacity_over_its_quota_is_refused_in_its_own_unit(hook: Hook) -> None:
    status, line = hook.run(AZURE_OPENAI_BATCH_MODEL_NAME="gpt-5.4-mini", AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY="6000")
    assert status == 1
    assert "capacity 6000 is over the free OpenAI.GlobalBatch.gpt-5.4-mini quota in eastus: 5000 of 5000 units" in line
    assert "GlobalBatch quota counts enqueued tokens" in line
    assert "azd env set AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY 5000" in line
    assert "AZURE_OPENAI_DEPLOYMENT_SKU" not in line  # the batch SKU is not a choice


@pytest.mark.parametrize(
    ("azd", "expected"),
    [
        (
            {"AZURE_OPENAI_BATCH_MODEL_NAME": "gpt-5.4-mini", "AZURE_OPENAI_BATCH_DEPLOYMENT_NAME": "gpt-5.4-mini"},
            "the batch deployment would be named gpt-5.4-mini, as the live deployment is",
        ),
        (
            {"AZURE_OPENAI_SECONDARY_LOCATION": "swedencentral", "AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY": "0"},
            "AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY=0 is not a whole number",
        ),
        (
            {"AZURE_OPENAI_BATCH_MODEL_NAME": "gpt-5.4-mini", "AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY": "lots"},
            "AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY=lots is not a whole number",
        ),
    ],
)
def test_bad_values_for_the_optional_deployments_are_refused_before_asking_az(
    hook: Hook, azd: dict[str, str], expected: str
) -> None:
    status, line = hook.run(**azd)
    assert status == 1 and expected in line
    assert hook.invocations() == []


def test_the_batch_sku_is_the_one_openai_bicep_deploys() -> None:
    text = (REPO / "infra" / "app" / "openai.bicep").read_text()
    assert f"    name: '{preflight_request.BATCH_SKU}'\n" in text


# ------------------------------------------------------------ the Function App's Python on Flex Consumption


def flex_region(location: str, versions: dict[str, str | None]) -> dict[str, Any]:
    """The default catalogue, with `location` offering Flex Consumption exactly these Python versions."""
    catalogue = az_standin.default_catalogue()
    runtimes = [az_standin.flex_runtime("python", version, end) for version, end in versions.items()]
    catalogue["locations"] = {location: {"flexRuntimes": runtimes}}
    return catalogue


def test_a_python_version_the_region_does_not_offer_is_refused_naming_the_ones_it_does(hook: Hook) -> None:
    hook.catalogue(flex_region("westus", {"3.12": "2028-10-31", "3.11": "2027-10-31", "3.10": "2026-10-31"}))
    status, line = hook.run(AZURE_LOCATION="westus")
    assert status == 1
    assert line == (
        "preflight: Function App: Python 3.13 is not offered on Flex Consumption in westus. "
        "Fix: azd env set AZURE_PYTHON_VERSION 3.12 (offered here: 3.12, 3.11), or another region"
    )
    # The models were checked (and passed) first; the Function App's region is asked last.
    assert hook.invocations() == [*MODELS, RUNTIMES]


def test_the_function_app_region_is_azure_location_not_the_openai_one(hook: Hook) -> None:
    hook.catalogue(flex_region("westus", {"3.11": "2027-10-31"}))
    status, line = hook.run(AZURE_LOCATION="westus", AZURE_OPENAI_LOCATION="eastus")
    assert status == 1 and "Python 3.13 is not offered on Flex Consumption in westus" in line
    status, line = hook.run(AZURE_LOCATION="eastus", AZURE_OPENAI_LOCATION="westus")
    assert status == 0 and line.endswith(APP_OK)


def test_an_untested_version_the_region_offers_passes_with_a_note(hook: Hook) -> None:
    status, line = hook.run(AZURE_PYTHON_VERSION="3.14")
    assert status == 0
    assert line.endswith(
        " | Function App: ok: Python 3.14 on Flex Consumption in eastus (no end of life published; "
        f"this project's CI does not test 3.14 (README: Runtime)) | {SIZED}"
    )


def test_a_version_past_its_end_of_life_is_refused(hook: Hook) -> None:
    # Still listed by a region after its end of life (judged as of 2026-11-30).
    hook.catalogue(flex_region("eastus", {"3.14": None, "3.12": "2028-10-31", "3.11": "2026-10-31"}))
    status, line = hook.run(AZURE_PYTHON_VERSION="3.11")
    assert status == 1
    assert line == (
        "preflight: Function App: Python 3.11 reached end of life on 2026-10-31 on Flex Consumption in eastus. "
        "Fix: azd env set AZURE_PYTHON_VERSION 3.12 (offered here: 3.14, 3.12), or another region"
    )


def test_a_region_without_flex_consumption_python_is_refused_naming_another_region(hook: Hook) -> None:
    hook.catalogue(flex_region("westus", {}))
    status, line = hook.run(AZURE_LOCATION="westus")
    assert status == 1
    assert line == (
        "preflight: Function App: Flex Consumption in westus offers no Python version (not a Flex Consumption "
        "region: az functionapp list-flexconsumption-locations). Fix: azd env set AZURE_LOCATION <region>"
    )


def test_a_region_offering_only_versions_main_bicep_does_not_allow_is_refused(hook: Hook) -> None:
    hook.catalogue(flex_region("westus", {"3.10": "2026-10-31", "3.9": "2025-10-31"}))
    status, line = hook.run(AZURE_LOCATION="westus")
    assert status == 1
    assert line.endswith(
        "Fix: another region (azd env set AZURE_LOCATION <region>): none of 3.11, 3.12, 3.13, 3.14 is offered here"
    )


def test_the_runtime_listing_failing_is_one_line_with_its_error(hook: Hook, tmp_path: Path) -> None:
    # A real az for the models, failing only for functionapp (an older CLI without the command).
    real = shutil.which("az", path=hook.env()["PATH"])
    fake = tmp_path / "az"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = functionapp ]; then\n'
        "  echo \"ERROR: 'list-flexconsumption-runtimes' is misspelled or not recognized by the system.\" >&2\n"
        f'  exit 2\nfi\nexec {real} "$@"\n'
    )
    fake.chmod(0o755)
    status, line = hook.run(env={**hook.env(), "PATH": f"{tmp_path}{os.pathsep}{hook.env()['PATH']}"})
    assert status == 1
    assert line.startswith(
        "preflight: Function App: az functionapp list-flexconsumption-runtimes failed: 'list-flexconsumption-runtimes' "
        "is misspelled"
    )
    assert "azd env set PREFLIGHT_SKIP 1" in line


def test_the_standin_lists_flex_runtimes_in_the_cli_shape(hook: Hook) -> None:
    def az(*args: str) -> Any:
        done = subprocess.run(["az", *args], env=hook.env(), capture_output=True, text=True, check=True, timeout=60)
        return json.loads(done.stdout)

    listed = az("functionapp", "list-flexconsumption-runtimes", "--location", "eastus", "--runtime", "python")
    assert [entry["version"] for entry in listed] == ["3.14", "3.13", "3.12", "3.11"]
    first = listed[0]
    assert {"name", "version", "default", "endOfLifeDate", "sku"} <= set(first)
    assert first["sku"]["skuCode"] == "FC1"
    assert first["sku"]["functionAppConfigProperties"]["runtime"] == {"name": "python", "version": "3.14"}
    assert az("functionapp", "list-flexconsumption-runtimes", "-l", "eastus", "--runtime", "node") == []
    # The CLI prints the stacks API's versions; the preflight reads the one functionAppConfig takes.
    assert preflight_runtime.flex_python(listed)["3.13"] == preflight_az.parse_date("2029-10-31")


def test_the_hook_allows_what_main_bicep_allows_and_defaults_alike() -> None:
    infra = checks.Infra.load(REPO / "infra")
    allowed, default = checks.python_versions(infra)
    assert tuple(allowed) == preflight_runtime.ALLOWED_PYTHON
    assert preflight_env.PARAMETERS["AZURE_PYTHON_VERSION"] == ("pythonVersion", default)
    assert set(preflight_runtime.TESTED_PYTHON) <= set(allowed) and default in preflight_runtime.TESTED_PYTHON
