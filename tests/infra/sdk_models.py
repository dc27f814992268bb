"""Every property the Bicep writes, checked against Azure's own definition of the resource type.

The Bicep compiler's types and Azure's management SDKs for Python are both generated from the REST
API specifications (azure-rest-api-specs). The compiler can't be installed here; the SDKs can (they
are pinned dev dependencies, requirements-dev.txt). Each SDK model lists a resource's properties by
their REST names, with their types, enums and visibility, so :func:`check_sdk_models` walks what
every resource declaration of an :class:`~tests.infra.infra_checks.Infra` writes (``properties.*``,
``sku``, ``kind``, ``identity``, ``location``, ``tags``, nested objects and arrays) and reports:

- a property the model does not have (with the closest names it has);
- a property the model marks read-only (Azure sets it; a template that sets it fails);
- a literal that is not one of the model's enum values, and a parameter whose ``@allowed`` list
  holds one (other expressions are not evaluated: their values are not known before deployment);
- a literal of the wrong type (a string where the model wants a bool, ...).

Two generations of generated models exist and both are read here: msrest models
(``_attribute_map``: REST keys, dotted where the SDK flattens ``properties``; ``_validation``:
read-only) and TypeSpec models (``rest_field`` with a visibility; ``["read"]`` is read-only).
Enums are the ``_models.<Enum>`` a property is annotated with. Azure's "extensible" enums, which
also take other strings, are held to their known values too: a value Azure does not list is a typo
far more often than a new value.

Each resource type's models come from the SDK's module of the API version the Bicep declares
(``azure.mgmt.web.v2024_04_01.models``); where the pinned SDK does not carry that version, from the
nearest version it does, and :func:`api_coverage` says so (docs/deploy.md lists what differs).
"""

from __future__ import annotations

import difflib
import enum
import importlib
import importlib.util
import inspect
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from tests.infra.infra_checks import Infra, body, loop, unquote

# Bicep resource type -> (pip package, Python package, the model of the PUT body, the model of the
# resource as Azure returns it when the PUT body is another model: it names the read-only
# properties the body leaves out).
RESOURCE_MODELS: dict[str, tuple[str, str, str, str | None]] = {
    "Microsoft.Resources/resourceGroups": (
        "azure-mgmt-resource", "azure.mgmt.resource.resources", "ResourceGroup", None
    ),
    "Microsoft.ManagedIdentity/userAssignedIdentities": ("azure-mgmt-msi", "azure.mgmt.msi", "Identity", None),
    "Microsoft.OperationalInsights/workspaces": (
        "azure-mgmt-loganalytics", "azure.mgmt.loganalytics", "Workspace", None
    ),
    "Microsoft.Insights/components": (
        "azure-mgmt-applicationinsights", "azure.mgmt.applicationinsights", "ApplicationInsightsComponent", None
    ),
    "Microsoft.Insights/workbooks": (
        "azure-mgmt-applicationinsights", "azure.mgmt.applicationinsights", "Workbook", None
    ),
    "Microsoft.Insights/actionGroups": ("azure-mgmt-monitor", "azure.mgmt.monitor", "ActionGroupResource", None),
    "Microsoft.Insights/scheduledQueryRules": (
        "azure-mgmt-monitor", "azure.mgmt.monitor", "ScheduledQueryRuleResource", None
    ),
    "Microsoft.Insights/metricAlerts": ("azure-mgmt-monitor", "azure.mgmt.monitor", "MetricAlertResource", None),
    "Microsoft.Insights/diagnosticSettings": (
        "azure-mgmt-monitor", "azure.mgmt.monitor", "DiagnosticSettingsResource", None
    ),
    "Microsoft.Storage/storageAccounts": (
        "azure-mgmt-storage", "azure.mgmt.storage", "StorageAccountCreateParameters", "StorageAccount"
    ),
    "Microsoft.Storage/storageAccounts/blobServices": (
        "azure-mgmt-storage", "azure.mgmt.storage", "BlobServiceProperties", None
    ),
    "Microsoft.Storage/storageAccounts/queueServices": (
        "azure-mgmt-storage", "azure.mgmt.storage", "QueueServiceProperties", None
    ),
    "Microsoft.Storage/storageAccounts/blobServices/containers": (
        "azure-mgmt-storage", "azure.mgmt.storage", "BlobContainer", None
    ),
    "Microsoft.Storage/storageAccounts/queueServices/queues": (
        "azure-mgmt-storage", "azure.mgmt.storage", "StorageQueue", None
    ),
    "Microsoft.Storage/storageAccounts/managementPolicies": (
        "azure-mgmt-storage", "azure.mgmt.storage", "ManagementPolicy", None
    ),
    "Microsoft.CognitiveServices/accounts": (
        "azure-mgmt-cognitiveservices", "azure.mgmt.cognitiveservices", "Account", None
    ),
    "Microsoft.CognitiveServices/accounts/deployments": (
        "azure-mgmt-cognitiveservices", "azure.mgmt.cognitiveservices", "Deployment", None
    ),
    "Microsoft.Network/virtualNetworks": ("azure-mgmt-network", "azure.mgmt.network", "VirtualNetwork", None),
    "Microsoft.Network/virtualNetworks/subnets": ("azure-mgmt-network", "azure.mgmt.network", "Subnet", None),
    "Microsoft.Network/privateEndpoints": ("azure-mgmt-network", "azure.mgmt.network", "PrivateEndpoint", None),
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": (
        "azure-mgmt-network", "azure.mgmt.network", "PrivateDnsZoneGroup", None
    ),
    "Microsoft.Network/privateDnsZones": ("azure-mgmt-privatedns", "azure.mgmt.privatedns", "PrivateZone", None),
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": (
        "azure-mgmt-privatedns", "azure.mgmt.privatedns", "VirtualNetworkLink", None
    ),
    "Microsoft.Authorization/roleAssignments": (
        "azure-mgmt-authorization", "azure.mgmt.authorization", "RoleAssignmentCreateParameters", "RoleAssignment"
    ),
    "Microsoft.Authorization/roleDefinitions": (
        "azure-mgmt-authorization", "azure.mgmt.authorization", "RoleDefinition", None
    ),
    "Microsoft.Web/serverfarms": ("azure-mgmt-web", "azure.mgmt.web", "AppServicePlan", None),
    "Microsoft.Web/sites": ("azure-mgmt-web", "azure.mgmt.web", "Site", None),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": (
        "azure-mgmt-web", "azure.mgmt.web", "CsmPublishingCredentialsPoliciesEntity", None
    ),
}  # fmt: skip
# Resource types no pinned SDK models: type -> why (each is listed in the test output, never skipped
# silently; a type neither here nor in RESOURCE_MODELS fails the check).
UNMODELLED: dict[str, str] = {}

# Where the pinned SDK does not carry the API version the Bicep declares (models_for took the
# nearest it has): the properties the SDK's version has and the declared one lacks, read from
# azure-rest-api-specs at the declared version, held to be unknown. (The other way round, a property
# only the declared version has would fail as unknown: there is none for these.) A type validated
# against another version than its own must be listed here, so the difference has been looked at.
NOT_IN_DECLARED: dict[tuple[str, str], set[str]] = {
    # monitor 2021-08-01 scheduledQueryRule_API.json; the SDK's nearest is 2022-08-01-preview.
    ("Microsoft.Insights/scheduledQueryRules", "2021-08-01"): {
        "identity", "properties.publicNetworkAccess", "properties.ruleResolveConfiguration"
    },
    # operationalinsights 2023-09-01 Workspaces.json; the SDK has 2025-07-01 only (it also adds the
    # enum value SecuredByPerimeter to publicNetworkAccessFor*, and 2023-09-01's features is open).
    ("Microsoft.OperationalInsights/workspaces", "2023-09-01"): {"properties.failover", "properties.replication"},
    # resources 2024-03-01; the SDK has 2025-04-01 only: location, managedBy, tags in both.
    ("Microsoft.Resources/resourceGroups", "2024-03-01"): set(),
}  # fmt: skip

# Keys of a Bicep resource body that are the language's, not the resource's (`name` is read-only in
# the models because Azure takes it from the URL, which Bicep builds from it).
BICEP_KEYS = {"name", "parent", "scope", "dependsOn"}

_API_MODULE = re.compile(r"v(\d{4})_(\d{2})_(\d{2})(_preview)?")
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(?:-preview)?")
_MODEL_REF = re.compile(r"_models\.(\w+)")
_SCALARS = {
    "str": "str", "int": "int", "long": "int", "float": "float", "decimal": "float", "bool": "bool",
    "iso-8601": "str", "rfc-1123": "str", "duration": "str", "date": "str", "time": "str", "unix-time": "int",
    "bytearray": "str", "base64": "str", "object": "any",
}  # fmt: skip


# ---------------------------------------------------------------- the models


@dataclass
class Field:
    """One property: `kind` value, object, list or map (a list's or map's items are `item`)."""

    kind: str
    readonly: bool = False
    scalar: str = "any"  # of a value: str, int, float, bool or any
    enum: type[enum.Enum] | None = None
    model: type | None = None  # of an object: its model (None: `inline`)
    inline: Node | None = None  # of an object the SDK flattens: its properties
    item: Field | None = None

    def node(self) -> Node | None:
        return self.inline if self.inline is not None else (node_of(self.model) if self.model else None)


@dataclass
class Node:
    """An object as the REST API has it: its properties by REST name."""

    name: str
    fields: dict[str, Field] = field(default_factory=dict)
    open: bool = False  # additionalProperties: any other name is allowed too
    discriminator: str | None = None  # the property whose value picks a subtype
    subtypes: dict[str, type] = field(default_factory=dict)


def _models_module(cls: type) -> ModuleType:
    return importlib.import_module(cls.__module__.rsplit(".", 1)[0])


def _enum(cls: type, hint: str) -> type[enum.Enum] | None:
    module = _models_module(cls)
    for name in _MODEL_REF.findall(hint):
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, enum.Enum):
            return found
    return None


@cache
def node_of(cls: type) -> Node:
    """The REST shape of a model class (cached: the walk asks for the same models again and again)."""
    return _msrest_node(cls) if hasattr(cls, "_attribute_map") else _typespec_node(cls)


def _msrest_node(cls: type) -> Node:
    root = Node(cls.__name__)
    attribute_map: dict[str, dict[str, str]] = cls._attribute_map  # type: ignore[attr-defined]
    readonly = {name for name, rule in getattr(cls, "_validation", {}).items() if rule.get("readonly")}
    parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    for attr, spec in attribute_map.items():
        if spec["key"] == "":
            root.open = True  # additional_properties
            continue
        parts = [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", spec["key"])]
        node = root
        for part in parts[:-1]:  # a property the SDK flattens, e.g. properties.serverFarmId
            container = node.fields.setdefault(part, Field("object", inline=Node(f"{node.name}.{part}")))
            assert container.inline is not None
            node = container.inline
        hint = str(parameters[attr].annotation) if attr in parameters else ""
        node.fields[parts[-1]] = _msrest_field(cls, spec["type"], hint, attr in readonly)
    for attr, subtypes in getattr(cls, "_subtype_map", {}).items():
        root.discriminator = attribute_map[attr]["key"].replace("\\.", ".")
        module = _models_module(cls)
        root.subtypes = {value: getattr(module, name) for value, name in subtypes.items()}
    return root


def _msrest_field(cls: type, type_: str, hint: str, readonly: bool) -> Field:
    if type_.startswith("[") or type_.startswith("{"):
        kind = "list" if type_.startswith("[") else "map"
        return Field(kind, readonly, item=_msrest_field(cls, type_[1:-1], hint, False))
    if type_ in _SCALARS:
        return Field("value", readonly, _SCALARS[type_], enum=_enum(cls, hint))
    return Field("object", readonly, model=getattr(_models_module(cls), type_))


def _typespec_node(cls: type) -> Node:
    node = Node(cls.__name__)
    annotations: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        annotations.update(vars(klass).get("__annotations__", {}))
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not hasattr(value, "_visibility"):
                continue
            rest = value._rest_name_input or attr
            node.fields[rest] = _typespec_field(
                cls, _unwrap(str(annotations.get(attr, ""))), value._visibility == ["read"]
            )
            if value._is_discriminator:
                node.discriminator = rest
    node.subtypes = dict(vars(cls).get("__mapping__", {}))
    return node


def _unwrap(hint: str) -> str:
    """An annotation's text without typing., ForwardRef(), quotes and the outer Optional[]."""
    hint = re.sub(r"typing\.|ForwardRef\(|['\"]", "", hint).replace(")", "")
    match = re.fullmatch(r"Optional\[(.*)\]", hint)
    return match.group(1) if match else hint


def _typespec_field(cls: type, hint: str, readonly: bool) -> Field:
    container = re.fullmatch(r"(list|List|dict|Dict)\[(?:str, )?(.*)\]", hint)
    if container:
        kind = "list" if container.group(1).lower() == "list" else "map"
        return Field(kind, readonly, item=_typespec_field(cls, container.group(2), False))
    found = _enum(cls, hint)
    if found is not None:
        return Field("value", readonly, "str", enum=found)
    model = next(iter(_MODEL_REF.findall(hint)), None)
    if model is not None:
        return Field("object", readonly, model=getattr(_models_module(cls), model))
    scalar = next((name for name in ("bool", "int", "float", "str") if re.search(rf"\b{name}\b", hint)), "any")
    return Field("value", readonly, scalar)


# ---------------------------------------------------------------- API versions


class Models(NamedTuple):
    """Where one resource type's models come from."""

    pip: str
    version: str  # of the pip package
    api: str  # the API version of the module the models come from
    module: str
    write: type
    read: type | None


def _api_of(name: str) -> str | None:
    match = _API_MODULE.fullmatch(name)
    if not match:
        return None
    return "-".join(match.group(1, 2, 3)) + ("-preview" if match.group(4) else "")


@cache
def api_modules(package: str) -> dict[str, str]:
    """API version -> models module of an SDK package: its vYYYY_MM_DD subpackages, else (a package
    of one API version) its models, with the version its client defaults to or its operations use most."""
    root = Path(importlib.util.find_spec(package).origin or "").parent  # type: ignore[union-attr]
    versions = {
        api: f"{package}.{path.name}.models"
        for path in root.iterdir()
        if (api := _api_of(path.name)) and (path / "models").exists()
    }
    if versions:
        return versions
    configured = _API_VERSION.findall(
        "".join(re.findall(r'kwargs\.pop\("api_version", "([^"]+)"\)', (root / "_configuration.py").read_text()))
    )
    if configured:
        return {configured[0]: f"{package}.models"}
    used = Counter(api for path in (root / "operations").glob("*.py") for api in _API_VERSION.findall(path.read_text()))
    return {used.most_common(1)[0][0]: f"{package}.models"}


@cache
def _defines(module: str, model: str) -> bool:
    """Whether a models module defines `model` (read, not imported: a package has many versions)."""
    folder = Path(importlib.util.find_spec(module).origin or "").parent  # type: ignore[union-attr]
    pattern = re.compile(rf"^class {model}\(", re.MULTILINE)
    return any(pattern.search(path.read_text(encoding="utf-8")) for path in folder.glob("*.py"))


def _day(api: str) -> date:
    return date.fromisoformat(api[:10])


@cache
def models_for(type_: str, api: str) -> Models | None:
    """The models of a resource type at the API version the Bicep declares, or the nearest the SDK has
    (the later one when two are as near; a preview only when no stable version is as near)."""
    if type_ not in RESOURCE_MODELS:
        return None
    pip, package, write, read = RESOURCE_MODELS[type_]
    modules = {have: module for have, module in api_modules(package).items() if _defines(module, write)}
    chosen = (
        api
        if api in modules
        else min(
            modules,
            key=lambda have: (abs((_day(have) - _day(api)).days), have.endswith("-preview"), -_day(have).toordinal()),
        )
    )
    module = importlib.import_module(modules[chosen])
    return Models(
        pip,
        metadata.version(pip),
        chosen,
        modules[chosen],
        getattr(module, write),
        getattr(module, read) if read else None,
    )


class Coverage(NamedTuple):
    type: str
    api: str
    models: Models | None


def api_coverage(infra: Infra) -> list[Coverage]:
    """Every resource type and API version the infra declares, with the models that check it."""
    declared = {
        (resource["type"], resource["api_version"])
        for scope in infra.scopes
        for resource in infra.file(scope).resources.values()
    }
    return [Coverage(type_, api, models_for(type_, api)) for type_, api in sorted(declared)]


# ---------------------------------------------------------------- the check


def check_sdk_models(infra: Infra) -> list[str]:
    """Each resource declaration this deployment makes (the switches as loaded), against its model."""
    problems = list(infra.problems)
    for scope, symbol, resource in infra.all_resources():
        where = f"{infra.file(scope).path.name}:{symbol} ({resource['type']}@{resource['api_version']})"
        models = models_for(resource["type"], resource["api_version"])
        if models is None:
            if resource["type"] not in UNMODELLED:
                problems.append(
                    f"{where}: no SDK model is mapped for this type (RESOURCE_MODELS) or listed (UNMODELLED)"
                )
            continue
        if models.api != resource["api_version"] and (resource["type"], resource["api_version"]) not in NOT_IN_DECLARED:
            problems.append(
                f"{where}: validated against API {models.api}, the nearest {models.pip} {models.version} has: list "
                "what that version has and the declared one lacks in NOT_IN_DECLARED"
            )
        walker = _Walker(infra, scope, where, models, _loop_names(resource))
        walker.not_declared = NOT_IN_DECLARED.get((resource["type"], resource["api_version"]), set())
        config = {key: value for key, value in body(resource).items() if key not in BICEP_KEYS}
        walker.object(config, node_of(models.write), node_of(models.read) if models.read else None, "")
        problems += walker.problems
    return problems


def _loop_names(resource: Mapping[str, Any]) -> set[str]:
    detail = loop(resource) or {}
    return {str(value) for key, value in detail.items() if key != "array_name"}


_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
_WHOLE_INTERPOLATION = re.compile(r"^\$\{\s*([A-Za-z_]\w*)\s*\}$")


@dataclass
class _Value:
    """What a property's expression comes to: a literal (`value`), or an expression whose value is
    not known here (`known` False), with the @allowed lists of the parameters it passed through."""

    scope: str | None
    value: Any
    known: bool = True
    allowed: tuple[tuple[str, list[Any]], ...] = ()


@dataclass
class _Walker:
    infra: Infra
    scope: str | None
    where: str
    models: Models
    loop_names: set[str]
    problems: list[str] = field(default_factory=list)
    not_declared: set[str] = field(default_factory=set)

    def _add(self, path: str, text: str) -> None:
        models = self.models
        self.problems.append(
            f"{self.where}: {path} {text} [{models.pip} {models.version}, {models.module}, API {models.api}]"
        )

    def values(self, scope: str | None, expr: Any, allowed: tuple[tuple[str, list[Any]], ...] = ()) -> Iterator[_Value]:
        """The values `expr` may take: variables and module parameters followed, `${x}` as x, a `c ? a : b`
        the switches decide as its branch and one they don't as both."""
        infra = self.infra
        while True:
            whole = _WHOLE_INTERPOLATION.match(expr) if isinstance(expr, str) else None
            if whole:
                expr = whole.group(1)
            if isinstance(expr, str) and _IDENTIFIER.match(expr) and expr not in self.loop_names:
                file = infra.file(scope)
                if expr in file.params:
                    decorators = file.params[expr].get("decorators") or []
                    allowed += tuple((expr, d["argument"]) for d in decorators if d["type"] == "allowed")
                    followed = infra.follow(scope, expr)
                    if followed is None:
                        yield _Value(scope, expr, False, allowed)
                        return
                    scope, expr = followed
                    continue
                if expr in file.vars:
                    expr = file.vars[expr]["value"]
                    continue
                if expr in file.resources or expr in file.modules:
                    yield _Value(scope, expr, False, allowed)
                    return
            operator = expr["operator"] if _is_expression(expr) and "operator" in expr else None
            if operator and operator["type"] == "conditional":
                operands = operator["operands"]
                taken = infra.truth(scope, operands["condition"])
                branches = (
                    ["true_value", "false_value"] if taken is None else ["true_value" if taken else "false_value"]
                )
                for branch in branches:
                    yield from self.values(scope, operands[branch], allowed)
                return
            known = not _is_expression(expr) and not (
                isinstance(expr, str) and ("${" in expr or expr in self.loop_names)
            )
            yield _Value(scope, expr, known, allowed)
            return

    def field(self, value: Any, spec: Field, read: Field | None, path: str) -> None:
        for found in self.values(self.scope, value):
            self._allowed(found, spec, path)
            if not found.known or found.value is None:
                continue
            saved, self.scope = self.scope, found.scope
            try:
                self._known(found.value, spec, read, path)
            finally:
                self.scope = saved

    def _known(self, value: Any, spec: Field, read: Field | None, path: str) -> None:
        if spec.kind == "object":
            node = spec.node()
            if not isinstance(value, dict):
                self._add(path, f"is {value!r}: the model wants an object ({node.name if node else 'object'})")
            elif node is not None:
                self.object(value, node, read.node() if read else None, path)
        elif spec.kind in ("list", "map"):
            assert spec.item is not None
            read_item = read.item if read else None
            if spec.kind == "list" and isinstance(value, list):
                for index, item in enumerate(value):
                    self.field(item, spec.item, read_item, f"{path}[{index}]")
            elif spec.kind == "map" and isinstance(value, dict):
                for key, item in value.items():
                    self.field(item, spec.item, read_item, f"{path}.{unquote(key)}")
            else:
                self._add(path, f"is {value!r}: the model wants {'an array' if spec.kind == 'list' else 'an object'}")
        else:
            self._scalar(value, spec, path)

    @property
    def declared(self) -> str:
        return self.where.rsplit("@", 1)[1].rstrip(")")

    def _scalar(self, value: Any, spec: Field, path: str) -> None:
        if spec.enum is not None and isinstance(value, (str, int)) and not isinstance(value, bool):
            if value not in _enum_values(spec.enum):
                self._add(path, f"is {value!r}, not one of {spec.enum.__name__} {_enum_values(spec.enum)}")
            return
        wanted = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}.get(spec.scalar)
        wrong_bool = isinstance(value, bool) and spec.scalar in ("int", "float")
        if wanted and (not isinstance(value, wanted) or wrong_bool or isinstance(value, (dict, list))):
            self._add(path, f"is {value!r}: the model wants {spec.scalar}")

    def _allowed(self, found: _Value, spec: Field, path: str) -> None:
        if spec.kind != "value" or spec.enum is None:
            return
        for name, allowed in found.allowed:
            for value in allowed:
                if value not in _enum_values(spec.enum):
                    self._add(
                        path,
                        f"comes from parameter {name}, whose @allowed value {value!r} is not one of "
                        f"{spec.enum.__name__} {_enum_values(spec.enum)}",
                    )

    def object(self, value: Mapping[str, Any], node: Node, read: Node | None, path: str) -> None:
        node, read = self._subtype(value, node), self._subtype(value, read) if read else None
        for raw_key, item in value.items():
            key = unquote(raw_key)
            here = f"{path}.{key}" if path else key
            spec = node.fields.get(key)
            read_spec = read.fields.get(key) if read else None
            if re.sub(r"\[\d+\]", "", here) in self.not_declared:
                self._add(here, f"is not in API {self.declared}: only the SDK's {self.models.api} has it")
            elif spec is None and read_spec is not None and read_spec.readonly:
                self._add(here, f"is read-only in {read.name if read else node.name}: Azure sets it, a template cannot")
            elif spec is None and not node.open:
                self._add(here, f"is not a property of {node.name}; closest: {_closest(key, node)}")
            elif spec is not None and spec.readonly:
                self._add(here, f"is read-only in {node.name}: Azure sets it, a template cannot")
            elif spec is not None:
                self.field(item, spec, read_spec, here)

    def _subtype(self, value: Mapping[str, Any], node: Node) -> Node:
        """The subtype a discriminator value picks (metric alert criteria, ...)."""
        if node.discriminator is None:
            return node
        raw = next((v for k, v in value.items() if unquote(k) == node.discriminator), None)
        picked = node.subtypes.get(raw) if isinstance(raw, str) else None
        return self._subtype(value, node_of(picked)) if picked is not None and node_of(picked) is not node else node


def _is_expression(expr: Any) -> bool:
    """pycep's function call or operator ({"function": {"type": ...}}), not an object literal that
    happens to have a property named operator (a metric alert criterion has one)."""
    return (
        isinstance(expr, dict)
        and len(expr) == 1
        and any(isinstance(expr.get(key), dict) and "type" in expr[key] for key in ("function", "operator"))
    )


@cache
def _enum_values(found: type[enum.Enum]) -> list[str]:
    return [member.value for member in found]


def _closest(key: str, node: Node) -> str:
    names = sorted(name for name, spec in node.fields.items() if not spec.readonly)
    same_case = [name for name in names if name.lower() == key.lower()]
    close = same_case or difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    return ", ".join(close) if close else f"none (it has {', '.join(names)})"
