"""What one job writes to the log under a root logger at INFO, as Microsoft's Python worker forwards it:
one line from the worker, nothing from the SDKs (the app quiets them itself, see shared/logs.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from emulators.aoai import answer_for
from shared import worker
from shared.connections import Runtime
from shared.logs import THIRD_PARTY_LOGGERS, quiet_third_party_loggers
from tests.conftest import DEPLOYMENT
from tests.worker.fakes import Message

SDK_PREFIXES = ("azure", "msal", "openai", "httpx", "httpcore", "urllib3")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def sdk(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name.startswith(SDK_PREFIXES)]

    def job_lines(self, job_id: str) -> list[str]:
        return [
            r.getMessage()
            for r in self.records
            if r.name == "shared.delivery" and r.getMessage().startswith(f"job id={job_id} status=")
        ]


@pytest.fixture
def root_at_info() -> Iterator[Capture]:
    """The root logger at INFO with a handler that keeps every record reaching it (as the host's does)."""
    root, capture = logging.getLogger(), Capture()
    before = root.level
    root.setLevel(logging.INFO)
    root.addHandler(capture)
    yield capture
    root.removeHandler(capture)
    root.setLevel(before)


@pytest.fixture
def levels() -> Iterator[dict[str, int]]:
    """The third-party loggers' levels as importing the worker left them, restored after the test."""
    saved = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    yield saved
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest_asyncio.fixture
async def runtime(local_dev_settings: dict[str, str]) -> AsyncIterator[Runtime]:
    made = Runtime.from_env(local_dev_settings)
    yield made
    await made.close()


def job(job_id: str, prompt: str) -> Message:
    return Message(json.dumps({"id": job_id, "prompt": prompt}).encode(), id=f"msg-{job_id}")


async def test_a_job_logs_one_line_and_no_sdk_records(
    runtime: Runtime, root_at_info: Capture, levels: dict[str, int]
) -> None:
    # Importing the worker (as function_app does) set them; nothing else in the app touches them.
    assert levels == dict.fromkeys(THIRD_PARTY_LOGGERS, logging.WARNING)
    prompt = "Quiet please: the secret word is marmalade"
    answer = answer_for([{"role": "user", "content": prompt}], DEPLOYMENT)

    result = await worker.handle(job("quiet-1", prompt), runtime)
    assert result is not None and result.status == "succeeded" and result.output == answer

    assert [f"{r.name} {r.getMessage()}" for r in root_at_info.sdk() if r.levelno < logging.WARNING] == []
    assert len(root_at_info.job_lines("quiet-1")) == 1, [r.getMessage() for r in root_at_info.records]
    assert not [r for r in root_at_info.records if prompt in r.getMessage() or answer in r.getMessage()]


async def test_without_the_app_setting_levels_the_sdks_log_every_request(
    runtime: Runtime, root_at_info: Capture, levels: dict[str, int]
) -> None:
    """The control: the same job with the loggers unconfigured (what the host alone would give)."""
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    await worker.handle(job("loud-1", "Loud"), runtime)
    loud = root_at_info.sdk()
    assert any(r.name == "azure.core.pipeline.policies.http_logging_policy" for r in loud), loud

    assert quiet_third_party_loggers() == list(THIRD_PARTY_LOGGERS)
    root_at_info.records.clear()
    await worker.handle(job("loud-2", "Quiet again"), runtime)
    assert root_at_info.sdk() == []
    assert len(root_at_info.job_lines("loud-2")) == 1


def test_a_level_the_operator_set_is_kept(levels: dict[str, int]) -> None:
    logging.getLogger("openai").setLevel(logging.DEBUG)  # what OPENAI_LOG=debug does at import
    logging.getLogger("urllib3").setLevel(logging.NOTSET)
    assert quiet_third_party_loggers() == ["urllib3"]
    assert logging.getLogger("openai").level == logging.DEBUG
    assert logging.getLogger("urllib3").level == logging.WARNING
