"""Property tests: whatever bytes a producer sends, a delivery ends with exactly one result, the
model is called only for a valid job and never twice for one, and nothing is left for poison.

The real parser, validator and serialiser run against in-process storage and model fakes
(tests/worker/fakes.py), so hundreds of random examples, and every known hostile value in every place, fit in the
fast tier.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.jobs import RequeuedRef
from shared.messages import JobRefused, parse_job, parse_message
from shared.worker import check_allowed, handle
from tests.worker.fakes import Message, fake_world

# 500 random bodies: the hostile classes are each tried in every place and encoding deterministically below, and
# each parser refusal has its own case in tests/test_jobs.py (test_hostile_bodies_get_specific_codes).
EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
VALID_JOBS: list[dict[str, Any]] = [
    {"id": "job-1", "prompt": "hello"},
    {"id": "job-2", "messages": [{"role": "user", "content": "hi"}], "system": "be brief"},
    {"prompt": "no id", "parameters": {"temperature": 0.5, "max_tokens": 10}, "metadata": {"k": [1, 2]}},
    {"id": "job-4", "prompt": "json", "parameters": {"response_format": {"type": "json_object"}}},
    {"id": "job-5", "prompt": "reply", "reply_to": "replies"},
]
FIELDS = ["id", "prompt", "messages", "system", "deployment", "parameters", "metadata", "reply_to", "payload",
          "requeued", "redelivery", "temperature", "role", "content"]  # fmt: skip


@st.composite
def mutated_jobs(draw: st.DrawFn) -> dict[str, Any]:
    job = json.loads(json.dumps(draw(st.sampled_from(VALID_JOBS))))
    for _ in range(draw(st.integers(1, 3))):
        target = job
        if "parameters" in job and isinstance(job["parameters"], dict) and draw(st.booleans()):
            target = job["parameters"]
        key = draw(st.sampled_from([*FIELDS, *target]))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(json_values)
    return job


def encodings(value: Any) -> st.SearchStrategy[bytes]:
    text = json.dumps(value).encode()  # NaN and Infinity included, as Python writes them
    return st.sampled_from([text, base64.b64encode(text), base64.encodebytes(text), b" " + text + b"\n"])


# Raw JSON that Python's parser or serialiser chokes on, or that no writer can store: spliced into a
# valid job where a value goes (the classes a crash loop or a second model call came from).
HOSTILE = [b"[" * 3000 + b"]" * 3000, b"[" * 70 + b"]" * 70, b"9" * 5000, b"1e999", b"NaN", b"-Infinity",
           b'"\\ud800"', b'"a\\u0000b"', b'{"a": 1, "a": 2}', b'"\\udfff\\ud800"']  # fmt: skip


PLACES = ["metadata.k", "prompt", "system", "parameters.seed", "parameters.temperature"]


def splice(valid: dict[str, Any], place: str, hostile: bytes) -> bytes:
    job = json.loads(json.dumps(valid))
    parent, _, key = place.rpartition(".")
    (job.setdefault(parent, {}) if parent else job)[key] = "@@HOSTILE@@"
    return json.dumps(job).encode().replace(b'"@@HOSTILE@@"', hostile)


@st.composite
def spliced_jobs(draw: st.DrawFn) -> bytes:
    return splice(draw(st.sampled_from(VALID_JOBS)), draw(st.sampled_from(PLACES)), draw(st.sampled_from(HOSTILE)))


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.flatmap(encodings),
    mutated_jobs().flatmap(encodings),
    spliced_jobs().flatmap(lambda body: st.sampled_from([body, base64.b64encode(body), base64.encodebytes(body)])),
)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as run:
        yield run


def is_pointer(body: bytes) -> bool:
    try:
        return isinstance(parse_message(body), RequeuedRef)
    except JobRefused:
        return False


def valid_job(body: bytes, settings_of: Any) -> bool:
    try:
        check_allowed(parse_job(body), settings_of)
    except JobRefused:
        return False
    return True


def delivered_twice(runner: asyncio.Runner, body: bytes) -> dict[str, Any] | None:
    """Delivers ``body`` and its redelivery; checks the invariants every body keeps and returns its one result
    (None for a pointer naming no stored retry state, forged or stale, which runs nothing and stores nothing)."""
    world = fake_world()
    first, second = Message(body, id="msg-1"), Message(body, id="msg-1", dequeue_count=2)
    runner.run(handle(first, world.runtime))  # raising here would be a crash loop to poison
    runner.run(handle(second, world.runtime))  # the redelivery
    stored = world.result_ids()
    if is_pointer(body):
        assert stored == set() and world.model.calls == [] and world.jobs_queue.messages == []
        return None
    assert len(stored) == 1, stored
    result = world.result(stored.pop())
    assert result["status"] in ("succeeded", "failed")
    expected_calls = 1 if valid_job(body, world.runtime.settings) else 0
    assert len(world.model.calls) == expected_calls
    assert (result["status"] == "succeeded") == bool(expected_calls)
    if result["status"] == "failed":
        assert result["error"]["code"] and result["error"]["message"]
    assert world.jobs_queue.messages == []  # nothing re-enqueued for a model that never throttles
    return result


@EXAMPLES
@given(body=bodies)
def test_every_message_ends_with_one_result_and_at_most_one_model_call(runner: asyncio.Runner, body: bytes) -> None:
    delivered_twice(runner, body)


def test_every_hostile_value_in_every_place_and_encoding_ends_in_one_result(runner: asyncio.Runner) -> None:
    # The classes a crash loop or a second model call came from, each tried everywhere rather than left for the
    # property's random draws to find (so its example count can stay small). Most are refused; where one is not, the
    # job is answered once.
    outcomes: Counter[str] = Counter()
    for job, place, hostile in itertools.product(VALID_JOBS, PLACES, HOSTILE):
        body = splice(job, place, hostile)
        for encoded in (body, base64.b64encode(body), base64.encodebytes(body)):
            result = delivered_twice(runner, encoded)
            assert result is not None, (job, place, hostile)
            outcomes[result["status"]] += 1
    # Only a NUL inside metadata (5 jobs x 3 encodings) is answered: a NUL is refused in text the model reads only.
    assert outcomes == {"failed": 735, "succeeded": 15}
