"""Every KQL query infra/ deploys (the log alerts' and the workbook's) parses and binds to the Log
Analytics tables it reads, as the Azure Monitor Logs table reference documents them
(tests/infra/kql_tables.json), by Microsoft's Kusto language service (tests/infra/kql.py); and the
check fails on queries with a misspelled table or column."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.infra import infra_checks as checks
from tests.infra import kql
from tests.infra.summary import SUMMARY
from tests.infra.test_bicep import broken_copy, infra, replace


def test_every_deployed_query_parses_and_binds_to_the_documented_tables(service: LanguageService) -> None:
    queries = kql.deployed_queries(infra())
    # Four log alerts, six workbook panels: all of them, with the metric names filled in.
    assert len(queries) == 10 and not any("__" in query.text or "{0}" in query.text for query in queries)
    assert kql.problems_of(queries, service.answers) == []
    answers = {query.where: service.answers[query.where] for query in queries}
    SUMMARY["KQL queries and the tables they bind to (Kusto language service)"] = [
        f"{where}: {', '.join(answer['tables'])} (columns {', '.join(answer['columns'])})"
        for where, answer in sorted(answers.items())
    ]
    assert all(answer["tables"] for answer in answers.values())


def test_the_queries_are_the_same_whatever_the_switches() -> None:
    texts = {
        tuple(kql.deployed_queries(infra(entry, vnet, full)))
        for entry in (checks.MAIN_ENTRY, checks.GROUP_ENTRY)
        for vnet in (False, True)
        for full in (False, True)
    }
    assert len(texts) == 1


def test_every_table_schema_says_where_it_was_transcribed_from() -> None:
    for name, table in kql.tables().items():
        assert table["source"] == f"https://learn.microsoft.com/azure/azure-monitor/reference/tables/{name.lower()}"
        assert re.fullmatch(
            r"MicrosoftDocs/azure-reference-other \S+-include\.md @ [0-9a-f]{40}", table["transcribed_from"]
        )
        assert {"TimeGenerated", "Type"} <= set(table["columns"])
        assert set(table["columns"].values()) <= {"string", "int", "long", "real", "bool", "datetime", "dynamic"}


def test_a_query_on_a_table_no_schema_lists_fails_and_so_does_a_measure_column_it_does_not_return(
    service: LanguageService,
) -> None:
    assert kql.problems_of(UNKNOWN, service.answers) == [
        "q: KQL error KS204 at 'AppTrace': The name 'AppTrace' does not refer to any known table, tabular variable "
        "or function.",
        "alert: metricMeasureColumn value is not a numeric column of the query's result [['count', 'long']]",
    ]


# A table no schema lists, and a log alert measuring a column its query does not return.
UNKNOWN = [
    kql.Query("q", "AppTrace | take 1", None),
    kql.Query("alert", "AppTraces | summarize count = count()", "value"),
]
# name -> (file under infra/, edit, the problem expected)
BREAKAGES: dict[str, tuple[str, Callable[[str], str], str]] = {
    "alert query on a misspelled table": (
        "app/alerts.bicep",
        replace("          query: '''\nAppTraces\n", "          query: '''\nAppTrace\n"),
        "alerts.bicep:failedJobsAlert: KQL error KS204 at 'AppTrace': The name 'AppTrace' does not refer to any "
        "known table",
    ),
    "alert query on a misspelled column": (
        "app/alerts.bicep",
        replace('| where Name == "{0}" and ItemCount > 0', '| where Name == "{0}" and ItemCnt > 0'),
        "alerts.bicep:queueWaitAlert: KQL error KS142 at 'ItemCnt': The name 'ItemCnt' does not refer to any known "
        "column",
    ),
    "alert query in the classic Application Insights schema": (
        "app/alerts.bicep",
        replace("    (AppRequests | where Success == false", "    (requests | where success == false"),
        "alerts.bicep:functionErrorsAlert: KQL error KS204 at 'requests'",
    ),
    "workbook panel on a misspelled column": (
        "app/workbook.json",
        replace(
            "summarize jobs = sum(Sum) by bin(TimeGenerated, 1m)", "summarize jobs = sum(Sum) by bin(TimeGenerate, 1m)"
        ),
        "alerts.bicep:workerWorkbook panel jobs-per-minute: KQL error KS142 at 'TimeGenerate'",
    ),
    "workbook panel that does not parse": (
        "app/workbook.json",
        replace("| top 10 by jobs", "| top 10 by"),
        "alerts.bicep:workerWorkbook panel top-error-codes: KQL error KS006",
    ),
    "alert measuring a column its query drops": (
        "app/alerts.bicep",
        replace("| project value = Sum\n", "| project depth = Sum\n"),
        "alerts.bicep:poisonQueueAlert: metricMeasureColumn value is not a numeric column of the query's result "
        "[['depth', 'real']]",
    ),
}


@dataclass
class LanguageService:
    answers: dict[str, Any]  # by Query.where
    broken: dict[str, list[str]]  # the problems of each broken copy, by BREAKAGES name


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> LanguageService:
    """ONE run of the language service (Node takes a second or so to start) for this module's queries: the deployed
    ones, UNKNOWN's and each broken copy's (their ``where`` prefixed with the breakage's name)."""
    broken: dict[str, list[kql.Query]] = {}
    for name, (relative, edit, _) in BREAKAGES.items():
        root = broken_copy(tmp_path_factory.mktemp("broken"), relative, edit)
        broken[name] = [
            query._replace(where=f"[{name}] {query.where}") for query in kql.deployed_queries(checks.Infra.load(root))
        ]
    queries = [*kql.deployed_queries(infra()), *UNKNOWN, *(query for each in broken.values() for query in each)]
    answers = kql.language_service({query.where: query.text for query in queries})
    problems = {
        name: [problem.removeprefix(f"[{name}] ") for problem in kql.problems_of(each, answers)]
        for name, each in broken.items()
    }
    return LanguageService(answers, problems)


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_kql_check_fails_on_a_broken_copy(service: LanguageService, breakage: str) -> None:
    expected = BREAKAGES[breakage][2]
    problems = service.broken[breakage]
    assert any(expected in problem for problem in problems), "\n".join(problems)
