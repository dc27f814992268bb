"""The KQL infra/ deploys, parsed and bound by Microsoft's Kusto language service.

The log alerts (scheduledQueryRules) and the workbook carry queries over the Log Analytics tables
Application Insights writes (AppTraces, AppMetrics, AppRequests, AppExceptions). Azure checks a log
alert's query only at deployment, and not at all with ``skipQueryValidation``; a workbook's never.
Here every query, exactly as deployed (``format()`` and the workbook's ``replace()`` placeholders
filled in by :func:`~tests.infra.infra_checks.evaluate`), goes to ``kql_check.js``, which runs
``@kusto/language-service-next`` (package.json, offline) against the schemas in ``kql_tables.json``
(the columns of each table as the Azure Monitor Logs table reference lists them, with the page
each comes from). Parse and binding errors (an unknown table, column or function, a wrong type) are
problems, and so is a log alert whose ``metricMeasureColumn`` is not a numeric column of its result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from tests.infra.infra_checks import LOG_ALERT, WORKBOOK, Infra, _at, _where, body, evaluate

HERE = Path(__file__).parent
SCRIPT = HERE / "kql_check.js"
TABLES = HERE / "kql_tables.json"
# Node's own network guard (tests/producer): the language service runs offline, and must.
NODE_GUARD = HERE.parent / "producer" / "node_netguard.cjs"
NUMERIC = {"int", "long", "real", "decimal"}


class Query(NamedTuple):
    where: str  # alerts.bicep:failedJobsAlert, alerts.bicep:workerWorkbook panel queue-wait
    text: str
    measure: str | None  # a log alert's metricMeasureColumn


def deployed_queries(infra: Infra) -> list[Query]:
    """Every KQL string this deployment sends to Azure: each log alert criterion's query, each
    query panel (type 3) of each workbook."""
    queries = []
    for found in infra.created_of_type(LOG_ALERT):
        criteria = _at(body(found[3]), "properties.criteria.allOf")
        for index, criterion in enumerate(criteria if isinstance(criteria, list) else []):
            where = _where(infra, found) + (f" criterion {index}" if len(criteria) > 1 else "")
            measure = criterion.get("metricMeasureColumn")
            queries.append(
                Query(
                    where,
                    str(evaluate(infra, found[1], criterion.get("query"))),
                    infra.resolve(found[1], measure) if measure else None,
                )
            )
    for found in infra.created_of_type(WORKBOOK):
        document = json.loads(str(evaluate(infra, found[1], _at(body(found[3]), "properties.serializedData"))))
        for item in document.get("items") or []:
            if isinstance(item, dict) and item.get("type") == 3:
                queries.append(
                    Query(f"{_where(infra, found)} panel {item.get('name')}", str(_at(item, "content.query")), None)
                )
    return queries


def tables() -> dict[str, Any]:
    tables: dict[str, Any] = json.loads(TABLES.read_text(encoding="utf-8"))["tables"]
    return tables


def language_service(queries: dict[str, str], schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    """What kql_check.js says of each query (by id): diagnostics, tables and columns read, result."""
    payload = json.dumps({"tables": tables() if schemas is None else schemas, "queries": queries}, sort_keys=True)
    return dict(_run(payload))


@cache
def _run(payload: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH: install Node.js 20+ (the README's prerequisites)")
    done = subprocess.run(
        [node, "--require", str(NODE_GUARD), str(SCRIPT)],
        input=payload,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=HERE,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"kql_check.js failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n"
            "(is @kusto/language-service-next installed? `npm ci` at the repository root)"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_queries(queries: list[Query]) -> list[str]:
    """Each query parses and binds to the documented tables; a log alert's measure column is numeric."""
    return problems_of(queries, language_service({query.where: query.text for query in queries}))


def problems_of(queries: list[Query], answers: dict[str, Any]) -> list[str]:
    """check_queries's problems from the language service's ``answers`` (which may cover more queries: Node
    takes a second or so to start, so one run can serve several checks)."""
    problems = []
    for query in queries:
        answer = answers[query.where]
        for diagnostic in answer["diagnostics"]:
            snippet = query.text[diagnostic["start"] : diagnostic["start"] + max(diagnostic["length"], 1)]
            problems.append(
                f"{query.where}: KQL {diagnostic['severity'].lower()} {diagnostic['code']} at {snippet!r}: "
                f"{diagnostic['message']}"
            )
        if query.measure is not None and not answer["diagnostics"]:
            result = dict(answer["result"])
            if result.get(query.measure) not in NUMERIC:
                problems.append(
                    f"{query.where}: metricMeasureColumn {query.measure} is not a numeric column of the query's "
                    f"result {answer['result']}"
                )
    return problems
