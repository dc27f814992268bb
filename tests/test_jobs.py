"""The job contract: decoding, validation codes, and the published schemas."""

from __future__ import annotations

import base64
import json

import pytest

from shared.jobs import SCHEMA_DIR, Job, json_schemas
from shared.messages import MAX_JSON_DEPTH, JobRefused, parse_job


def code_of(body: bytes) -> tuple[str, str | None]:
    with pytest.raises(JobRefused) as caught:
        parse_job(body)
    return caught.value.code, caught.value.job_id


def test_plain_and_base64_json_give_the_same_job() -> None:
    body = json.dumps({"id": "a-1", "prompt": "hello"}).encode()
    assert parse_job(body) == parse_job(base64.b64encode(body)) == Job(id="a-1", prompt="hello")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1]", "invalid_job"),
        (b'"just a string"', "invalid_job"),
        (b'{"prompt": ""}', "empty_prompt"),
        (b'{"prompt": "   "}', "empty_prompt"),
        (b'{"messages": []}', "empty_prompt"),
        (b"{}", "prompt_or_messages"),
        (b'{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}', "prompt_or_messages"),
        (b'{"prompt": 1}', "wrong_type"),
        (b'{"prompt": "a", "parameters": {"temperature": "hot"}}', "wrong_type"),
        (b'{"prompt": "a", "parameters": {"temperature": 3}}', "invalid_parameter"),
        (b'{"prompt": "a", "parameters": {"max_completion_tokens": 0}}', "invalid_parameter"),
        # Beyond the 64-bit integer the service takes: refused here, never sent.
        (b'{"prompt": "a", "parameters": {"seed": 100000000000000000000000000000}}', "invalid_parameter"),
        (b'{"prompt": "a", "parameters": {"seed": -9223372036854775809}}', "invalid_parameter"),
        (b'{"prompt": "a", "parameters": {"logit_bias": {}}}', "parameter_not_allowed"),
        (b'{"prompt": "a", "colour": "red"}', "unknown_field"),
        (b'{"id": "a/b", "prompt": "a"}', "invalid_id"),
        (b'{"id": "..", "prompt": "a"}', "invalid_id"),
        (b'{"id": "' + b"x" * 129 + b'", "prompt": "a"}', "invalid_id"),
        (b'{"prompt": "a", "reply_to": "UPPER"}', "reply_to_not_allowed"),
        (base64.b64encode(b'{"prompt": "\xff"}'), "invalid_utf8"),
        (b'{"prompt": "\xff"}', "invalid_utf8"),
        (base64.b64encode(b"\x00\x01garbage"), "invalid_json"),
        (b'{"prompt": "a", "parameters": {"max_tokens": 5, "max_completion_tokens": 5}}', "invalid_job"),
        (b'{"prompt": "a", "parameters": {"response_format": {"type": "json_schema"}}}', "invalid_job"),
    ],
)
def test_invalid_bodies_get_specific_codes(body: bytes, code: str) -> None:
    assert code_of(body)[0] == code


def test_the_largest_seed_the_service_takes_is_accepted() -> None:
    assert parse_job(b'{"prompt": "a", "parameters": {"seed": 9223372036854775807}}').parameters.seed == 2**63 - 1


def test_failed_job_keeps_its_valid_id_and_drops_an_invalid_one() -> None:
    assert code_of(b'{"id": "mine", "prompt": ""}') == ("empty_prompt", "mine")
    assert code_of(b'{"id": "../../etc", "prompt": "a"}') == ("invalid_id", None)


def test_error_messages_name_the_field() -> None:
    with pytest.raises(JobRefused, match=r"parameters\.temperature"):
        parse_job(b'{"prompt": "a", "parameters": {"temperature": 3}}')
    with pytest.raises(JobRefused, match="logit_bias"):
        parse_job(b'{"prompt": "a", "parameters": {"logit_bias": {}}}')


def test_chat_messages_put_system_first() -> None:
    job = Job.model_validate({"prompt": "q", "system": "be brief"})
    assert job.chat_messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]


def test_published_schemas_match_the_models() -> None:
    # Regenerate with `python -m shared.jobs` after changing shared/jobs.py.
    for name, schema in json_schemas().items():
        assert json.loads((SCHEMA_DIR / name).read_text()) == schema, f"schemas/{name} is stale"


def deep(levels: int) -> bytes:
    return b'{"prompt": "a", "metadata": {"x": ' + b"[" * levels + b"]" * levels + b"}}"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),  # RecursionError in the parser before
        (deep(70), "too_deep"),  # validates, but the result echoing it could not be written
        (b'{"prompt": "a", "metadata": {"n": ' + b"9" * 5000 + b"}}", "number_too_large"),  # ValueError before
        (b'{"prompt": "a", "metadata": {"n": 1e999}}', "number_too_large"),  # parsed as inf
        (b'{"prompt": "a", "metadata": {"n": NaN}}', "invalid_json"),
        (b'{"prompt": "a", "metadata": {"n": -Infinity}}', "invalid_json"),
        (
            b'{"prompt": "a", "parameters": {"response_format": {"type": "json_schema", "json_schema": '
            b'{"name": "x", "schema": {"maximum": Infinity}}}}}',
            "invalid_json",
        ),
        (b'{"prompt": "a", "metadata": {"s": "\\ud800"}}', "invalid_text"),  # lone surrogate
        (b'{"prompt": "a\\u0000b"}', "invalid_text"),
        (b'{"prompt": "a", "system": "\\u001b[31m"}', "invalid_text"),
        (b'{"messages": [{"role": "user", "content": "x\\u007f"}]}', "invalid_text"),
        (b'{"prompt": "a", "prompt": "b"}', "duplicate_key"),
        (b'{"prompt": "a", "metadata": {"k": 1, "k": 2}}', "duplicate_key"),
        (b"null", "invalid_job"),  # valid base64 too: read as JSON first
        (b"true", "invalid_job"),
        (b"1234", "invalid_job"),
        (base64.b64encode(b"null"), "invalid_job"),
    ],
)
def test_hostile_bodies_get_specific_codes(body: bytes, code: str) -> None:
    assert code_of(body)[0] == code


def test_depth_limit_is_exact_and_counts_no_brackets_inside_strings() -> None:
    assert parse_job(deep(MAX_JSON_DEPTH - 2)).metadata is not None  # + the job and metadata objects
    assert code_of(deep(MAX_JSON_DEPTH - 1))[0] == "too_deep"
    brackets_in_text = json.dumps({"prompt": "[" * 10_000 + '\\"{' * 100}).encode()
    assert parse_job(brackets_in_text).prompt == "[" * 10_000 + '\\"{' * 100


def test_tabs_newlines_and_valid_surrogate_pairs_are_kept() -> None:
    job = parse_job(b'{"prompt": "a\\tb\\r\\nc \\ud83d\\ude00"}')
    assert job.prompt == "a\tb\r\nc \U0001f600"


def test_base64_with_line_breaks_and_a_byte_order_mark() -> None:
    body = json.dumps({"id": "wrapped", "prompt": "x" * 200}).encode()
    assert parse_job(base64.encodebytes(body)).id == "wrapped"  # a line break every 76 characters
    assert parse_job(b"\xef\xbb\xbf" + body).id == "wrapped"


def test_codes_keep_the_job_id_when_it_is_valid() -> None:
    assert code_of(b'{"id": "j-1", "prompt": "a\\u0000"}') == ("invalid_text", "j-1")
