"""Static checks of infra/ (Bicep): parsed with pycep, no Bicep CLI, no network.

Every ``check_*`` function takes a loaded :class:`Infra` (and, for settings, the names the code
reads) and returns a list of problems: empty means the check holds. The tests run them on the
real infra/ and on broken copies, to show they catch what they claim to.

pycep turns Bicep into JSON but does not evaluate it, and it writes an identifier and a string
literal the same way (``name: jobsQueueName`` and ``name: 'jobsQueueName'`` both give
``"jobsQueueName"``). :func:`Infra.resolve` therefore follows an expression to where its value
comes from: a parameter of the entry point (``param:jobsQueueName``), a resource
(``<Microsoft.Storage/storageAccounts st{toLower(...)}>.id``), or a literal. It follows module
parameters and outputs through every layer (main.bicep -> resources.bicep -> app/*.bicep), so
two expressions that resolve to the same text name the same thing, whichever module they are in.

There are two entry points: ``Infra.load(root)`` reads main.bicep (subscription scope, azd),
``Infra.load(root, GROUP_ENTRY)`` reads resources.bicep (``az deployment group create``). The
resource checks hold for both; :func:`check_layers` checks main.bicep is only a thin wrapper.

Switches (bool parameters such as ``vnetEnabled``) are evaluated: ``Infra.load(root, entry,
{"vnetEnabled": True})`` reads the deployment as it is with that value (a bool parameter not given
takes its default). A ``c ? a : b`` whose condition is a switch resolves to the branch taken, and a
resource or module under ``if (<switch>)`` that is off is not deployed (not in ``created``,
``all_resources``), so every check judges what that value deploys. The string parameters in
``TEXT_SWITCHES`` (``secondaryOpenAiLocation``, ``openAiBatchModelName``: empty = that part is not
deployed) are switches too: ``empty(...)`` of them, or of anything computed from them through
variables, module parameters, outputs and ``c ? a : b``, is evaluated the same way.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

from shared.batch.files import FILE_EXPIRY_SECONDS
from shared.batch.records import MANIFEST_PREFIX, STAGED_PREFIX
from shared.batch.submitter import COMPLETION_WINDOW
from shared.constants import ROLE_IDS
from shared.jobs import RETRY_PREFIX

ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
STORAGE_ACCOUNT = "Microsoft.Storage/storageAccounts"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
OPENAI_ACCOUNT = "Microsoft.CognitiveServices/accounts"
OPENAI_DEPLOYMENT = "Microsoft.CognitiveServices/accounts/deployments"
APP_INSIGHTS = "Microsoft.Insights/components"
IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities"
SITE = "Microsoft.Web/sites"
VNET = "Microsoft.Network/virtualNetworks"
SUBNET = "Microsoft.Network/virtualNetworks/subnets"
PRIVATE_ENDPOINT = "Microsoft.Network/privateEndpoints"
ZONE_GROUP = "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
DNS_ZONE = "Microsoft.Network/privateDnsZones"
DNS_ZONE_LINK = "Microsoft.Network/privateDnsZones/virtualNetworkLinks"
PLAN = "Microsoft.Web/serverfarms"
PUBLISHING_POLICY = "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
ROLE_DEFINITION = "Microsoft.Authorization/roleDefinitions"
RESOURCE_GROUP = "Microsoft.Resources/resourceGroups"

MAIN_ENTRY = "main.bicep"
# The parameter that carries the Function App's Python version (functionAppConfig.runtime.version).
PYTHON_PARAM = "pythonVersion"
GROUP_ENTRY = "resources.bicep"


# Who gets what, where. Principals: "app" = the worker's user-assigned identity, "user" = the
# principalId parameter (person running azd up), "producer" = producerPrincipalId. Scopes name
# a single resource; "jobs queue" / "results container" / "payloads container" are the ones the
# app settings name, "reply queue" is ONE of the queues REPLY_QUEUES_ALLOWED names (the role is
# conditional on the name being in that list).
EXPECTED_ROLES = {
    ("app", "Cognitive Services OpenAI User", "openai account"),
    ("app", "Storage Blob Data Owner", "storage account"),
    ("app", "Storage Queue Data Contributor", "storage account"),
    ("app", "Storage Table Data Contributor", "storage account"),
    ("app", "Monitoring Metrics Publisher", "app insights"),
    ("user", "Cognitive Services OpenAI User", "openai account"),
    ("user", "Storage Queue Data Contributor", "storage account"),
    ("user", "Storage Blob Data Contributor", "storage account"),
    ("producer", "Storage Queue Data Message Sender", "jobs queue"),
    ("producer", "Storage Blob Data Reader", "results container"),
    ("producer", "Storage Blob Data Contributor", "payloads container"),
    ("producer", "Storage Queue Data Message Processor", "reply queue"),
}
# The deployment pool's second Azure OpenAI account (secondaryOpenAiLocation set): the worker calls
# it as it calls the first, and so may the person running azd up.
POOL_ROLES = {
    ("app", "Cognitive Services OpenAI User", "secondary openai account"),
    ("user", "Cognitive Services OpenAI User", "secondary openai account"),
}
# The batch lane (openAiBatchModelName set): a custom role with exactly BATCH_DATA_ACTIONS, on the
# account of the GlobalBatch deployment. Cognitive Services OpenAI User is documented for inference;
# that its data actions cover files and batches is unconfirmed, so they are granted explicitly.
BATCH_ROLE = "Azure OpenAI Batch"
BATCH_ROLES = {("app", BATCH_ROLE, "openai account"), ("user", BATCH_ROLE, "openai account")}
# The data actions of files and batches on the v1 data plane (the Azure OpenAI RBAC page, as the
# batch how-to cites it): upload/read/delete files, create, read and cancel batches. Nothing else:
# no wildcard, no control-plane action.
BATCH_DATA_ACTIONS = [
    "Microsoft.CognitiveServices/accounts/OpenAI/files/write",
    "Microsoft.CognitiveServices/accounts/OpenAI/files/read",
    "Microsoft.CognitiveServices/accounts/OpenAI/files/delete",
    "Microsoft.CognitiveServices/accounts/OpenAI/batch-jobs/write",
    "Microsoft.CognitiveServices/accounts/OpenAI/batches/read",
    "Microsoft.CognitiveServices/accounts/OpenAI/batches/cancel/action",
]
# A role on ONE resource of a [for] loop (deployed only when contains(<array>, <name>)) is named
# after the loop: "reply queue" is one of the "reply queues".
LOOP_MEMBERS = {"reply queues": "reply queue"}
OPTIONAL_PRINCIPALS = {"user": "param:principalId", "producer": "param:producerPrincipalId"}
PRINCIPAL_TYPES = {"app": "ServicePrincipal", "user": "param:principalType", "producer": "param:producerPrincipalType"}

# Settings the Functions host and Microsoft's Python worker (not our code) read, which Bicep must set:
# telemetry through Application Insights with Entra auth, configured by the Python worker itself.
HOST_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "AzureFunctionsJobHost__telemetryMode",
}
# The other way to set up telemetry (the app calls configure_azure_monitor itself). With the Python
# worker's own setup on as well, everything would be exported twice: telemetry is configured once.
DOUBLE_TELEMETRY = {"PYTHON_ENABLE_OPENTELEMETRY"}
# Settings the code reads that are deliberately NOT set in Azure:
OPTIONAL_IN_AZURE = {
    # The connection string is the local (Azurite) path only; Azure uses the __ settings, keyless.
    "AzureWebJobsStorage",
    # An alternative to the three __*ServiceUri settings, which Bicep sets instead.
    "AzureWebJobsStorage__accountName",
    # OTLP collectors: telemetry outside Azure only (in Azure the Python worker sends to Application
    # Insights and the app sets up nothing). Not even empty: the Functions host, in OpenTelemetry
    # mode, also looks at OTEL_EXPORTER_OTLP_ENDPOINT (whether it takes "" as unset is unconfirmed).
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
}
# Settings that must never appear in the Function App: keys / connection strings, or settings
# Flex Consumption rejects (its runtime comes from functionAppConfig).
FORBIDDEN_SETTINGS = {
    "AzureWebJobsStorage",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_RUN_FROM_PACKAGE",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
    "AZURE_OPENAI_API_KEY",
    "OPENAI_API_KEY",
    "AZURE_CLIENT_SECRET",
}
SECRETISH = re.compile(r"key|secret|password|sas|token(?!_credentials)", re.IGNORECASE)
# Sample values that intentionally differ from the Bicep defaults (placeholders / local-only).
LOCAL_ONLY_VALUES = {"AZURE_TOKEN_CREDENTIALS"}

# String parameters of the entry point that switch parts of the deployment on (non-empty) or off
# (empty): the pool's second Azure OpenAI account and the batch lane's GlobalBatch deployment.
TEXT_SWITCHES = {"secondaryOpenAiLocation", "openAiBatchModelName"}

# A created resource: (key, scope, symbol, declaration).
Found = tuple[str, str | None, str, dict[str, Any]]

_IDENT = re.compile(r"^[A-Za-z_]\w*$")
_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
MISSING = object()


# ---------------------------------------------------------------- loading


@dataclass
class BicepFile:
    path: Path
    text: str
    doc: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        return self.doc.get("parameters") or {}

    @property
    def vars(self) -> dict[str, Any]:
        return self.doc.get("variables") or {}

    @property
    def resources(self) -> dict[str, Any]:
        return self.doc.get("resources") or {}

    @property
    def modules(self) -> dict[str, Any]:
        return self.doc.get("modules") or {}

    @property
    def outputs(self) -> dict[str, Any]:
        return self.doc.get("outputs") or {}

    def comment_above(self, declaration: str) -> str:
        """The // comment lines right above (or at the end of) the line starting with `declaration`."""
        lines = self.text.splitlines()
        for index, line in enumerate(lines):
            if line.startswith(declaration):
                comments = [line.split("//", 1)[1]] if "//" in line else []
                above = index - 1
                while above >= 0 and lines[above].lstrip().startswith("//"):
                    comments.insert(0, lines[above].lstrip()[2:])
                    above -= 1
                return " ".join(c.strip() for c in comments)
        return ""


@cache
def _parser() -> BicepParser:
    return BicepParser()


def parse(path: Path) -> BicepFile:
    text = path.read_text(encoding="utf-8")
    # A fresh copy (checks may not share a tree), from bytes this process pickled itself.
    tree: dict[str, Any] = pickle.loads(_parsed(text))  # noqa: S301
    return BicepFile(path, text, tree)


@lru_cache(maxsize=128)
def _parsed(text: str) -> bytes:
    # The broken-copy tests re-load the whole tree with one file changed: the parser (lark) is the
    # slow part, so each distinct file text is parsed once per process. Kept pickled: unpickling is a
    # deep copy several times faster than copy.deepcopy of the same tree.
    return pickle.dumps(dict(_parser().parse(text=text)), protocol=pickle.HIGHEST_PROTOCOL)


def body(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A resource's or module's own properties, unwrapped from `if (...)` and `[for ...]`."""
    config = resource["config"]
    while isinstance(config, dict) and ("condition" in config or "loop_type" in config) and "config" in config:
        config = config["config"]
    return cast(dict[str, Any], config)


def condition(resource: Mapping[str, Any]) -> Any:
    config = resource["config"]
    return config.get("condition") if isinstance(config, dict) and "config" in config else None


def loop(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    config = resource["config"]
    if isinstance(config, dict) and "loop_type" in config:
        return cast(dict[str, Any], config["loop_type"]["detail"])
    return None


def dotted(expr: Any) -> list[Any] | None:
    """`a.b.c` (pycep's nested property_accessor) as ['a', 'b', 'c']; None for anything else."""
    if not (isinstance(expr, dict) and "operator" in expr and expr["operator"]["type"] == "property_accessor"):
        return None
    operands = expr["operator"]["operands"]
    head, tail = operands["operand_1"], operands["operand_2"]
    rest = dotted(tail)
    return [head, *(rest if rest is not None else [tail])]


def unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


@dataclass
class Infra:
    """An entry point (infra/main.bicep, or infra/resources.bicep) and the local modules below it.

    A scope is None for the entry point, else the dotted path of module symbols leading to a
    file: ``"resources"``, ``"resources.rbac"`` (from main.bicep), ``"rbac"`` (from resources.bicep).
    """

    root: Path
    main: BicepFile
    module_files: dict[str, BicepFile] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    values: dict[str, bool | str] = field(default_factory=dict)  # switches of the entry point, by name

    @classmethod
    def load(cls, root: Path, entry: str = MAIN_ENTRY, values: Mapping[str, bool | str] | None = None) -> Infra:
        infra = cls(root, parse(root / entry), values=dict(values or {}))
        infra._load_modules(None)
        return infra

    def switch(self, name: str) -> bool | None:
        """The value of a bool parameter of the entry point: as given to load(), else its default."""
        if isinstance(self.values.get(name), bool):
            return cast(bool, self.values[name])
        param = self.main.params.get(name) or {}
        default = param.get("default")
        return default if param.get("type") == "bool" and isinstance(default, bool) else None

    def text_switch(self, name: str) -> str | None:
        """The value of a TEXT_SWITCHES parameter of the entry point (as given to load(), else its
        default); None for any other parameter, whose value is not decided here."""
        if isinstance(self.values.get(name), str):
            return cast(str, self.values[name])
        param = self.main.params.get(name) or {}
        default = param.get("default")
        return default if name in TEXT_SWITCHES and isinstance(default, str) else None

    def truth(self, scope: str | None, expr: Any) -> bool | None:
        """A condition's value when it is decided by the switches (a switch, `!`, `&&`, `||`,
        `empty(...)` of a text switch), else None (not decided here)."""
        if isinstance(expr, bool):
            return expr
        followed = self.follow(scope, expr)
        if followed is not None:
            return self.truth(*followed)
        operator = expr.get("operator") if isinstance(expr, dict) else None
        if operator and operator["type"] == "not":
            inner = self.truth(scope, operator["operands"].get("bool_value"))
            return None if inner is None else not inner
        if operator and operator["type"] in ("and", "or"):
            operands = operator["operands"]
            both = [self.truth(scope, operands["operand_1"]), self.truth(scope, operands["operand_2"])]
            decisive: bool = operator["type"] == "or"  # the value that decides alone: true for ||, false for &&
            if decisive in both:
                return decisive
            return None if None in both else not decisive
        function = expr.get("function") if isinstance(expr, dict) else None
        if function and function["type"] == "empty":
            return self.emptiness(scope, function["parameters"].get("item_to_test"))
        origin = self.resolve(scope, expr)
        if origin in ("true", "false"):
            return origin == "true"
        match = re.fullmatch(r"param:(\w+)", origin)
        return self.switch(match.group(1)) if match else None

    def follow(self, scope: str | None, expr: Any) -> tuple[str | None, Any] | None:
        """A variable, or a module's parameter, as (scope, expression) of its value: what the parent
        passes, else the default. None for anything else (an entry point's parameter included)."""
        if not (isinstance(expr, str) and _IDENT.match(expr)):
            return None
        file = self.file(scope)
        if expr in file.vars:
            return scope, file.vars[expr]["value"]
        if scope is None or expr not in file.params:
            return None
        passed = self.module_param(scope, expr)
        if passed is not MISSING:
            return self.parent(scope), passed
        default = file.params[expr].get("default")
        return (scope, default) if default is not None else None

    def emptiness(self, scope: str | None, expr: Any) -> bool | None:
        """Whether `expr` is empty ('' or []), when the switches decide it; None when they don't."""
        if isinstance(expr, list):
            return not expr
        followed = self.follow(scope, expr)
        if followed is not None:
            return self.emptiness(*followed)
        if isinstance(expr, str):
            return self._text_emptiness(scope, expr)
        operator = expr.get("operator") if isinstance(expr, dict) else None
        if operator and operator["type"] == "conditional":
            return self._conditional_emptiness(scope, operator["operands"])
        parts = dotted(expr)
        if parts is None or not isinstance(parts[0], str):
            return None
        head, rest = parts[0], [str(p) for p in parts[1:]]
        file = self.file(scope)
        if head in file.modules and len(rest) == 2 and rest[0] == "outputs":
            child = head if scope is None else f"{scope}.{head}"
            output = self.module_files[child].outputs.get(rest[1]) if child in self.module_files else None
            return self.emptiness(child, output["value"]) if output else None
        if head in file.resources and rest == ["name"]:
            return self.emptiness(scope, body(file.resources[head]).get("name"))
        return None

    def _text_emptiness(self, scope: str | None, expr: str) -> bool | None:
        """A string literal, an interpolation, or a parameter of the entry point (a text switch)."""
        if "${" in expr:
            whole = _INTERPOLATION.fullmatch(expr)
            return self.emptiness(scope, whole.group(1).strip()) if whole else False  # literal text around it
        if scope is None and expr in self.file(scope).params:
            value = self.text_switch(expr)
            return None if value is None else not value
        if expr in self.file(scope).params or expr in self.file(scope).resources:
            return None
        return not expr

    def _conditional_emptiness(self, scope: str | None, operands: Mapping[str, Any]) -> bool | None:
        """`c ? a : b`: the branch taken when decided. `empty(x) ? a : x` is empty exactly when `a` is
        (x is taken only when it is not empty); otherwise the branches must agree."""
        taken = self.truth(scope, operands["condition"])
        if taken is not None:
            return self.emptiness(scope, operands["true_value" if taken else "false_value"])
        function = operands["condition"].get("function") if isinstance(operands["condition"], dict) else None
        if (
            function
            and function["type"] == "empty"
            and function["parameters"].get("item_to_test") == operands["false_value"]
        ):
            return self.emptiness(scope, operands["true_value"])
        branches = {self.emptiness(scope, operands["true_value"]), self.emptiness(scope, operands["false_value"])}
        return branches.pop() if len(branches) == 1 else None

    def conditional(self, scope: str | None, resource: Mapping[str, Any]) -> bool:
        """Whether `resource`, or a module above it, is under an `if (...)` at all (optional)."""
        if condition(resource) is not None:
            return True
        while scope is not None:
            if condition(self.module_declaration(scope)) is not None:
                return True
            scope = self.parent(scope)
        return False

    def deployed(self, scope: str | None, resource: Mapping[str, Any] | None = None) -> bool:
        """False when the module `scope` (or a module above it), or `resource` in it, is under an
        `if (...)` that is off with these switches."""
        if resource is not None and self.truth(scope, condition(resource)) is False:
            return False
        while scope is not None:
            parent = self.parent(scope)
            if self.truth(parent, condition(self.module_declaration(scope))) is False:
                return False
            scope = parent
        return True

    def _load_modules(self, scope: str | None) -> None:
        file = self.file(scope)
        for symbol, module in file.modules.items():
            child = symbol if scope is None else f"{scope}.{symbol}"
            if module.get("type") != "local":
                self.problems.append(f"module {child} is not a local file (registry modules can't be scanned offline)")
                continue
            path = file.path.parent / module["detail"]["path"]
            if not path.exists():
                self.problems.append(f"module {child}: {path} does not exist")
                continue
            self.module_files[child] = parse(path)
            self._load_modules(child)

    def file(self, scope: str | None) -> BicepFile:
        return self.main if scope is None else self.module_files[scope]

    @staticmethod
    def parent(scope: str) -> str | None:
        """The scope whose file declares module `scope`."""
        return scope.rpartition(".")[0] or None

    def module_declaration(self, scope: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.file(self.parent(scope)).modules[scope.rpartition(".")[2]])

    @property
    def scopes(self) -> list[str | None]:
        return [None, *self.module_files]

    def all_resources(self) -> Iterable[tuple[str | None, str, dict[str, Any]]]:
        """The resources declared in every file, less those the switches leave out."""
        for scope in self.scopes:
            if not self.deployed(scope):
                continue
            for symbol, resource in self.file(scope).resources.items():
                if self.deployed(scope, resource):
                    yield scope, symbol, resource

    # ------------------------------------------------------------ resolution

    def module_param(self, scope: str, name: str) -> Any:
        return (body(self.module_declaration(scope)).get("params") or {}).get(name, MISSING)

    def resolve(self, scope: str | None, expr: Any) -> str:
        """Where `expr` (in the entry point when scope is None, else in module `scope`) comes from."""
        if isinstance(expr, bool) or expr is None:
            return json.dumps(expr)
        if isinstance(expr, int):
            return str(expr)
        if isinstance(expr, str):
            return self._resolve_text(scope, expr)
        if isinstance(expr, list):
            return "[" + ",".join(self.resolve(scope, item) for item in expr) + "]"
        parts = dotted(expr)
        if parts is not None:
            return self._resolve_dotted(scope, parts)
        if isinstance(expr, dict) and "function" in expr:
            function = expr["function"]
            args = ",".join(self.resolve(scope, value) for value in (function.get("parameters") or {}).values())
            return f"{function['type']}({args})"
        if isinstance(expr, dict) and (expr.get("operator") or {}).get("type") == "conditional":
            # `c ? a : b`: the branch taken when c is a switch, else if(c,a,b) (e.g. the deployment
            # named after the model unless named).
            operands = expr["operator"]["operands"]
            taken = self.truth(scope, operands["condition"])
            if taken is not None:
                return self.resolve(scope, operands["true_value" if taken else "false_value"])
            branches = (operands["condition"], operands["true_value"], operands["false_value"])
            return "if(" + ",".join(self.resolve(scope, branch) for branch in branches) + ")"
        if isinstance(expr, dict) and "operator" not in expr:
            return "{" + ",".join(f"{unquote(k)}: {self.resolve(scope, v)}" for k, v in expr.items()) + "}"
        return json.dumps(expr, sort_keys=True)

    def _resolve_text(self, scope: str | None, expr: str) -> str:
        """A string: an interpolation, a parameter, variable or resource symbol, or a literal."""
        f = self.file(scope)
        if "${" in expr:
            whole = _INTERPOLATION.fullmatch(expr)
            if whole and _IDENT.match(whole.group(1).strip()):
                return self.resolve(scope, whole.group(1).strip())
            return _INTERPOLATION.sub(lambda m: "{" + self._resolve_source(scope, m.group(1)) + "}", expr)
        if expr in f.params:
            return self._resolve_param(scope, expr)
        if expr in f.vars:
            return f"var:{expr}" if scope is None else self.resolve(scope, f.vars[expr]["value"])
        if expr in f.resources:
            return self.resource_key(scope, expr)
        return expr

    def _resolve_param(self, scope: str | None, name: str) -> str:
        """A parameter: of the entry point, else what the parent passes in (or the default)."""
        if scope is None:
            return f"param:{name}"
        passed = self.module_param(scope, name)
        if passed is not MISSING:
            return self.resolve(self.parent(scope), passed)
        default = self.file(scope).params[name].get("default")
        return self.resolve(scope, default) if default is not None else f"unset:{scope}.{name}"

    def _resolve_dotted(self, scope: str | None, parts: list[Any]) -> str:
        """`a.b.c`: a module's output, a resource's name or property, or a property of anything else."""
        head, rest = parts[0], [str(p) for p in parts[1:]]
        f = self.file(scope)
        if isinstance(head, str) and head in f.modules and rest[:1] == ["outputs"] and len(rest) >= 2:
            return self._resolve_output(scope, head, rest[1], rest[2:])
        if isinstance(head, str) and head in f.resources:
            if rest == ["name"]:
                return self.resource_name(scope, head)
            return ".".join([self.resource_key(scope, head), *rest])
        return ".".join([self.resolve(scope, head), *rest])

    def _resolve_output(self, scope: str | None, module: str, output_name: str, rest: list[str]) -> str:
        """`<module>.outputs.<output_name>.<rest>`: the output's value, resolved in the module."""
        child = module if scope is None else f"{scope}.{module}"
        if child not in self.module_files:
            return f"unknown-module:{child}"
        output = self.module_files[child].outputs.get(output_name)
        if output is None:
            return f"missing-output:{child}.{output_name}"
        return ".".join([self.resolve(child, output["value"]), *rest])

    def _resolve_source(self, scope: str | None, source: str) -> str:
        source = source.strip()
        if _IDENT.match(source):
            return self.resolve(scope, source)
        if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", source):
            head, *rest = source.split(".")
            expr: Any = rest[-1]
            for part in reversed([head, *rest[:-1]]):
                expr = {"operator": {"type": "property_accessor", "operands": {"operand_1": part, "operand_2": expr}}}
            return self.resolve(scope, expr)
        return "${" + source + "}"

    def resource_name(self, scope: str | None, symbol: str) -> str:
        resource = self.file(scope).resources[symbol]
        each = loop(resource)
        if each is not None:
            return f"each({self.resolve(scope, each['array_name'])})"
        return self.resolve(scope, body(resource).get("name"))

    def resource_key(self, scope: str | None, symbol: str) -> str:
        """Identity of a resource across modules: type + resolved name (+ parent's key)."""
        resource = self.file(scope).resources[symbol]
        parent = body(resource).get("parent")
        prefix = f"{self.resource_key(scope, parent)}/" if isinstance(parent, str) else ""
        return f"<{prefix}{resource['type']} {self.resource_name(scope, symbol)}>"

    # ------------------------------------------------------------ created resources

    @cached_property
    def created(self) -> dict[str, tuple[str | None, str, dict[str, Any]]]:
        """Resources this deployment creates (not `existing`), by key."""
        return {
            self.resource_key(scope, symbol): (scope, symbol, resource)
            for scope, symbol, resource in self.all_resources()
            if not resource.get("existing")
        }

    def created_of_type(self, type_: str) -> list[tuple[str, str | None, str, dict[str, Any]]]:
        return [(key, *found) for key, found in self.created.items() if found[2]["type"] == type_]

    def created_names(self, type_: str) -> set[str]:
        """The resolved names of the created resources of one type."""
        return {self.resource_name(scope, symbol) for _, scope, symbol, _ in self.created_of_type(type_)}

    def only(self, type_: str, problems: list[str]) -> tuple[str, str | None, str, dict[str, Any]] | None:
        found = self.created_of_type(type_)
        if len(found) != 1:
            problems.append(f"expected exactly one {type_}, found {len(found)}")
            return None
        return found[0]

    # ------------------------------------------------------------ the Function App

    def site(self, problems: list[str]) -> tuple[str | None, dict[str, Any]] | None:
        found = self.only(SITE, problems)
        return (found[1], body(found[3])) if found else None

    def app_settings(self, problems: list[str]) -> dict[str, tuple[str | None, Any]]:
        """App setting name -> (module, value expression), from siteConfig and sites/config."""
        settings: dict[str, tuple[str | None, Any]] = {}

        def add(scope: str | None, name: str, value: Any) -> None:
            if name in settings:
                problems.append(f"app setting {name} is set twice")
            settings[name] = (scope, value)

        site = self.site(problems)
        if site:
            scope, config = site
            for entry in (config.get("properties") or {}).get("siteConfig", {}).get("appSettings") or []:
                add(scope, entry["name"], entry.get("value"))
        for scope, _, resource in self.all_resources():
            config = body(resource)
            if resource["type"] == "Microsoft.Web/sites/config" and config.get("name") == "appsettings":
                for name, value in (config.get("properties") or {}).items():
                    add(scope, unquote(name), value)
        return settings


# ---------------------------------------------------------------- checks


def check_roles(infra: Infra) -> list[str]:
    """Every expected role assignment exists, on the right single resource, and no other does."""
    problems = list(infra.problems)
    scopes = _expected_scopes(infra, problems)
    identity = infra.only(IDENTITY, problems)
    identity_key = identity[0] if identity else "<no identity>"
    found: dict[tuple[str, str, str], str] = {}
    for scope, symbol, resource in infra.all_resources():
        if resource["type"] != ROLE_ASSIGNMENT:
            continue
        where = f"{infra.file(scope).path.name}:{symbol}"
        item = _check_assignment(infra, scope, where, resource, scopes, identity_key, problems)
        if item is None:
            continue
        if item in found:
            problems.append(f"{where} duplicates {found[item]}")
        found[item] = where

    expected = expected_roles(infra)
    for item in sorted(expected - found.keys()):
        problems.append("missing role assignment: {} gets {} on the {}".format(*item))
    for item in sorted(found.keys() - expected):
        problems.append("unexpected role assignment {}: {} gets {} on {}".format(found[item], *item))
    return [*problems, *_check_role_definitions(infra)]


def expected_roles(infra: Infra) -> set[tuple[str, str, str]]:
    """EXPECTED_ROLES, plus the pool's and the batch lane's when this deployment has them."""
    expected = set(EXPECTED_ROLES)
    if "secondary openai account" in openai_accounts(infra, []):
        expected |= POOL_ROLES
    if batch_deployments(infra):
        expected |= BATCH_ROLES
    return expected


def _check_role_definitions(infra: Infra) -> list[str]:
    """The one custom role (the batch lane's) is defined exactly when there is a batch deployment."""
    defined = [_where(infra, found) for found in infra.created_of_type(ROLE_DEFINITION)]
    wanted = 1 if batch_deployments(infra) else 0
    if len(defined) != wanted:
        return [
            f"{len(defined)} custom role definition(s) {defined}, expected {wanted}: the batch lane's, only with it"
        ]
    return []


def _check_assignment(
    infra: Infra,
    scope: str | None,
    where: str,
    resource: dict[str, Any],
    scopes: dict[str, str],
    identity_key: str,
    problems: list[str],
) -> tuple[str, str, str] | None:
    """Checks one role assignment; (principal, role, scope name) as in EXPECTED_ROLES, or None
    when its scope or role is too broken to say."""
    config = body(resource)
    properties = config.get("properties") or {}

    # Scope: a resource symbol of this file (not the deployment's resource group / subscription).
    target = _assignment_target(infra, scope, where, config.get("scope"), problems)
    if target is None:
        return None
    target_key = infra.resource_key(scope, target)
    conditions = _resolve_condition(infra, scope, condition(resource))
    scope_name = _scope_name(infra, scope, where, target, scopes, conditions, problems)

    # Role: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <named variable>).
    role_name = _role(infra, scope, where, properties.get("roleDefinitionId"), problems)
    if role_name is None:
        return None

    # Principal.
    principal_origin = infra.resolve(scope, properties.get("principalId"))
    principal = _principal(principal_origin, identity_key)
    if principal in OPTIONAL_PRINCIPALS:
        wanted = f"not({_empty_call(OPTIONAL_PRINCIPALS[principal])})"
        if wanted not in conditions:
            problems.append(f"{where}: the {principal} role must be conditional on `!empty(...)` of its principal")
    elif condition(resource) is not None and infra.truth(scope, condition(resource)) is not True:
        # Conditional only on the switches of optional parts (the pool's second account, the batch
        # lane), which these values decide: never on anything left to chance.
        problems.append(f"{where}: the worker's roles must not be conditional (except on the switches)")
    principal_type = infra.resolve(scope, properties.get("principalType"))
    if principal in PRINCIPAL_TYPES and principal_type != PRINCIPAL_TYPES[principal]:
        problems.append(f"{where}: principalType is {principal_type}, expected {PRINCIPAL_TYPES[principal]}")

    # Name: guid() over scope, principal and role, so assignments never collide.
    name_origin = infra.resolve(scope, config.get("name"))
    if not (name_origin.startswith("guid(") and f"{target_key}.id" in name_origin and principal_origin in name_origin):
        problems.append(f"{where}: name should be guid(<scope>.id, <principal>, <role>), is {name_origin}")
    return (principal, role_name, scope_name)


def _assignment_target(infra: Infra, scope: str | None, where: str, target: Any, problems: list[str]) -> str | None:
    """The symbol of the single resource (of the same file) an assignment is scoped to, or None."""
    if target is None:
        problems.append(f"{where} has no scope: it would apply to the whole resource group/subscription")
        return None
    if not (isinstance(target, str) and target in infra.file(scope).resources):
        problems.append(f"{where} is scoped to {json.dumps(target)}, not to a single resource")
        return None
    target_type = infra.file(scope).resources[target]["type"]
    if target_type in ("Microsoft.Resources/resourceGroups", "Microsoft.Resources/subscriptions"):
        problems.append(f"{where} is scoped to a {target_type}")
        return None
    return target


def _scope_name(
    infra: Infra,
    scope: str | None,
    where: str,
    target: str,
    scopes: dict[str, str],
    conditions: list[str],
    problems: list[str],
) -> str:
    """The EXPECTED_ROLES name of the assignment's target ("jobs queue", ...), else its key."""
    target_key = infra.resource_key(scope, target)
    scope_names = [name for name, key in scopes.items() if key == target_key]
    if target_key not in infra.created:
        # One of a [for] loop's resources: deployed only when its name is in the loop's array.
        member_of = _loop_member_of(infra, scope, target, conditions)
        if member_of is None:
            problems.append(f"{where} is scoped to {target_key}, which this deployment does not create")
        else:
            scope_names = [
                LOOP_MEMBERS[name] for name, key in scopes.items() if key == member_of and name in LOOP_MEMBERS
            ]
            problems += _check_member_default(infra, scope, target, member_of, where)
    return scope_names[0] if scope_names else target_key


def _principal(origin: str, identity_key: str) -> str:
    """Who a resolved principalId is: "app", "user" or "producer" (as in EXPECTED_ROLES), else itself."""
    if origin == f"{identity_key}.properties.principalId":
        return "app"
    return next((k for k, v in OPTIONAL_PRINCIPALS.items() if v == origin), origin)


def _expected_scopes(infra: Infra, problems: list[str]) -> dict[str, str]:
    scopes = {name: found[0] for name, found in openai_accounts(infra, problems).items()}
    for name, type_ in (
        ("storage account", STORAGE_ACCOUNT),
        ("app insights", APP_INSIGHTS),
    ):
        found = infra.only(type_, problems)
        if found:
            scopes[name] = found[0]
    settings = infra.app_settings(problems)
    for name, setting, type_ in (
        ("jobs queue", "JOBS_QUEUE", QUEUE),
        ("results container", "RESULTS_CONTAINER", CONTAINER),
        ("payloads container", "PAYLOADS_CONTAINER", CONTAINER),
        # The [for] loop over the reply queue names: a role on ONE of them is a "reply queue".
        ("reply queues", "REPLY_QUEUES_ALLOWED", QUEUE),
    ):
        if setting in settings:
            wanted = infra.resolve(*settings[setting])
            if setting == "REPLY_QUEUES_ALLOWED":
                joined = re.fullmatch(r"join\((.*),,\)", wanted)
                wanted = f"each({joined.group(1)})" if joined else wanted
            match = [key for key, _, _, _ in infra.created_of_type(type_) if key.endswith(f" {wanted}>")]
            if match:
                scopes[name] = match[0]
    return scopes


def _loop_member_of(infra: Infra, scope: str | None, target: str, conditions: list[str]) -> str | None:
    """The key of the created [for] loop `target` is one resource of, when the assignment's
    condition includes contains(<the loop's array>, <target's name>); else None."""
    name = infra.resource_name(scope, target)
    key = infra.resource_key(scope, target)
    suffix = f" {name}>"
    if not key.endswith(suffix):
        return None
    for created_key in infra.created:
        loop_match = re.fullmatch(re.escape(key[: -len(suffix)]) + r" each\((.*)\)>", created_key)
        if loop_match and f"contains({loop_match.group(1)},{name})" in conditions:
            return created_key
    return None


def _check_member_default(infra: Infra, scope: str | None, target: str, loop_key: str, where: str) -> list[str]:
    """With default parameters, a loop-member role is really granted: the name is in the array."""
    name = re.fullmatch(r"param:(\w+)", infra.resource_name(scope, target))
    array = re.search(r" each\(param:(\w+)\)>$", loop_key)
    if not (name and array):
        return []
    default = infra.main.params.get(name.group(1), {}).get("default")
    choices = infra.main.params.get(array.group(1), {}).get("default")
    if isinstance(choices, list) and default not in choices:
        return [
            f"{where}: {name.group(1)} defaults to {default!r}, not one of {array.group(1)} {choices}: "
            "with the defaults the role is not granted"
        ]
    return []


def _role(infra: Infra, scope: str | None, where: str, expr: Any, problems: list[str]) -> str | None:
    function = expr.get("function") if isinstance(expr, dict) else None
    if not function or function["type"] != "subscription_resource_id":
        problems.append(f"{where}: roleDefinitionId should be subscriptionResourceId(..., <role variable>)")
        return None
    params = function["parameters"]
    variable = params.get("resource_name_1")
    file = infra.file(scope)
    if params.get("resource_type") != "Microsoft.Authorization/roleDefinitions" or variable not in file.vars:
        problems.append(f"{where}: the role definition id should be a named variable, got {json.dumps(variable)}")
        return None
    role_id = file.vars[variable]["value"]
    if not isinstance(role_id, str):
        return _custom_role(infra, scope, where, variable, problems)
    names = [name for name, known in ROLE_IDS.items() if known == role_id]
    if not names:
        problems.append(f"{where}: role id {role_id} ({variable}) is not one this deployment should grant")
        return None
    if names[0] not in file.comment_above(f"var {variable} "):
        problems.append(f"{where}: variable {variable} needs a comment naming the role ({names[0]})")
    return names[0]


def _custom_role(infra: Infra, scope: str | None, where: str, variable: str, problems: list[str]) -> str | None:
    """A role whose id is a variable naming a role definition this file creates: the batch lane's,
    with exactly BATCH_DATA_ACTIONS and nothing else, assignable in this resource group only."""
    file = infra.file(scope)
    definitions = [
        (symbol, body(resource))
        for symbol, resource in file.resources.items()
        if resource["type"] == ROLE_DEFINITION
        and body(resource).get("name") == variable
        and infra.deployed(scope, resource)
    ]
    if len(definitions) != 1:
        problems.append(f"{where}: role id {variable} is no built-in role and no role definition of {file.path.name}")
        return None
    symbol, config = definitions[0]
    properties = config.get("properties") or {}
    permissions = properties.get("permissions") or []
    granted = structure(infra, scope, permissions[0].get("dataActions")) if len(permissions) == 1 else MISSING
    wanted: dict[str, Any] = {
        "type": (infra.resolve(scope, properties.get("type")), "CustomRole"),
        "dataActions": (granted, BATCH_DATA_ACTIONS),
        "assignableScopes": (
            infra.resolve(scope, properties.get("assignableScopes")),
            "[resource_group(null,null).id]",
        ),
    }
    for key in ("actions", "notActions", "notDataActions"):
        wanted[key] = (permissions[0].get(key, []) if len(permissions) == 1 else MISSING, [])
    for key, (value, expected) in wanted.items():
        if value != expected:
            problems.append(f"{file.path.name}:{symbol} ({BATCH_ROLE}): {key} is {value}, must be {expected}")
    if BATCH_ROLE not in infra.resolve(scope, properties.get("roleName")):
        problems.append(f"{file.path.name}:{symbol}: roleName must say {BATCH_ROLE}")
    if BATCH_ROLE not in file.comment_above(f"var {variable} "):
        problems.append(f"{where}: variable {variable} needs a comment naming the role ({BATCH_ROLE})")
    return BATCH_ROLE


def structure(infra: Infra, scope: str | None, expr: Any) -> Any:
    """An array or object expression as Python lists and dicts, following variables, module
    parameters, concat() and `c ? a : b` the switches decide; numbers as they are, anything else as
    Infra.resolve has it (MISSING for a branch the switches do not decide)."""
    if isinstance(expr, (bool, int)) or expr is None:
        return expr
    followed = infra.follow(scope, expr)
    if followed is not None:
        return structure(infra, *followed)
    if isinstance(expr, list):
        return [structure(infra, scope, item) for item in expr]
    if isinstance(expr, dict) and "function" not in expr and "operator" not in expr:
        return {unquote(key): structure(infra, scope, value) for key, value in expr.items()}
    function = expr.get("function") if isinstance(expr, dict) else None
    if function and function["type"] == "concat":
        parts = [structure(infra, scope, arg) for arg in (function.get("parameters") or {}).values()]
        return [item for part in parts for item in part] if all(isinstance(p, list) for p in parts) else MISSING
    operator = expr.get("operator") if isinstance(expr, dict) else None
    if operator and operator["type"] == "conditional":
        taken = infra.truth(scope, operator["operands"]["condition"])
        if taken is None:
            return MISSING
        return structure(infra, scope, operator["operands"]["true_value" if taken else "false_value"])
    return infra.resolve(scope, expr)


def _empty_call(origin: str) -> str:
    return f"empty({origin})"


def _resolve_condition(infra: Infra, scope: str | None, expr: Any) -> list[str]:
    """The resolved conjuncts of `if (a && b && ...)`; [] when unconditional."""
    if expr is None:
        return []
    operator = expr.get("operator") if isinstance(expr, dict) else None
    if operator and operator["type"] == "and":
        operands = operator["operands"]
        return [
            *_resolve_condition(infra, scope, operands["operand_1"]),
            *_resolve_condition(infra, scope, operands["operand_2"]),
        ]
    if operator and operator["type"] == "not":
        inner = operator["operands"].get("bool_value")
        return [f"not({infra.resolve(scope, inner)})"]
    return [infra.resolve(scope, expr)]


def check_security(infra: Infra) -> list[str]:
    """Keyless and locked-down properties of storage, Azure OpenAI, App Insights and the app."""
    problems = list(infra.problems)

    def expect(found: tuple[str, str | None, str, dict[str, Any]] | None, path: str, wanted: Any) -> None:
        if not found:
            return
        value: Any = body(found[3])
        for part in path.split("."):
            value = value.get(part, MISSING) if isinstance(value, dict) else MISSING
        if value != wanted:
            shown = "missing" if value is MISSING else json.dumps(value)
            problems.append(f"{found[3]['type']} {found[2]}: {path} is {shown}, must be {json.dumps(wanted)}")

    storage = infra.only(STORAGE_ACCOUNT, problems)
    expect(storage, "properties.allowSharedKeyAccess", False)
    expect(storage, "properties.minimumTlsVersion", "TLS1_2")
    expect(storage, "properties.supportsHttpsTrafficOnly", True)
    expect(storage, "properties.allowBlobPublicAccess", False)
    for container in infra.created_of_type(CONTAINER):
        expect(container, "properties.publicAccess", "None")

    for openai in openai_accounts(infra, problems).values():
        expect(openai, "kind", "OpenAI")
        expect(openai, "properties.disableLocalAuth", True)
        subdomain = body(openai[3]).get("properties", {}).get("customSubDomainName")
        if not subdomain or infra.resolve(openai[1], subdomain) in ("", '""'):
            problems.append(f"the Azure OpenAI account {openai[0]} needs customSubDomainName (Entra auth requires it)")

    expect(infra.only(APP_INSIGHTS, problems), "properties.DisableLocalAuth", True)

    site = infra.only(SITE, problems)
    expect(site, "properties.httpsOnly", True)
    expect(site, "properties.siteConfig.ftpsState", "Disabled")
    expect(site, "properties.siteConfig.minTlsVersion", "1.2")
    expect(site, "identity.type", "UserAssigned")
    policies = {body(found[3]).get("name"): found for found in infra.created_of_type(PUBLISHING_POLICY)}
    for name in ("ftp", "scm"):
        if name not in policies:
            problems.append(f"basic-auth publishing ({name}) must be disabled with a {PUBLISHING_POLICY}")
        else:
            expect(policies[name], "properties.allow", False)

    for scope in infra.scopes:
        file = infra.file(scope)
        for pattern in (r"\blist\w*\(", r"\.list\w*\(", r"AccountKey=", r"SharedAccessSignature", r"@secure\(\)"):
            if re.search(pattern, _code(file.text)):
                problems.append(f"{file.path.name} uses {pattern!r}: no keys, SAS or secrets in this deployment")
    return problems


@lru_cache(maxsize=128)
def _code(text: str) -> str:
    """Bicep text without // comments (a comment may say 'no listKeys()')."""
    return "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in text.splitlines())


# ---------------------------------------------------------------- the worker's own state

MANAGEMENT_POLICY = "Microsoft.Storage/storageAccounts/managementPolicies"
# The container settings, each naming a container of its own (shared/settings/ refuses a clash too).
WORKER_ONLY_SETTING = "STAGING_CONTAINER"
CONTAINER_SETTINGS = ("RESULTS_CONTAINER", "PAYLOADS_CONTAINER", WORKER_ONLY_SETTING)
# Who may hold a blob role that covers the worker-only container: the worker, and the person running
# azd up (the operator: `status`, `replay` and a worker run from a laptop read it). A producer, and any
# principal added later, may not: it could read other producers' prompts in the retry store.
WORKER_SIDE = {"app", "user"}
BLOB_ROLE_PREFIX = "Storage Blob Data "  # the roles with blob data actions (Owner, Contributor, Reader)
WRITES_BLOBS = {"Storage Blob Data Owner", "Storage Blob Data Contributor"}
_WIDE_SCOPES = ("Microsoft.Resources/resourceGroups", "Microsoft.Resources/subscriptions")


def setting_containers(infra: Infra, problems: list[str]) -> dict[str, str]:
    """CONTAINER_SETTINGS -> the key of the created container each names."""
    settings = infra.app_settings(problems)
    found = {}
    for setting in CONTAINER_SETTINGS:
        if setting not in settings:
            problems.append(f"app setting {setting} is not set")
            continue
        origin = infra.resolve(*settings[setting])
        keys = [key for key, _, _, _ in infra.created_of_type(CONTAINER) if key.endswith(f" {origin}>")]
        found[setting] = keys[0] if keys else f"<no container {origin}>"
    return found


def check_worker_only_store(infra: Infra) -> list[str]:
    """The worker-only container (STAGING_CONTAINER: the retry store, staged batch jobs, manifests) is its
    own, no principal outside WORKER_SIDE holds a blob role on it or on anything above it (the blob
    service, the account, the resource group), and the worker holds one that writes it."""
    problems = list(infra.problems)
    containers = setting_containers(infra, problems)
    named: dict[str, str] = {}
    for setting, key in containers.items():
        if (other := named.setdefault(key, setting)) != setting:
            problems.append(f"app settings {other} and {setting} name one container, {key}: each needs its own")
    staging = containers.get(WORKER_ONLY_SETTING)
    if staging is None:
        return problems
    covering = roles_covering(infra, staging, problems)
    for where, principal, role, over in covering:
        if principal not in WORKER_SIDE:
            problems.append(
                f"{where}: {principal} gets {role} on {over}, which covers the worker-only container "
                f"{WORKER_ONLY_SETTING} ({staging}): producers hold no role on it"
            )
    if not any(principal == "app" and role in WRITES_BLOBS for _, principal, role, _ in covering):
        problems.append(f"the worker's identity holds no role that writes the worker-only container {staging}")
    return problems


def roles_covering(infra: Infra, container_key: str, problems: list[str]) -> list[tuple[str, str, str, str]]:
    """The blob roles whose scope covers a container: (where, principal as in EXPECTED_ROLES, role, scope)."""
    identity = infra.only(IDENTITY, problems)
    identity_key = identity[0] if identity else "<no identity>"
    found = []
    for scope, symbol, resource in infra.all_resources():
        if resource["type"] != ROLE_ASSIGNMENT:
            continue
        where = f"{infra.file(scope).path.name}:{symbol}"
        config = body(resource)
        properties = config.get("properties") or {}
        role = _role(infra, scope, where, properties.get("roleDefinitionId"), [])  # check_roles reports a bad one
        over = _covering_scope(infra, scope, config.get("scope"), container_key)
        if role is not None and role.startswith(BLOB_ROLE_PREFIX) and over is not None:
            principal = _principal(infra.resolve(scope, properties.get("principalId")), identity_key)
            found.append((where, principal, role, over))
    return found


def _covering_scope(infra: Infra, scope: str | None, target: Any, container_key: str) -> str | None:
    """What an assignment scoped to `target` is on, when that covers the container: the container itself,
    the blob service or account above it, or anything wider than one resource; else None."""
    file = infra.file(scope)
    if not (isinstance(target, str) and target in file.resources):
        return "the whole deployment scope"  # no scope, or one this file does not declare: assume the widest
    if file.resources[target]["type"] in _WIDE_SCOPES:
        return str(file.resources[target]["type"])
    key = infra.resource_key(scope, target)
    # A key holds its parents' keys, each followed by '/': the target is the container or above it.
    return key if key == container_key or f"{key}/" in container_key else None


DAY = 86_400
# Azure Queue Storage's default time-to-live of a message, which every message here keeps (no sender,
# producer or worker, sets time_to_live): a claim-check reference and a re-enqueued pointer can be
# delivered until then, and each needs its blob.
QUEUE_MESSAGE_TTL_SECONDS = 7 * DAY


def lifecycle_bounds(infra: Infra, problems: list[str]) -> dict[str, tuple[int, str]]:
    """Each prefix the worker leaves blobs under, as a rule's prefixMatch resolves ('{<container>}/<prefix>'),
    with how long after its last write the code may still need such a blob (seconds) and why. The numbers
    come from the deployed settings and the code, not from here."""
    containers = setting_containers(infra, problems)
    settings = infra.app_settings(problems)
    retry_seconds = _setting_number(infra, settings, "RETRY_MAX_SECONDS", problems)
    window = int(COMPLETION_WINDOW.removesuffix("h")) * 3600
    batch = (
        window + FILE_EXPIRY_SECONDS,
        f"a batch runs up to its {COMPLETION_WINDOW} window and its request file lives {FILE_EXPIRY_SECONDS} s",
    )
    payloads = containers.get("PAYLOADS_CONTAINER", "")
    staging = containers.get(WORKER_ONLY_SETTING, "")
    return {
        _prefix(infra, payloads, ""): (
            QUEUE_MESSAGE_TTL_SECONDS,
            f"a claim-check message may wait {QUEUE_MESSAGE_TTL_SECONDS} s (the queue's message time-to-live)",
        ),
        _prefix(infra, staging, RETRY_PREFIX): (
            retry_seconds + QUEUE_MESSAGE_TTL_SECONDS,
            f"a job re-enqueues for up to RETRY_MAX_SECONDS ({retry_seconds} s) and its last pointer may wait "
            f"{QUEUE_MESSAGE_TTL_SECONDS} s (the queue's message time-to-live)",
        ),
        _prefix(infra, staging, STAGED_PREFIX): batch,
        _prefix(infra, staging, MANIFEST_PREFIX): batch,
    }


def _prefix(infra: Infra, container_key: str, prefix: str) -> str:
    """'{<the container's name as resolved>}/<prefix>', as a rule's '${name}/<prefix>' resolves."""
    name = re.fullmatch(r".* ([^ ]+)>", container_key)
    return f"{{{name.group(1) if name else container_key}}}/{prefix}"


def _setting_number(
    infra: Infra, settings: Mapping[str, tuple[str | None, Any]], name: str, problems: list[str]
) -> int:
    """The deployed value of a numeric app setting: a literal in its module, or a main.bicep default."""
    if name not in settings:
        problems.append(f"app setting {name} is not set")
        return 0
    origin = infra.resolve(*settings[name])
    literal = re.fullmatch(r"string\((\d+)\)", origin)
    value = int(literal.group(1)) if literal else _default_behind(infra, origin)
    if not isinstance(value, int):
        problems.append(f"app setting {name} ({origin}): no number this check can read")
        return 0
    return value


def lifecycle_rules(infra: Infra, problems: list[str]) -> dict[str, tuple[int, str]]:
    """The storage account's delete rules: resolved prefix -> (daysAfterModificationGreaterThan, where)."""
    policy = infra.only(MANAGEMENT_POLICY, problems)
    if policy is None:
        return {}
    scope, where = policy[1], _where(infra, policy)
    rules: dict[str, tuple[int, str]] = {}
    for rule in _at(body(policy[3]), "properties.policy.rules") or []:
        here = f"{where} rule {rule.get('name')}"
        days = _at(rule, "definition.actions.baseBlob.delete.daysAfterModificationGreaterThan")
        prefixes = _at(rule, "definition.filters.prefixMatch")
        if rule.get("enabled") is not True or rule.get("type") != "Lifecycle":
            problems.append(f"{here}: must be enabled, of type Lifecycle")
        if "blockBlob" not in (_at(rule, "definition.filters.blobTypes") or []):
            problems.append(f"{here}: blobTypes must include blockBlob (every blob the worker writes is one)")
        if not isinstance(days, int):
            problems.append(f"{here}: must delete base blobs after daysAfterModificationGreaterThan days")
            continue
        if not isinstance(prefixes, list) or not prefixes:
            problems.append(f"{here}: no prefixMatch, so it deletes every blob of the account (results included)")
            continue
        for prefix in prefixes:
            resolved = infra.resolve(scope, prefix)
            if resolved in rules:
                problems.append(f"{here}: {resolved} has a rule already ({rules[resolved][1]})")
            rules[resolved] = (days, here)
    return rules


def check_lifecycle(infra: Infra) -> list[str]:
    """Every prefix the worker leaves blobs under (payloads, retries/, jobs/, batches/) has a delete rule
    that waits longer than the code may still need such a blob, and no rule deletes anything else
    (results, the host's blobs, the deployment package)."""
    problems = list(infra.problems)
    wanted = lifecycle_bounds(infra, problems)
    rules = lifecycle_rules(infra, problems)
    for prefix, (bound, why) in wanted.items():
        if prefix not in rules:
            problems.append(f"no lifecycle rule deletes {prefix}* ({why})")
            continue
        days, where = rules[prefix]
        if days * DAY <= bound:
            problems.append(
                f"{where}: {prefix}* is deleted after {days} days, not longer than the {bound / DAY:.2f} days the "
                f"code may still need it: {why}"
            )
    for prefix, (_, where) in rules.items():
        if prefix not in wanted:
            problems.append(f"{where}: deletes {prefix}*, none of the worker's leftovers {sorted(wanted)}")
    return problems


# ---------------------------------------------------------------- private networking

SWITCH = "vnetEnabled"
# Storage and Azure OpenAI: property -> (its value with the switch off, with it on).
LOCKDOWN = {
    STORAGE_ACCOUNT: {
        "properties.publicNetworkAccess": ("Enabled", "Disabled"),
        "properties.networkAcls.defaultAction": ("Allow", "Deny"),
        "properties.networkAcls.bypass": ("AzureServices", "None"),
    },
    OPENAI_ACCOUNT: {
        "properties.publicNetworkAccess": ("Enabled", "Disabled"),
        "properties.networkAcls.defaultAction": ("Allow", "Deny"),
    },
}
# Flex Consumption integrates with a subnet delegated to this service.
APP_DELEGATION = "Microsoft.App/environments"
# 'privatelink.blob.${environment().suffixes.storage}', as the resolver writes it.
STORAGE_SUFFIX = "{environment().suffixes.storage}"
# With the switch on: one private endpoint per (target, group id), registered in these zones.
PRIVATE_ENDPOINTS = {
    ("storage account", "blob"): {f"privatelink.blob.{STORAGE_SUFFIX}"},
    ("storage account", "queue"): {f"privatelink.queue.{STORAGE_SUFFIX}"},
    ("storage account", "table"): {f"privatelink.table.{STORAGE_SUFFIX}"},
    ("openai account", "account"): {"privatelink.openai.azure.com", "privatelink.cognitiveservices.azure.com"},
}
NETWORK_TYPES = (VNET, PRIVATE_ENDPOINT, DNS_ZONE)


def check_network(infra: Infra) -> list[str]:
    """Private networking as the switch (vnetEnabled, as loaded) has it. On: storage and Azure OpenAI
    refuse public traffic; one VNet; the app integrated with its subnet delegated to
    Microsoft.App/environments; every private endpoint in the other subnet, with a zone group naming
    its zones, each zone linked to the VNet; the VNet in the outputs. Off: public access, and none
    of those resources."""
    problems = list(infra.problems)
    on = infra.switch(SWITCH)
    if on is None:
        return [*problems, f"the entry point needs a bool parameter {SWITCH} with a default"]
    problems += _check_lockdown(infra, on)
    if not on:
        return [*problems, *_check_no_network(infra)]
    vnet = infra.only(VNET, problems)
    if vnet is None:
        return problems
    subnets = _subnets(infra, vnet)
    app_subnet = _check_app_subnet(infra, vnet[0], subnets, problems)
    problems += _check_private_endpoints(infra, vnet[0], subnets, app_subnet)
    problems += _check_zone_links(infra, vnet[0])
    problems += _check_network_outputs(infra, {"AZURE_VNET_ID": f"{vnet[0]}.id", "AZURE_VNET_NAME": _name(infra, vnet)})
    return problems


def _name(infra: Infra, found: tuple[str, str | None, str, dict[str, Any]]) -> str:
    return infra.resource_name(found[1], found[2])


def _check_lockdown(infra: Infra, on: bool) -> list[str]:
    """publicNetworkAccess and the firewall of storage and Azure OpenAI follow the switch."""
    problems: list[str] = []
    for type_, paths in LOCKDOWN.items():
        found = infra.created_of_type(type_)  # every one: both Azure OpenAI accounts of the pool
        if not found:
            problems.append(f"expected a {type_}, found none")
        for _, scope, symbol, resource in found:
            for path, values in paths.items():
                value = _at(body(resource), path)
                shown = "missing" if value is MISSING else infra.resolve(scope, value)
                if shown != values[int(on)]:
                    problems.append(
                        f"{type_} {symbol}: {path} is {shown} with {SWITCH}={json.dumps(on)}, must be {values[int(on)]}"
                    )
    return problems


def _site_subnet(infra: Infra, problems: list[str]) -> str:
    """The Function App's virtualNetworkSubnetId, resolved ("missing" when it sets none)."""
    site = infra.site(problems)
    if site is None:
        return "missing"
    value = (site[1].get("properties") or {}).get("virtualNetworkSubnetId", MISSING)
    return "missing" if value is MISSING else infra.resolve(site[0], value)


def _check_no_network(infra: Infra) -> list[str]:
    """Switch off: no VNet, endpoint or zone; the app not integrated; the VNet outputs empty."""
    problems = [
        f"{SWITCH}=false still creates {type_} {sorted(key for key, *_ in infra.created_of_type(type_))}"
        for type_ in NETWORK_TYPES
        if infra.created_of_type(type_)
    ]
    subnet = _site_subnet(infra, problems)
    if subnet not in ("missing", "null", ""):
        problems.append(
            f"{SWITCH}=false: the Function App must not be VNet-integrated, has virtualNetworkSubnetId {subnet}"
        )
    return [*problems, *_check_network_outputs(infra, {"AZURE_VNET_ID": "", "AZURE_VNET_NAME": ""})]


def _check_network_outputs(infra: Infra, wanted: Mapping[str, str]) -> list[str]:
    """The VNet outputs (for peering) and the storage account id (for a producer's own endpoint)."""
    problems: list[str] = []
    storage = infra.only(STORAGE_ACCOUNT, problems)
    expected = {**wanted, "AZURE_STORAGE_ACCOUNT_ID": f"{storage[0]}.id" if storage else "<storage>"}
    for name, value in expected.items():
        output = infra.main.outputs.get(name)
        origin = infra.resolve(None, output.get("value")) if output else "missing"
        if origin != value:
            problems.append(
                f"output {name} is {origin or 'empty'} with {SWITCH}={infra.switch(SWITCH)}, must be {value or 'empty'}"
            )
    return problems


def _subnets(infra: Infra, vnet: tuple[str, str | None, str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The VNet's subnets (declared inline), by resolved name."""
    _, scope, _, resource = vnet
    subnets = _at(body(resource), "properties.subnets")
    if not isinstance(subnets, list):
        return {}
    return {infra.resolve(scope, subnet.get("name")): subnet.get("properties") or {} for subnet in subnets}


def _subnet_name(vnet_key: str, origin: str) -> str | None:
    """The subnet a resolved id names, when it is `<subnet of this VNet>.id`."""
    match = re.fullmatch(re.escape(f"<{vnet_key}/{SUBNET} ") + r"(.+)>\.id", origin)
    return match.group(1) if match else None


def _delegations(subnet: Mapping[str, Any]) -> list[Any]:
    return [_at(d, "properties.serviceName") for d in subnet.get("delegations") or []]


def _check_app_subnet(
    infra: Infra, vnet_key: str, subnets: Mapping[str, Mapping[str, Any]], problems: list[str]
) -> str | None:
    """The app is integrated with a subnet of the VNet delegated to Microsoft.App/environments only."""
    origin = _site_subnet(infra, problems)
    name = _subnet_name(vnet_key, origin)
    if name is None or name not in subnets:
        problems.append(f"the Function App's virtualNetworkSubnetId is {origin}, must be a subnet of the VNet")
        return None
    if _delegations(subnets[name]) != [APP_DELEGATION]:
        problems.append(
            f"subnet {name} of the Function App must be delegated to {APP_DELEGATION} (Flex Consumption) only, "
            f"is delegated to {_delegations(subnets[name])}"
        )
    return name


def _check_private_endpoints(
    infra: Infra, vnet_key: str, subnets: Mapping[str, Mapping[str, Any]], app_subnet: str | None
) -> list[str]:
    """One endpoint per PRIVATE_ENDPOINTS item, in a subnet of the VNet that is not the app's, each
    with a zone group naming exactly its zones."""
    problems: list[str] = []
    targets = {name: found[0] for name, found in openai_accounts(infra, problems).items()}
    if storage := infra.only(STORAGE_ACCOUNT, problems):
        targets["storage account"] = storage[0]
    expected = dict(PRIVATE_ENDPOINTS)
    if "secondary openai account" in targets:  # the pool's second account, as the first
        expected[("secondary openai account", "account")] = PRIVATE_ENDPOINTS[("openai account", "account")]
    seen: set[tuple[str, str]] = set()
    for key, scope, symbol, resource in infra.created_of_type(PRIVATE_ENDPOINT):
        where = f"{infra.file(scope).path.name}:{symbol}"
        properties = body(resource).get("properties") or {}
        subnet = _subnet_name(vnet_key, infra.resolve(scope, _at(properties, "subnet.id")))
        if subnet is None or subnet not in subnets or subnet == app_subnet or _delegations(subnets[subnet]):
            problems.append(f"{where} must be in the VNet's private-endpoint subnet (not delegated), is in {subnet}")
        item = _endpoint_target(infra, scope, where, properties, targets, problems)
        if item is None:
            continue
        if item in seen:
            problems.append(f"{where}: a second private endpoint for {item[1]} on the {item[0]}")
        seen.add(item)
        zones = _zone_group_zones(infra, key)
        if zones != expected.get(item, set()):
            problems.append(
                f"{where} ({item[1]} on the {item[0]}) registers in zones {sorted(zones) or 'none (no zone group)'}, "
                f"must be {sorted(expected.get(item, set()))}"
            )
    for item in sorted(set(expected) - seen):
        problems.append(f"missing private endpoint: {item[1]} on the {item[0]}")
    return problems


def _endpoint_target(
    infra: Infra,
    scope: str | None,
    where: str,
    properties: Mapping[str, Any],
    targets: Mapping[str, str],
    problems: list[str],
) -> tuple[str, str] | None:
    """(target name, group id) of an endpoint's one connection, or None (a problem says why)."""
    connections = properties.get("privateLinkServiceConnections") or []
    if len(connections) != 1:
        problems.append(f"{where} needs exactly one privateLinkServiceConnection, has {len(connections)}")
        return None
    connection = connections[0].get("properties") or {}
    origin = infra.resolve(scope, connection.get("privateLinkServiceId"))
    target = next((name for name, key in targets.items() if origin == f"{key}.id"), None)
    groups = [infra.resolve(scope, group) for group in connection.get("groupIds") or []]
    if target is None or len(groups) != 1:
        problems.append(f"{where} connects to {origin} with groups {groups}: not one group on storage or Azure OpenAI")
        return None
    return target, groups[0]


def _zone_group_zones(infra: Infra, endpoint_key: str) -> set[str]:
    """Names of the private DNS zones the endpoint's zone groups register in (a privateDnsZoneId
    that is no zone this deployment creates is kept as it resolves)."""
    zones = {
        f"{key}.id": _name(infra, (key, scope, symbol, r)) for key, scope, symbol, r in infra.created_of_type(DNS_ZONE)
    }
    names: set[str] = set()
    for key, scope, _, resource in infra.created_of_type(ZONE_GROUP):
        if not key.startswith(f"<{endpoint_key}/"):
            continue
        for config in _at(body(resource), "properties.privateDnsZoneConfigs") or []:
            origin = infra.resolve(scope, _at(config, "properties.privateDnsZoneId"))
            names.add(zones.get(origin, origin))
    return names


def _check_zone_links(infra: Infra, vnet_key: str) -> list[str]:
    """Every private DNS zone is linked to the VNet (without it, the app resolves public addresses)."""
    problems = []
    links = [(key, infra.resolve(scope, _at(body(r), "properties.virtualNetwork.id")))
             for key, scope, _, r in infra.created_of_type(DNS_ZONE_LINK)]  # fmt: skip
    for key, scope, symbol, resource in infra.created_of_type(DNS_ZONE):
        if not any(link.startswith(f"<{key}/") and target == f"{vnet_key}.id" for link, target in links):
            problems.append(
                f"private DNS zone {_name(infra, (key, scope, symbol, resource))} is not linked to the VNet"
            )
    return problems


# The model deployment: each part of it -> the main.bicep parameter it must come from.
MODEL_PARAMETERS = {
    "properties.model.name": "openAiModelName",
    "properties.model.version": "openAiModelVersion",
    "sku.name": "openAiDeploymentSkuName",
    "sku.capacity": "openAiDeploymentCapacity",
}
# The pool's second account: the same model, version and SKU, a capacity of its own.
SECONDARY_MODEL_PARAMETERS = {**MODEL_PARAMETERS, "sku.capacity": "secondaryOpenAiDeploymentCapacity"}
# The batch lane's deployment: SKU GlobalBatch ("=" marks a literal), the rest from its parameters.
BATCH_SKU = "GlobalBatch"
BATCH_MODEL_PARAMETERS = {
    "properties.model.name": "openAiBatchModelName",
    "properties.model.version": "openAiBatchModelVersion",
    "sku.name": f"={BATCH_SKU}",
    "sku.capacity": "openAiBatchDeploymentCapacity",
}
# Follow the model's new default version within ~2 weeks, instead of at retirement or never.
UPGRADE_POLICY = "OnceNewDefaultVersionAvailable"
# The deployment is named openAiDeploymentName, or after the model when that is empty.
DEPLOYMENT_NAMES = {
    "param:openAiDeploymentName",
    "if(empty(param:openAiDeploymentName),param:openAiModelName,param:openAiDeploymentName)",
}


def _at(config: Mapping[str, Any], path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = value.get(part, MISSING) if isinstance(value, dict) else MISSING
    return value


def openai_accounts(infra: Infra, problems: list[str]) -> dict[str, Found]:
    """The Azure OpenAI accounts by role: "openai account", the worker's (AZURE_OPENAI_ENDPOINT),
    deployed whatever the parameters; "secondary openai account", the deployment pool's second,
    deployed only when secondaryOpenAiLocation is set (under an `if`)."""
    found = infra.created_of_type(OPENAI_ACCOUNT)
    fixed = [f for f in found if not infra.conditional(f[1], f[3])]
    optional = [f for f in found if infra.conditional(f[1], f[3])]
    accounts: dict[str, Found] = {}
    if len(fixed) == 1:
        accounts["openai account"] = fixed[0]
    else:
        problems.append(f"expected exactly one {OPENAI_ACCOUNT} deployed whatever the parameters, found {len(fixed)}")
    if len(optional) == 1:
        accounts["secondary openai account"] = optional[0]
    elif optional:
        problems.append(f"expected at most one optional {OPENAI_ACCOUNT} (the pool's second), found {len(optional)}")
    return accounts


def deployments_of(infra: Infra, account_key: str) -> list[Found]:
    """The model deployments of one account (children of it)."""
    return [found for found in infra.created_of_type(OPENAI_DEPLOYMENT) if found[0].startswith(f"<{account_key}/")]


def _is_batch(infra: Infra, found: Found) -> bool:
    return infra.resolve(found[1], _at(body(found[3]), "sku.name")) == BATCH_SKU


def batch_deployments(infra: Infra) -> list[Found]:
    """The GlobalBatch deployments this deployment creates (on any account)."""
    return [found for found in infra.created_of_type(OPENAI_DEPLOYMENT) if _is_batch(infra, found)]


def check_model_deployment(infra: Infra) -> list[str]:
    """The worker's account has one live model deployment: model, explicit version, SKU and capacity
    from parameters (the version with a non-empty default), named by parameter, following new default
    versions. The pool's second account (only with secondaryOpenAiLocation) has the same deployment
    with a capacity of its own. The batch lane's GlobalBatch deployment (only with
    openAiBatchModelName) is on the worker's account, its model, version and capacity parameters."""
    problems = list(infra.problems)
    accounts = openai_accounts(infra, problems)
    for param in ("openAiModelName", "openAiModelVersion"):
        if not infra.main.params.get(param, {}).get("default"):
            problems.append(f"main.bicep parameter {param} needs a non-empty default: never leave the model implicit")
    wanted = {"openai account": (True, MODEL_PARAMETERS)}
    if infra.text_switch("secondaryOpenAiLocation"):
        wanted["secondary openai account"] = (False, SECONDARY_MODEL_PARAMETERS)
        if "secondary openai account" not in accounts:
            problems.append("secondaryOpenAiLocation is set but no second Azure OpenAI account is deployed")
    elif "secondary openai account" in accounts:
        problems.append("secondaryOpenAiLocation is empty but a second Azure OpenAI account is deployed")
    for name, (may_batch, parameters) in wanted.items():
        if name in accounts:
            problems += _check_account_deployments(infra, name, accounts[name], may_batch, parameters)
    if "secondary openai account" in accounts:
        location = infra.resolve(
            accounts["secondary openai account"][1], body(accounts["secondary openai account"][3]).get("location")
        )
        if location != "param:secondaryOpenAiLocation":
            problems.append(f"the second Azure OpenAI account is in {location}, must be param:secondaryOpenAiLocation")
    return problems


def _check_account_deployments(
    infra: Infra, name: str, account: Found, may_batch: bool, parameters: Mapping[str, str]
) -> list[str]:
    """One live deployment, checked against `parameters`; at most one GlobalBatch deployment, only
    where `may_batch`, exactly when openAiBatchModelName is set."""
    problems: list[str] = []
    found = deployments_of(infra, account[0])
    live = [f for f in found if not _is_batch(infra, f)]
    batch = [f for f in found if _is_batch(infra, f)]
    if len(live) != 1:
        problems.append(f"expected exactly one live model deployment on the {name}, found {len(live)}")
    else:
        problems += _check_deployment(infra, live[0], parameters, UPGRADE_POLICY)
        if infra.resolve(live[0][1], body(live[0][3]).get("name")) not in DEPLOYMENT_NAMES:
            problems.append(
                f"{_where(infra, live[0])}: the name must come from openAiDeploymentName (empty: openAiModelName)"
            )
    batch_on = bool(infra.text_switch("openAiBatchModelName")) and may_batch
    if len(batch) != int(batch_on):
        state = "set" if infra.text_switch("openAiBatchModelName") else "empty"
        problems.append(
            f"the {name} has {len(batch)} {BATCH_SKU} deployment(s) with openAiBatchModelName {state}, "
            f"expected {int(batch_on)}"
        )
    for deployment in batch:
        problems += _check_deployment(infra, deployment, BATCH_MODEL_PARAMETERS, None)
    return problems


def _check_deployment(
    infra: Infra, found: Found, parameters: Mapping[str, str], upgrade_policy: str | None
) -> list[str]:
    """Each of `parameters` (path -> main.bicep parameter, or "=<literal>") as given; the model
    format OpenAI; versionUpgradeOption as given (None: not set, as for GlobalBatch)."""
    problems = []
    _, scope, _, resource = found
    config = body(resource)
    where = _where(infra, found)
    for path, param in parameters.items():
        value = _at(config, path)
        wanted = param[1:] if param.startswith("=") else f"param:{param}"
        shown = f"the literal {param[1:]}" if param.startswith("=") else f"the main.bicep parameter {param}"
        if value is MISSING:
            problems.append(f"{where} sets no {path}: it must be explicit, {shown}")
        elif infra.resolve(scope, value) != wanted:
            problems.append(f"{where}: {path} is {infra.resolve(scope, value)}, must be {shown}")
    if infra.resolve(scope, _at(config, "properties.model.format")) != "OpenAI":
        problems.append(f"{where}: properties.model.format must be OpenAI")
    upgrade = _at(config, "properties.versionUpgradeOption")
    shown_upgrade = "missing" if upgrade is MISSING else infra.resolve(scope, upgrade)
    if upgrade_policy is not None and shown_upgrade != upgrade_policy:
        problems.append(f"{where}: versionUpgradeOption is {shown_upgrade}, must be {upgrade_policy}")
    if upgrade_policy is None and upgrade is not MISSING:
        problems.append(f"{where}: versionUpgradeOption is {shown_upgrade}; auto-upgrade does not apply to {BATCH_SKU}")
    return problems


# ---------------------------------------------------------------- the pool and the batch lane

POOL_SETTING = "AZURE_OPENAI_POOL"
# What each AZURE_OPENAI_POOL entry says (the worker's PoolEntry takes these and an optional weight).
POOL_KEYS = ("name", "endpoint", "deployment", "priority", "api")


API_PARAMETER = "openAiApi"  # the API the deployments serve: chat or responses (AZURE_OPENAI_API)


def expected_pool(infra: Infra, problems: list[str]) -> list[dict[str, Any]]:
    """AZURE_OPENAI_POOL as it must be: the worker's account's live deployment at priority 1 and, with
    a second account, its live deployment at priority 2 (names primary and secondary)."""
    entries = []
    accounts = openai_accounts(infra, problems)
    for priority, (role, name) in enumerate(
        (("openai account", "primary"), ("secondary openai account", "secondary")), 1
    ):
        if role not in accounts:
            continue
        live = [found for found in deployments_of(infra, accounts[role][0]) if not _is_batch(infra, found)]
        deployment = (
            infra.resource_name(live[0][1], live[0][2]) if len(live) == 1 else f"<no one live deployment on the {role}>"
        )
        entries.append(
            {
                "name": name,
                "endpoint": f"{accounts[role][0]}.properties.endpoint",
                "deployment": deployment,
                "priority": priority,
                "api": f"param:{API_PARAMETER}",  # every entry serves the one API openAiApi names
            }
        )
    return entries


def check_pool_and_batch(infra: Infra) -> list[str]:
    """AZURE_OPENAI_POOL is string() of the expected pool (so valid JSON of exactly POOL_KEYS);
    BATCH_DEPLOYMENT names the GlobalBatch deployment, or is empty without one; the outputs say the
    same (the pool, the second account's endpoint or empty, the batch deployment or empty)."""
    problems = list(infra.problems)
    settings = infra.app_settings(problems)
    pool = expected_pool(infra, problems)
    if POOL_SETTING in settings:
        scope, expr = settings[POOL_SETTING]
        function = expr.get("function") if isinstance(expr, dict) else None
        if not function or function["type"] != "string" or len(function.get("parameters") or {}) != 1:
            problems.append(f"app setting {POOL_SETTING} must be string(<array of entries>): JSON text")
        elif (got := structure(infra, scope, next(iter(function["parameters"].values())))) != pool:
            problems.append(f"app setting {POOL_SETTING} is {got}, must be {pool}")
    batch = batch_deployments(infra)
    batch_name = infra.resource_name(batch[0][1], batch[0][2]) if len(batch) == 1 else ""
    if "BATCH_DEPLOYMENT" in settings and infra.resolve(*settings["BATCH_DEPLOYMENT"]) != batch_name:
        problems.append(
            f"app setting BATCH_DEPLOYMENT is {infra.resolve(*settings['BATCH_DEPLOYMENT']) or 'empty'}, must be "
            f"{batch_name or 'empty (no batch deployment)'}"
        )
    secondary = openai_accounts(infra, []).get("secondary openai account")
    outputs = {
        "BATCH_DEPLOYMENT": batch_name,
        "AZURE_OPENAI_SECONDARY_ENDPOINT": f"{secondary[0]}.properties.endpoint" if secondary else "",
    }
    for name, wanted in outputs.items():
        output = infra.main.outputs.get(name)
        got = infra.resolve(None, output.get("value")) if output else "missing"
        if got != wanted:
            problems.append(f"output {name} is {got or 'empty'}, must be {wanted or 'empty'}")
    output = infra.main.outputs.get(POOL_SETTING)
    if output is None or infra.resolve(None, output.get("value")) != (
        infra.resolve(*settings[POOL_SETTING]) if POOL_SETTING in settings else None
    ):
        problems.append(f"output {POOL_SETTING} must be the app setting's value")
    return problems


def check_flex_consumption(infra: Infra) -> list[str]:
    """Flex Consumption plan, the Python version a parameter (pythonVersion, allowed versions only),
    identity-based deployment storage, scale limits as params."""
    problems = list(infra.problems)
    plan = infra.only(PLAN, problems)
    if plan:
        sku = body(plan[3]).get("sku") or {}
        if sku.get("name") != "FC1" or sku.get("tier") != "FlexConsumption":
            problems.append(f"the plan must be FC1 / FlexConsumption, is {sku}")
    site = infra.site(problems)
    identity = infra.only(IDENTITY, problems)
    storage = infra.only(STORAGE_ACCOUNT, problems)
    if not (site and identity and storage):
        return problems
    scope, config = site
    properties = config.get("properties") or {}
    if plan and infra.resolve(scope, properties.get("serverFarmId")) != f"{plan[0]}.id":
        problems.append("the Function App must run on the Flex Consumption plan")
    app_config = properties.get("functionAppConfig") or {}
    runtime = app_config.get("runtime") or {}
    if infra.resolve(scope, runtime.get("name")) != "python":
        problems.append(f"functionAppConfig.runtime.name must be python, is {runtime}")
    problems += _check_python_version(infra, infra.resolve(scope, runtime.get("version")))

    identity_id = f"{identity[0]}.id"
    assigned = [
        infra.resolve(scope, unquote(k)) for k in (config.get("identity") or {}).get("userAssignedIdentities", {})
    ]
    if assigned != [identity_id]:
        problems.append(f"the app must run as exactly the one user-assigned identity, has {assigned}")
    problems += _check_deployment_storage(infra, scope, app_config, identity_id, storage[0])
    problems += _check_scale(infra, scope, app_config)
    return problems


def python_versions(infra: Infra) -> tuple[list[str], str | None]:
    """The entry point's pythonVersion parameter: (its @allowed list, its default)."""
    param = infra.main.params.get(PYTHON_PARAM) or {}
    allowed = next((d["argument"] for d in param.get("decorators", []) if d["type"] == "allowed"), [])
    return [str(v) for v in allowed], param.get("default")


def _check_python_version(infra: Infra, origin: str) -> list[str]:
    """The runtime version is the entry point's pythonVersion parameter (azd sets it), which allows
    only Python versions (3.N) and defaults to one of them."""
    if origin != f"param:{PYTHON_PARAM}":
        return [f"functionAppConfig.runtime.version must be the {PYTHON_PARAM} parameter, is {origin}"]
    allowed, default = python_versions(infra)
    problems = [
        f"{PYTHON_PARAM} allows {v!r}, which is not a Python version" for v in allowed if not re.fullmatch(r"3\.\d+", v)
    ]
    if not allowed or default not in allowed:
        problems.append(f"{PYTHON_PARAM} must list its versions in @allowed and default to one of them ({default!r})")
    return problems


def _check_deployment_storage(
    infra: Infra, scope: str | None, app_config: Mapping[str, Any], identity_id: str, storage_key: str
) -> list[str]:
    """functionAppConfig.deployment.storage: a container we create, read with the app's identity."""
    problems = []
    deployment = (app_config.get("deployment") or {}).get("storage") or {}
    auth = deployment.get("authentication") or {}
    if deployment.get("type") != "blobContainer":
        problems.append("functionAppConfig.deployment.storage.type must be blobContainer")
    if (
        auth.get("type") != "UserAssignedIdentity"
        or infra.resolve(scope, auth.get("userAssignedIdentityResourceId")) != identity_id
    ):
        problems.append("deployment storage must authenticate with the app's user-assigned identity")
    target = infra.resolve(scope, deployment.get("value"))
    containers = infra.created_names(CONTAINER)
    blob = f"{{{storage_key}.properties.primaryEndpoints.blob}}"
    if not any(target == f"{blob}{{{container}}}" for container in containers):
        problems.append(
            f"deployment storage {target} must be a container this deployment creates in its storage account"
        )
    return problems


def _check_scale(infra: Infra, scope: str | None, app_config: Mapping[str, Any]) -> list[str]:
    """Scale limits come from main.bicep parameters: maximumInstanceCount when set, else derived from the
    quota (resources.bicep's instanceCap, evaluated by tests/infra/test_sizing.py); small and explained."""
    problems = []
    scale = app_config.get("scaleAndConcurrency") or {}
    if infra.resolve(scope, scale.get("instanceMemoryMB")) != "param:instanceMemoryMB":
        problems.append("scaleAndConcurrency.instanceMemoryMB must come from the main.bicep parameter instanceMemoryMB")
    cap = infra.resolve(scope, scale.get("maximumInstanceCount"))
    if cap.startswith("var:"):  # resources.bicep as the entry point: its own variable
        cap = infra.resolve(None, infra.main.vars[cap.removeprefix("var:")]["value"])
    if not (cap.startswith("if(") and ",param:maximumInstanceCount," in cap):
        problems.append(
            "scaleAndConcurrency.maximumInstanceCount must be the main.bicep parameter maximumInstanceCount when "
            f"set, else derived from the quota; it is {cap}"
        )
    limit = infra.main.params.get("maximumInstanceCount")
    if limit:
        description = _description(limit)
        if not ("quota" in description.lower() and "TPM" in description and "batchSize" in description):
            problems.append(
                "maximumInstanceCount's @description must explain the instances x concurrency vs TPM quota math"
            )
        if not isinstance(limit.get("default"), int) or limit["default"] > 20:
            problems.append(f"maximumInstanceCount should default small, is {limit.get('default')}")
    return problems


def _description(param: Mapping[str, Any]) -> str:
    return next((str(d["argument"]) for d in param.get("decorators", []) if d["type"] == "description"), "")


def described_concurrency(infra: Infra) -> int | None:
    """The per-instance concurrency maximumInstanceCount's description states ('up to N jobs')."""
    match = re.search(r"up to (\d+) jobs", _description(infra.main.params.get("maximumInstanceCount", {})))
    return int(match.group(1)) if match else None


def check_app_settings(infra: Infra, code_reads: Iterable[str], sample_values: Mapping[str, str]) -> list[str]:
    """Bicep sets what the code reads (and nothing secret), wired to the resources it creates."""
    problems = list(infra.problems)
    reads = set(code_reads)
    settings = infra.app_settings(problems)
    problems += _check_setting_names(reads, set(settings), set(sample_values))

    def value(name: str) -> str | None:
        return infra.resolve(*settings[name]) if name in settings else None

    for name, expected in _wired_settings(infra, problems).items():
        if name in settings and value(name) != expected:
            problems.append(f"app setting {name} resolves to {value(name)}, expected {expected}")
    problems += _check_created_names(infra, value)
    problems += _check_sample_defaults(infra, set(settings), value, sample_values)
    return problems


def _check_setting_names(reads: set[str], names: set[str], sample: set[str]) -> list[str]:
    """The names the code reads, infra/ sets and local.settings.sample.json sets agree."""
    forbidden = {
        name
        for name in names
        if name in FORBIDDEN_SETTINGS or (SECRETISH.search(name) and name not in reads | HOST_SETTINGS)
    }
    sample = sample - {"FUNCTIONS_WORKER_RUNTIME"}
    problems = []
    for wrong, message in (
        (reads - OPTIONAL_IN_AZURE - names, "app setting {} is read by shared/settings/ but not set in infra/"),
        (HOST_SETTINGS - names, "app setting {} is read by the Functions host / Python worker but not set in infra/"),
        (names & DOUBLE_TELEMETRY, "app setting {} must not be set: the Python worker already sets up telemetry"),
        (names - reads - HOST_SETTINGS, "app setting {} is set in infra/ but not in shared/settings/ SETTINGS"),
        (forbidden, "app setting {} must not be set: no keys or connection strings"),
        (reads - sample, "{} is read by the code but missing from local.settings.sample.json"),
        (sample - reads, "local.settings.sample.json sets {}, which shared/settings/ does not read"),
    ):
        problems += [message.format(name) for name in sorted(wrong)]
    return problems


def _wired_settings(infra: Infra, problems: list[str]) -> dict[str, str]:
    """What the identity, storage, OpenAI and App Insights settings must resolve to."""
    identity = infra.only(IDENTITY, problems)
    client_id = f"{identity[0]}.properties.clientId" if identity else "<identity>"
    storage = infra.only(STORAGE_ACCOUNT, problems)
    storage_key = storage[0] if storage else "<storage>"
    openai = openai_accounts(infra, problems).get("openai account")
    insights = infra.only(APP_INSIGHTS, problems)
    wanted = {
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": client_id,
        "AZURE_CLIENT_ID": client_id,
        "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={{{client_id}}};Authorization=AAD",
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
        # Prompts and answers stay out of telemetry unless someone decides otherwise.
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false",
        "AzureWebJobsStorage__blobServiceUri": f"{storage_key}.properties.primaryEndpoints.blob",
        "AzureWebJobsStorage__queueServiceUri": f"{storage_key}.properties.primaryEndpoints.queue",
        "AzureWebJobsStorage__tableServiceUri": f"{storage_key}.properties.primaryEndpoints.table",
    }
    if openai:
        wanted["AZURE_OPENAI_ENDPOINT"] = f"{openai[0]}.properties.endpoint"
    if insights:
        wanted["APPLICATIONINSIGHTS_CONNECTION_STRING"] = f"{insights[0]}.properties.ConnectionString"
    return wanted


# Settings that name a resource: (setting, type of the resource, what the problem calls it).
NAMED_RESOURCES = (
    ("AZURE_OPENAI_DEPLOYMENT", OPENAI_DEPLOYMENT, "model deployment"),
    ("AZURE_OPENAI_ALLOWED_DEPLOYMENTS", OPENAI_DEPLOYMENT, "model deployment"),
    ("JOBS_QUEUE", QUEUE, "queue"),
    ("RESULTS_CONTAINER", CONTAINER, "container"),
    ("PAYLOADS_CONTAINER", CONTAINER, "container"),
    ("STAGING_CONTAINER", CONTAINER, "container"),
)


def _check_created_names(infra: Infra, value: Callable[[str], str | None]) -> list[str]:
    """The deployments, queues and containers the settings name are ones this deployment creates,
    with the poison queue beside the jobs queue and every reply queue."""
    problems = []
    for name, type_, kind in NAMED_RESOURCES:
        setting = value(name)
        if setting is not None and setting not in infra.created_names(type_):
            problems.append(f"app setting {name} ({setting}) is not a {kind} this deployment creates")
    queues = infra.created_names(QUEUE)
    jobs = value("JOBS_QUEUE")
    if jobs is not None:
        poison = f"{{{jobs}}}-poison" if not jobs.startswith("{") else f"{jobs}-poison"
        if poison not in queues:
            problems.append(f"the poison queue <JOBS_QUEUE>-poison is not created (have {sorted(queues)})")
    replies = value("REPLY_QUEUES_ALLOWED")
    if replies is not None:
        match = re.fullmatch(r"join\((.*),,\)", replies)
        if not match or f"each({match.group(1)})" not in queues:
            problems.append(f"REPLY_QUEUES_ALLOWED ({replies}) must join the reply queue names storage creates")
    return problems


def _check_sample_defaults(
    infra: Infra, names: set[str], value: Callable[[str], str | None], sample_values: Mapping[str, str]
) -> list[str]:
    """Defaults of the main.bicep parameters behind each setting = the sample's values."""
    problems = []
    for name in sorted(names & set(sample_values) - LOCAL_ONLY_VALUES):
        default = _default_behind(infra, value(name) or "")
        if default is MISSING:
            continue
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        if shown != sample_values[name]:
            problems.append(
                f"{name}: main.bicep default {shown!r} != local.settings.sample.json {sample_values[name]!r}"
            )
    return problems


def _default_behind(infra: Infra, origin: str) -> Any:
    """The main.bicep default a resolved setting takes: of `param:X` (also inside string() or join()),
    or of `if(empty(param:X),param:Y,param:X)` (X, else Y when X defaults to empty); MISSING when the
    setting does not come from parameters alone."""
    params = infra.main.params
    fallback = re.fullmatch(r"if\(empty\(param:(\w+)\),param:(\w+),param:\1\)", origin)
    if fallback and {fallback.group(1), fallback.group(2)} <= set(params):
        return params[fallback.group(1)].get("default") or params[fallback.group(2)].get("default")
    match = re.fullmatch(r"(?:string|join)?\(?param:(\w+)(?:,,)?\)?", origin)
    if not match or match.group(1) not in params:
        return MISSING
    return params[match.group(1)].get("default")


REQUIRED_OUTPUTS = {
    "AZURE_LOCATION", "AZURE_TENANT_ID", "RESOURCE_GROUP", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_QUEUE_ENDPOINT", "AZURE_STORAGE_BLOB_ENDPOINT", "JOBS_QUEUE",
    "RESULTS_CONTAINER", "PAYLOADS_CONTAINER", "FUNCTION_APP_NAME", "AZURE_CLIENT_ID",
    "AZURE_STORAGE_ACCOUNT_ID", "AZURE_VNET_NAME", "AZURE_VNET_ID",
    "STAGING_CONTAINER", "AZURE_OPENAI_POOL", "AZURE_OPENAI_SECONDARY_ENDPOINT", "BATCH_DEPLOYMENT",
}  # fmt: skip


def check_azd(infra: Infra, azure_yaml: str, parameters_json: str) -> list[str]:
    """azure.yaml, main.parameters.json and main.bicep agree; outputs are there and secret-free."""
    problems = list(infra.problems)
    main = infra.main

    if (main.doc.get("globals") or {}).get("scope", {}).get("value") != "subscription":
        problems.append("main.bicep should be targetScope = 'subscription' (azd creates rg-<env>)")
    groups = [r for r in main.resources.values() if r["type"] == "Microsoft.Resources/resourceGroups"]
    if [infra.resolve(None, body(g).get("name")) for g in groups] != ["rg-{param:environmentName}"]:
        problems.append("main.bicep should create one resource group named rg-${environmentName}")

    try:
        parameters = json.loads(parameters_json)["parameters"]
    except (ValueError, KeyError) as exc:
        return [*problems, f"main.parameters.json is not a parameters file: {exc}"]
    problems += _check_parameters_file(main, parameters)
    problems += _check_azure_yaml(infra, parse_simple_yaml(azure_yaml))
    problems += _check_outputs(infra)
    return problems


# main.bicep parameters azd fills from its environment: parameter -> azd variable.
AZD_VARIABLES = {
    "environmentName": "AZURE_ENV_NAME",
    "location": "AZURE_LOCATION",
    "principalId": "AZURE_PRINCIPAL_ID",
}


def _check_parameters_file(main: BicepFile, parameters: Mapping[str, Any]) -> list[str]:
    """main.parameters.json <-> main.bicep params."""
    problems = []
    for name in sorted(set(parameters) - set(main.params)):
        problems.append(f"main.parameters.json sets {name}, which main.bicep does not declare")
    for name, param in main.params.items():
        if param.get("default") is None and name not in parameters:
            problems.append(f"main.bicep parameter {name} has no default and main.parameters.json does not set it")
    for name, variable in AZD_VARIABLES.items():
        if (parameters.get(name) or {}).get("value") != f"${{{variable}}}":
            problems.append(f"main.parameters.json should map {name} to ${{{variable}}}")
    for name, entry in parameters.items():
        match = re.fullmatch(r"\$\{\w+=(.*)\}", str(entry.get("value")))
        allowed = next(
            (d["argument"] for d in main.params.get(name, {}).get("decorators", []) if d["type"] == "allowed"), None
        )
        if match and allowed is not None and match.group(1) not in allowed:
            problems.append(f"main.parameters.json default {match.group(1)!r} for {name} is not in its @allowed list")
        default = main.params.get(name, {}).get("default")
        if match and isinstance(default, bool) and match.group(1) != json.dumps(default):
            problems.append(
                f"main.parameters.json default {match.group(1)!r} for {name} is not main.bicep's {json.dumps(default)}"
            )
    return problems


# azure.yaml service key -> the values it may have (the first, sorted, is the one named in the problem).
SERVICE_KEYS = (("project", {".", "./"}), ("language", {"python", "py"}), ("host", {"function"}))


def _check_azure_yaml(infra: Infra, manifest: Mapping[str, Any]) -> list[str]:
    """azure.yaml <-> the Function App: one service, deployed to the app tagged with its name,
    and infra/main.bicep as the template."""
    problems: list[str] = []
    services = manifest.get("services") or {}
    if not isinstance(services, dict) or len(services) != 1:
        problems.append(f"azure.yaml should declare exactly one service, has {services}")
    else:
        ((service_name, service),) = services.items()
        for key, accepted in SERVICE_KEYS:
            if service.get(key) not in accepted:
                problems.append(
                    f"azure.yaml service {service_name}: {key} should be {sorted(accepted)[0]}, is {service.get(key)}"
                )
        problems += _check_service_tag(infra, service_name)
    infra_section = manifest.get("infra") or {}
    if isinstance(infra_section, dict):
        path = (
            infra.root.parent / str(infra_section.get("path", "infra")) / f"{infra_section.get('module', 'main')}.bicep"
        )
        if path.resolve() != (infra.root / "main.bicep").resolve():
            problems.append(f"azure.yaml infra points at {path}, not infra/main.bicep")
    return problems


def _check_service_tag(infra: Infra, service_name: str) -> list[str]:
    """The Function App carries tag azd-service-name=<the azure.yaml service>: azd deploy finds it so."""
    problems: list[str] = []
    site = infra.site(problems)
    if site:
        tag = _find_key(site[1].get("tags"), "azd-service-name")
        if tag is MISSING or infra.resolve(site[0], tag) != service_name:
            shown = "missing" if tag is MISSING else infra.resolve(site[0], tag)
            problems.append(f"the Function App needs tag azd-service-name={service_name} (azure.yaml), has {shown}")
    return problems


def _check_outputs(infra: Infra) -> list[str]:
    """Outputs: the ones azd and the docs use; nothing secret."""
    problems = []
    for name in sorted(REQUIRED_OUTPUTS - set(infra.main.outputs)):
        problems.append(f"main.bicep should output {name}")
    for name, output in infra.main.outputs.items():
        origin = infra.resolve(None, output.get("value"))
        if SECRETISH.search(name) or re.search(r"ConnectionString|list\w*\(|[Kk]eys", origin):
            problems.append(f"output {name} ({origin}) looks like a secret: outputs land in .azure/<env>/.env")
    return problems


# resources.bicep parameters that may differ in main.bicep: azd asks for location (no default,
# @metadata azd location), while a resource-group deployment defaults it to the group's region.
LAYER_DIFFERENCES = {"location"}
# What `az deployment group create -g <rg> -f infra/resources.bicep -p environmentName=...` must set.
GROUP_REQUIRED_PARAMS = {"environmentName"}


def check_layers(infra: Infra) -> list[str]:
    """main.bicep (loaded as `infra`) only creates the resource group and deploys resources.bicep
    into it, passing every parameter through unchanged and re-exporting every output."""
    problems = list(infra.problems)
    main = infra.main
    others = [symbol for symbol, r in main.resources.items() if r["type"] != RESOURCE_GROUP]
    if others:
        problems.append(f"main.bicep should create only the resource group; resources.bicep the rest, not {others}")
    layer = _group_layer(infra)
    if layer is None:
        return [*problems, f"main.bicep should call exactly one module, {GROUP_ENTRY}, has {sorted(main.modules)}"]
    target = body(main.modules[layer]).get("scope")
    if not (isinstance(target, str) and main.resources.get(target, {}).get("type") == RESOURCE_GROUP):
        problems.append(f"main.bicep module {layer} must be scoped to the resource group it creates, is {target}")
    if (infra.module_files[layer].doc.get("globals") or {}).get("scope", {}).get("value") != "resourceGroup":
        problems.append(f"{GROUP_ENTRY} should be targetScope = 'resourceGroup' (az deployment group create)")
    problems += _check_nested_scopes(infra)
    problems += _check_layer_params(infra, layer)
    problems += _check_layer_outputs(infra, layer)
    return problems


def _group_layer(infra: Infra) -> str | None:
    """The symbol of main.bicep's one module, when it is the loaded resources.bicep; else None."""
    main = infra.main
    modules = [
        symbol
        for symbol, module in main.modules.items()
        if module.get("type") == "local" and Path(module["detail"]["path"]).name == GROUP_ENTRY
    ]
    if len(main.modules) != 1 or len(modules) != 1 or modules[0] not in infra.module_files:
        return None
    return modules[0]


def _check_nested_scopes(infra: Infra) -> list[str]:
    """Modules below resources.bicep deploy into the same resource group (no `scope:` elsewhere)."""
    problems = []
    for scope, file in infra.module_files.items():
        for symbol, module in file.modules.items():
            where = body(module).get("scope", MISSING)
            if where is not MISSING and infra.resolve(scope, where) != "resource_group(null,null)":
                problems.append(
                    f"{file.path.name} module {symbol} deploys to {infra.resolve(scope, where)}, not its own group"
                )
    return problems


def _check_layer_params(infra: Infra, layer: str) -> list[str]:
    """Parameters: the same declarations in both files, each passed through as itself."""
    problems = []
    main, group = infra.main, infra.module_files[layer]
    for name in sorted(set(group.params) ^ set(main.params)):
        where = GROUP_ENTRY if name in group.params else MAIN_ENTRY
        problems.append(f"parameter {name} is declared in {where} only: declare it in both, verbatim")
    for name in sorted(set(group.params) & set(main.params) - LAYER_DIFFERENCES):
        if group.params[name] != main.params[name]:
            problems.append(
                f"parameter {name} differs between {MAIN_ENTRY} and {GROUP_ENTRY} (type, default or decorators)"
            )
    for name, param in group.params.items():
        if param.get("default") is None and name not in GROUP_REQUIRED_PARAMS:
            problems.append(
                f"{GROUP_ENTRY} parameter {name} needs a default: "
                f"the resource-group command only sets {sorted(GROUP_REQUIRED_PARAMS)}"
            )
        passed = infra.module_param(layer, name)
        if passed is MISSING:
            problems.append(f"{MAIN_ENTRY} does not pass {name} to {GROUP_ENTRY}: its own default would win")
        elif infra.resolve(None, passed) != f"param:{name}":
            problems.append(
                f"{MAIN_ENTRY} passes {name}={infra.resolve(None, passed)} to {GROUP_ENTRY}, not its parameter {name}"
            )
    for name in sorted(set(body(main.modules[layer]).get("params") or {}) - set(group.params)):
        problems.append(f"{MAIN_ENTRY} passes {name}, which {GROUP_ENTRY} does not declare")
    return problems


def _check_layer_outputs(infra: Infra, layer: str) -> list[str]:
    """Outputs: every one of resources.bicep's, re-exported under the same name."""
    problems = []
    main, group = infra.main, infra.module_files[layer]
    for name in sorted(set(group.outputs) - set(main.outputs)):
        problems.append(f"{MAIN_ENTRY} does not re-export {GROUP_ENTRY} output {name} (azd reads main.bicep's)")
    for name, output in main.outputs.items():
        if dotted(output.get("value")) != [layer, "outputs", name]:
            problems.append(f"{MAIN_ENTRY} output {name} should be {layer}.outputs.{name}")
        elif name in group.outputs and output.get("type") != group.outputs[name].get("type"):
            problems.append(f"{MAIN_ENTRY} output {name} has another type than in {GROUP_ENTRY}")
    return problems


# ---------------------------------------------------------------- monitoring (app/alerts.bicep)

WORKSPACE = "Microsoft.OperationalInsights/workspaces"
ACTION_GROUP = "Microsoft.Insights/actionGroups"
LOG_ALERT = "Microsoft.Insights/scheduledQueryRules"
METRIC_ALERT = "Microsoft.Insights/metricAlerts"
DIAGNOSTIC_SETTING = "Microsoft.Insights/diagnosticSettings"
WORKBOOK = "Microsoft.Insights/workbooks"
QUEUE_SERVICE = "Microsoft.Storage/storageAccounts/queueServices"

# The variable of the alerts module naming the worker's metrics (one place; the workbook's
# __PLACEHOLDERS__ are filled from it). Its keys, which the alerts and panels below use:
METRICS_VARIABLE = "metrics"
METRIC_KEYS = {"jobsFinished", "queueWait", "requeued", "throttled", "queueDepth", "queueAge", "tokenUsage"}
# The per-job log line of shared/delivery.py, which the failed-jobs alert and the error-code panel parse.
JOB_LINE_PREFIX = 'startswith "job id="'
# Log alerts: what each one's query must contain ({key} = the metric of that key, quoted as in KQL),
# and where its threshold comes from (a main.bicep parameter, or a fixed value).
LOG_ALERTS = {
    "jobs failing": (
        ("AppTraces", JOB_LINE_PREFIX, 'status == "failed"', "dcount(id)"),
        "param:alertFailedJobsThreshold",
    ),
    "poison queue not empty": (
        ("AppMetrics", 'Name == "{queueDepth}"', '"messaging.destination.name"', "-poison"),
        "0",
    ),
    "queue wait p95": (
        ("AppMetrics", 'Name == "{queueWait}"', '"job.requeued"', "95)"),
        "param:alertQueueWaitP95Seconds",
    ),
    "function errors": (("AppRequests", "Success == false", "AppExceptions"), "param:alertFunctionErrorsThreshold"),
}
# The throttling alert: Azure OpenAI's platform metric, only the requests answered 429.
THROTTLING_CRITERION = {
    "criterionType": "StaticThresholdCriterion",
    "metricNamespace": "Microsoft.CognitiveServices/accounts",
    "metricName": "AzureOpenAIRequests",
    "timeAggregation": "Total",
    "threshold": "param:alertThrottledRequestsThreshold",
}
THROTTLING_DIMENSION = {"name": "StatusCode", "operator": "Include", "values": "[429]"}
# Diagnostic settings: target -> (log categories, metric categories), all to the workspace.
DIAGNOSTICS = {
    "openai account": ({"Audit", "RequestResponse", "Trace", "AzureOpenAIRequestUsage"}, {"AllMetrics"}),
    "queue service": ({"StorageRead", "StorageWrite", "StorageDelete"}, set()),
}
# Workbook panels (query items, by name): what each query must mention.
WORKBOOK_PANELS = {
    "jobs-per-minute": ('Name == "{jobsFinished}"', '"status"', "1m"),
    "tokens-by-deployment": ('Name == "{tokenUsage}"', "gen_ai.request.model", "gen_ai.token.type"),
    "queue-wait": ('Name == "{queueWait}"', '"job.requeued"', ", 50)", ", 95)"),
    "throttled": ('"{throttled}"', "gen_ai.request.model", '"{requeued}"', '"reason"'),
    "queue-depth": ('"{queueDepth}"', '"{queueAge}"', '"messaging.destination.name"'),
    "top-error-codes": (JOB_LINE_PREFIX, 'status == "failed"', "by code"),
}
_DURATION = re.compile(r"PT\d+[MH]")
_PLACEHOLDER = re.compile(r"__[A-Z_]+__")


def check_monitoring(infra: Infra) -> list[str]:
    """One action group (e-mail only when alertEmail is set) that every alert notifies; the log
    alerts query the workspace for what LOG_ALERTS says; the throttling alert watches 429s of the
    OpenAI account; Azure OpenAI and the queue service log to the workspace; the workbook's panels
    read the worker's metrics."""
    problems = list(infra.problems)
    group = _check_action_group(infra, problems)
    workspace = infra.only(WORKSPACE, problems)
    alerts = infra.created_of_type(LOG_ALERT)
    metrics = _metric_names(infra, alerts[0][1] if alerts else None, problems)
    if not (group and workspace and metrics is not None):
        return problems
    group_id, workspace_id = f"{group[0]}.id", f"{workspace[0]}.id"
    problems += _check_log_alerts(infra, alerts, workspace_id, group_id, metrics)
    problems += _check_throttling_alert(infra, group_id)
    problems += _check_diagnostics(infra, workspace_id)
    problems += _check_workbook(infra, workspace_id, metrics)
    return problems


def _where(infra: Infra, found: Found) -> str:
    return f"{infra.file(found[1]).path.name}:{found[2]}"


def _check_action_group(infra: Infra, problems: list[str]) -> Found | None:
    group = infra.only(ACTION_GROUP, problems)
    if group is None:
        return None
    config, where = body(group[3]), _where(infra, group)
    short = infra.resolve(group[1], _at(config, "properties.groupShortName"))
    if not 1 <= len(short) <= 12 or "{" in short:
        problems.append(f"{where}: groupShortName must be a literal of 1-12 characters, is {short}")
    if infra.resolve(group[1], config.get("location")) != "global":
        problems.append(f"{where}: an action group's location is global")
    receivers = infra.resolve(group[1], _at(config, "properties.emailReceivers"))
    if not receivers.startswith("if(empty(param:alertEmail),[],[") or "emailAddress: param:alertEmail" not in receivers:
        problems.append(f"{where}: emailReceivers must be [] when alertEmail is empty, else e-mail it; is {receivers}")
    return group


def evaluate(infra: Infra, scope: str | None, expr: Any) -> Any:
    """The value of a string expression built from literals, variables, format(), replace() and
    string(loadJsonContent()); anything else as `Infra.resolve` has it."""
    file = infra.file(scope)
    if expr is None:
        return None
    if isinstance(expr, str) and "${" not in expr:
        if expr in file.vars:
            return evaluate(infra, scope, file.vars[expr]["value"])
        if expr in file.params or expr in file.resources:
            return infra.resolve(scope, expr)
        return expr
    parts = dotted(expr)
    if parts is not None and len(parts) == 2 and parts[0] in file.vars:
        value = evaluate(infra, scope, parts[0])
        return value.get(parts[1], MISSING) if isinstance(value, dict) else MISSING
    if isinstance(expr, dict) and "function" not in expr and "operator" not in expr:
        return {unquote(key): evaluate(infra, scope, value) for key, value in expr.items()}
    function = expr.get("function") if isinstance(expr, dict) else None
    if function and function["type"] in _FUNCTIONS:
        args = [evaluate(infra, scope, value) for value in (function.get("parameters") or {}).values()]
        if all(isinstance(arg, str) or arg is None for arg in args):
            return _FUNCTIONS[function["type"]](file, *args)
    return infra.resolve(scope, expr)


def _format(_: BicepFile, text: str, *args: str) -> str:
    for index, arg in enumerate(args):
        text = text.replace(f"{{{index}}}", arg)
    return text


def _replace(_: BicepFile, text: str, old: str, new: str) -> str:
    return text.replace(old, new)


def _load_json(file: BicepFile, path: str, json_path: str | None = None, encoding: str | None = None) -> str:
    """loadJsonContent(path) (the whole file), already as string() writes it: compact JSON text."""
    loaded = json.loads((file.path.parent / path).read_text(encoding=encoding or "utf-8"))
    return json.dumps(loaded, separators=(",", ":"))


def _string(_: BicepFile, value: str) -> str:
    return value


_FUNCTIONS: dict[str, Callable[..., str]] = {
    "format": _format,
    "replace": _replace,
    "load_json_content": _load_json,
    "string": _string,
}


def _metric_names(infra: Infra, scope: str | None, problems: list[str]) -> dict[str, str] | None:
    """The alerts module's `metrics` variable: metric key -> the name the worker emits."""
    file = infra.file(scope)
    value = evaluate(infra, scope, METRICS_VARIABLE) if METRICS_VARIABLE in file.vars else None
    if not isinstance(value, dict) or set(value) != METRIC_KEYS or not all(isinstance(v, str) for v in value.values()):
        problems.append(f"{file.path.name} needs var {METRICS_VARIABLE} naming the metrics {sorted(METRIC_KEYS)}")
        return None
    return cast(dict[str, str], value)


def _missing(text: str, tokens: Iterable[str], metrics: Mapping[str, str]) -> list[str]:
    """The tokens (with {key} as the metric of that key) that `text` lacks."""
    return [token.format(**metrics) for token in tokens if token.format(**metrics) not in text]


def _check_log_alerts(
    infra: Infra, alerts: list[Found], workspace_id: str, group_id: str, metrics: Mapping[str, str]
) -> list[str]:
    """Each LOG_ALERTS item is exactly one rule: on the workspace, with windows, a query, a threshold
    and the action group."""
    problems: list[str] = []
    matched: dict[str, list[str]] = {name: [] for name in LOG_ALERTS}
    for found in alerts:
        where, config = _where(infra, found), body(found[3])
        properties = config.get("properties") or {}
        problems += _check_rule_basics(infra, found, workspace_id, group_id)
        criteria = _at(properties, "criteria.allOf")
        if not isinstance(criteria, list) or len(criteria) != 1:
            problems.append(f"{where}: criteria.allOf must hold exactly one query")
            continue
        criterion = criteria[0]
        query = evaluate(infra, found[1], criterion.get("query"))
        names = [name for name, (tokens, _) in LOG_ALERTS.items() if not _missing(str(query), tokens, metrics)]
        for name in names:
            matched[name].append(where)
            threshold = infra.resolve(found[1], criterion.get("threshold"))
            if threshold != LOG_ALERTS[name][1]:
                problems.append(f"{where} ({name}): threshold is {threshold}, must be {LOG_ALERTS[name][1]}")
        if not names:
            problems.append(f"{where}: its query is none of the expected alerts {sorted(LOG_ALERTS)}: {query!r}")
        for key in ("operator", "timeAggregation"):
            if key not in criterion:
                problems.append(f"{where}: the criterion sets no {key}")
    for name, wheres in matched.items():
        if len(wheres) != 1:
            problems.append(f"log alert '{name}' must be exactly one scheduled query rule, is {wheres or 'none'}")
    return problems


def _check_rule_basics(infra: Infra, found: Found, workspace_id: str, group_id: str) -> list[str]:
    """A log alert: kind LogAlert, on the workspace, evaluated regularly over a window, notifying the group."""
    problems = []
    where, config = _where(infra, found), body(found[3])
    properties = config.get("properties") or {}
    if infra.resolve(found[1], config.get("kind")) != "LogAlert":
        problems.append(f"{where}: kind must be LogAlert")
    scopes = infra.resolve(found[1], properties.get("scopes"))
    if scopes != f"[{workspace_id}]":
        problems.append(f"{where}: scopes must be the Log Analytics workspace only, is {scopes}")
    for key in ("evaluationFrequency", "windowSize"):
        value = infra.resolve(found[1], properties.get(key))
        if not _DURATION.fullmatch(value):
            problems.append(f"{where}: {key} must be an ISO 8601 duration (PT5M), is {value}")
    if infra.resolve(found[1], properties.get("severity")) not in ("0", "1", "2", "3", "4"):
        problems.append(f"{where}: severity must be 0-4")
    groups = infra.resolve(found[1], _at(properties, "actions.actionGroups"))
    if groups != f"[{group_id}]":
        problems.append(f"{where} does not notify the action group: actions.actionGroups is {groups}")
    return problems


def _check_throttling_alert(infra: Infra, group_id: str) -> list[str]:
    """One metric alert: AzureOpenAIRequests of the OpenAI account, StatusCode 429 only, to the group."""
    problems: list[str] = []
    alert, account = infra.only(METRIC_ALERT, problems), openai_accounts(infra, problems).get("openai account")
    if not (alert and account):
        return problems
    where, scope, config = _where(infra, alert), alert[1], body(alert[3])
    properties = config.get("properties") or {}
    expected = {
        "location": (config.get("location"), "global"),
        "scopes": (properties.get("scopes"), f"[{account[0]}.id]"),
        "criteria.odata.type": (
            _find_key(properties.get("criteria"), "odata.type"),
            "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria",
        ),
        "actions": (properties.get("actions"), f"[{{actionGroupId: {group_id}}}]"),
        "windowSize": (properties.get("windowSize"), "PT5M"),
    }
    for key, (value, wanted) in expected.items():
        if infra.resolve(scope, value) != wanted:
            problems.append(f"{where}: {key} is {infra.resolve(scope, value)}, must be {wanted}")
    criteria = _at(properties, "criteria.allOf")
    if not isinstance(criteria, list) or len(criteria) != 1:
        return [*problems, f"{where}: criteria.allOf must hold exactly one criterion"]
    for key, wanted in THROTTLING_CRITERION.items():
        if infra.resolve(scope, criteria[0].get(key)) != wanted:
            problems.append(f"{where}: {key} is {infra.resolve(scope, criteria[0].get(key))}, must be {wanted}")
    dimensions = [{k: infra.resolve(scope, v) for k, v in d.items()} for d in criteria[0].get("dimensions") or []]
    if dimensions != [THROTTLING_DIMENSION]:
        problems.append(f"{where}: dimensions must be exactly {THROTTLING_DIMENSION}, are {dimensions}")
    return problems


def _check_diagnostics(infra: Infra, workspace_id: str) -> list[str]:
    """DIAGNOSTICS: one setting per target, exactly those categories, to the workspace."""
    problems: list[str] = []
    targets = {name: found[0] for name, found in openai_accounts(infra, problems).items() if name == "openai account"}
    if queue_service := infra.only(QUEUE_SERVICE, problems):
        targets["queue service"] = queue_service[0]
    seen = []
    for found in infra.created_of_type(DIAGNOSTIC_SETTING):
        where, scope, config = _where(infra, found), found[1], body(found[3])
        target_symbol = config.get("scope")
        target = infra.resource_key(scope, target_symbol) if target_symbol in infra.file(scope).resources else None
        name = next((n for n, key in targets.items() if key == target), None)
        if name is None:
            problems.append(f"{where} is scoped to {target}, not one of {sorted(DIAGNOSTICS)}")
            continue
        seen.append(name)
        properties = config.get("properties") or {}
        if infra.resolve(scope, properties.get("workspaceId")) != workspace_id:
            problems.append(f"{where} must send to the Log Analytics workspace")
        for kind, wanted in zip(("logs", "metrics"), DIAGNOSTICS[name], strict=True):
            entries = properties.get(kind) or []
            got = {infra.resolve(scope, e.get("category")) for e in entries if e.get("enabled") is True}
            if got != wanted or len(entries) != len(wanted):
                problems.append(f"{where}: {kind} categories are {sorted(got)}, must be {sorted(wanted)}, enabled")
    for name in DIAGNOSTICS:
        if seen.count(name) != 1:
            problems.append(f"the {name} needs exactly one diagnostic setting, has {seen.count(name)}")
    return problems


def _check_workbook(infra: Infra, workspace_id: str, metrics: Mapping[str, str]) -> list[str]:
    """A shared workbook on the workspace whose JSON (from loadJsonContent, placeholders filled in)
    parses and has every WORKBOOK_PANELS query, each mentioning its metric."""
    problems: list[str] = []
    found = infra.only(WORKBOOK, problems)
    if found is None:
        return problems
    where, scope, config = _where(infra, found), found[1], body(found[3])
    properties = config.get("properties") or {}
    for key, value, wanted in (
        ("kind", config.get("kind"), "shared"),
        ("properties.sourceId", properties.get("sourceId"), workspace_id),
        ("properties.category", properties.get("category"), "workbook"),
    ):
        if infra.resolve(scope, value) != wanted:
            problems.append(f"{where}: {key} is {infra.resolve(scope, value)}, must be {wanted}")
    if "load_json_content" not in json.dumps(properties.get("serializedData")):
        return [*problems, f"{where}: serializedData must come from loadJsonContent(<file>.json)"]
    try:
        document = json.loads(str(evaluate(infra, scope, properties.get("serializedData"))))
    except (OSError, ValueError) as exc:
        return [*problems, f"{where}: serializedData does not load as JSON: {exc}"]
    return [*problems, *check_workbook_document(document, workspace_id, metrics, where)]


def check_workbook_document(document: Any, workspace_id: str, metrics: Mapping[str, str], where: str) -> list[str]:
    """The deployed workbook JSON: Notebook/1.0, no placeholder left, every panel with its metric."""
    problems = []
    if not isinstance(document, dict) or document.get("version") != "Notebook/1.0":
        return [f"{where}: the workbook JSON must be an object with version Notebook/1.0"]
    text = json.dumps(document)
    if _PLACEHOLDER.search(text):
        problems.append(f"{where}: placeholders left unfilled: {sorted(set(_PLACEHOLDER.findall(text)))}")
    if document.get("fallbackResourceIds") != [workspace_id]:
        problems.append(f"{where}: fallbackResourceIds must be the workspace, is {document.get('fallbackResourceIds')}")
    queries = {
        item.get("name"): str(_at(item, "content.query"))
        for item in document.get("items") or []
        if isinstance(item, dict) and item.get("type") == 3
    }
    for panel, tokens in WORKBOOK_PANELS.items():
        if panel not in queries:
            problems.append(f"{where}: the workbook has no query panel {panel}")
        elif missing := _missing(queries[panel], tokens, metrics):
            problems.append(f"{where}: workbook panel {panel} does not mention {missing}")
    return problems


def _find_key(expr: Any, key: str) -> Any:
    """The value under `key` anywhere inside an object expression (e.g. union(tags, {...}))."""
    if isinstance(expr, dict):
        for name, value in expr.items():
            if isinstance(name, str) and unquote(name) == key:
                return value
            found = _find_key(value, key)
            if found is not MISSING:
                return found
    elif isinstance(expr, list):
        for item in expr:
            found = _find_key(item, key)
            if found is not MISSING:
                return found
    return MISSING


def parse_simple_yaml(text: str) -> dict[str, Any]:
    """Mappings of scalars only (all azure.yaml needs): indentation nests, `#` starts a comment."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = re.sub(r"\s+#.*$", "", raw).rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip().strip("'\"")
        if value:
            parent[key.strip()] = value
        else:
            child: dict[str, Any] = {}
            parent[key.strip()] = child
            stack.append((indent, child))
    return root


def funcignore_excludes(patterns: str, path: str) -> bool:
    """Whether a .funcignore (gitignore syntax) excludes `path` (relative, '/'-separated)."""
    excluded = False
    parts = path.split("/")
    for raw in patterns.splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        directory_only = pattern.endswith("/")
        pattern = pattern.strip("/")
        anchored = "/" in pattern
        hit = False
        for end in range(1, len(parts) + 1):
            if directory_only and end == len(parts):
                break  # the last part is the file itself
            candidate = "/".join(parts[:end]) if anchored else parts[end - 1]
            if fnmatch(candidate, pattern):
                hit = True
                break
        if hit:
            excluded = not negate
    return excluded
