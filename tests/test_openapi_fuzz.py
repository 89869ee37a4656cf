"""The OpenAPI document is a contract: calls generated from it never get a 5xx, nor an answer
(status, content type, headers, body) the document does not describe.

Schemathesis reads ``/openapi.json`` from a running server and, for every operation, sends
its coverage cases (boundaries, each input made invalid in turn, undeclared methods) then a
fixed number of generated calls, valid and invalid, each with a token the call accepts.
Every problem is collected, not only the first, and shown by the smallest request causing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from pydantic import TypeAdapter, ValidationError
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.core.failures import Failure
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.schemas import OpenApiSchema

from campana.auth import SEND_SCOPE
from campana.schemas import (
    LINK_URL_PATTERN,
    MESSAGE_MAX_CHARS,
    MESSAGE_PATTERN,
    NO_NUL_PATTERN,
    LinkUrl,
    Message,
    UserId,
)

from .support.servers import Server

# Generated calls per operation, valid and invalid each. With the coverage cases, about 500
# calls for the whole document: 3 to 5 s on SQLite or PostgreSQL.
MAX_EXAMPLES = 40

# Each judges one answer to one request. Left out: the stateful checks (`use_after_free`,
# `ensure_resource_availability`), `ignored_auth` and `object_level_authorization` (tokens
# and ownership have tests of their own) and `max_response_time` (no budget to hold).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
]

PRODUCER_CALL = ("POST", "/api/v1/notifications/")

# The producer call takes its idempotency key as the `Idempotency-Key` header or the body's
# `idempotency_key`; given both and different, it answers 422 (it cannot know which one the
# caller meant). JSON Schema cannot say "equal" (the header's description says it), so such
# calls are valid by the document yet refused: `positive_data_acceptance` is left out for
# them alone, every other check still judges them.
ONLY_VALID_WITH_EQUAL_KEYS = [positive_data_acceptance]

# Sent with every request, whatever the case: left out of a finding's request.
_TRANSPORT_HEADERS = {
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "content-length",
    "authorization",
    "x-schemathesis-testcaseid",
}


@dataclass(frozen=True)
class Finding:
    """One wrong answer, shown by the smallest request that got it."""

    operation: str
    problems: tuple[str, ...]
    request: str
    status: int | None
    answer: str

    def __str__(self) -> str:
        status = "no answer" if self.status is None else str(self.status)
        problems = "\n  ".join(self.problems)
        return f"{self.operation}\n  {problems}\n  {self.request}\n  -> {status} {self.answer}"


@dataclass
class FuzzRun:
    """What the calls found, and every answer's status (to see that the tokens worked)."""

    findings: dict[tuple[str, int | None, str], Finding] = field(default_factory=dict)
    statuses: Counter[int | None] = field(default_factory=Counter)

    def record(self, finding: Finding) -> None:
        # One entry per operation and answer: the same 500, or the same 422 detail whatever
        # its numbers (`user_ids.3`, `user_ids.7`), is one problem however many requests got it.
        key = (finding.operation, finding.status, re.sub(r"\d+", "#", finding.answer))
        kept = self.findings.get(key)
        if kept is None:
            self.findings[key] = finding
            return
        problems = tuple(dict.fromkeys(kept.problems + finding.problems))
        smallest = finding if len(finding.request) < len(kept.request) else kept
        self.findings[key] = dataclasses.replace(smallest, problems=problems)

    def report(self) -> str:
        findings = sorted(self.findings.values(), key=lambda f: (f.operation, str(f.status)))
        statuses = ", ".join(
            f"{status}: {n}" for status, n in sorted(self.statuses.items(), key=str)
        )
        return (
            f"{len(findings)} wrong answer(s) in {self.statuses.total()} calls ({statuses}):\n\n"
            + "\n\n".join(map(str, findings))
        )


def fuzz_config(base_url: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            # The tokens are given with each call; bad tokens have tests of their own.
            "generation": {"with-security-parameters": False},
        }
    )


async def test_every_operation_answers_as_its_openapi_document_says(
    rest_server: Server, user: str
) -> None:
    # Items to list and to mark read, so answers carry items and not only errors.
    unread = await rest_server.send(user, "unread", link_url="https://example.com/x")
    read = await rest_server.send(user, "read")
    assert (await rest_server.mark_read(user, read["id"])).status_code == 200

    answer = await rest_server.http.get("/openapi.json")
    assert answer.status_code == 200
    schema = schemathesis.openapi.from_dict(answer.json(), config=fuzz_config(rest_server.base_url))

    # A producer of its own: its idempotency keys are its own, whatever other tests sent.
    producer = {
        "Authorization": f"Bearer {rest_server.token(f'producer-{user}', scopes=(SEND_SCOPE,))}"
    }

    def tokens(case: Case[Any]) -> dict[str, str]:
        if (case.method.upper(), case.operation.path) == PRODUCER_CALL:
            return producer
        return rest_server.auth(user)

    # The calls block: they run off the event loop, which serves the in-process server.
    run = await asyncio.to_thread(fuzz, schema, tokens, {"notification_id": unread["id"]})

    if run.findings:
        pytest.fail(run.report(), pytrace=False)
    refused = run.statuses[401] + run.statuses[403]
    assert refused < run.statuses.total() / 10, f"the tokens were refused: {run.report()}"


def fuzz(
    schema: OpenApiSchema,
    tokens: Callable[[Case[Any]], dict[str, str]],
    known_path_parameters: Mapping[str, str],
) -> FuzzRun:
    """Every operation's coverage cases, then its generated calls, valid and invalid."""
    run = FuzzRun()

    def call(case: Case[Any]) -> None:
        status, findings = check(case, tokens(case))
        run.statuses[status] += 1
        for finding in findings:
            run.record(finding)

    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is wrong
        operation = result.ok()
        coverage = schema.config.generation_for(operation=operation, phase="coverage")
        for case in schema.iter_coverage_cases(
            operation, generation_modes=list(GenerationMode), generation_config=coverage
        ):
            call(case)
        generate(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), call)
        # An operation without parameters or body has nothing to make invalid.
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            generate(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), call)
        # Random identifiers only ever name nothing: also act on an item that exists.
        known = {
            parameter.name: known_path_parameters[parameter.name]
            for parameter in operation.path_parameters
            if parameter.name in known_path_parameters
        }
        if known:
            generate(operation.as_strategy(path_parameters=known), call)
    return run


def generate(strategy: SearchStrategy[Case[Any]], call: Callable[[Case[Any]], None]) -> None:
    """Up to MAX_EXAMPLES cases, the same on every run for the same source tree (a failure in
    CI is a failure on a laptop). ``call`` records problems instead of raising, so nothing is
    shrunk: every case is sent once and the time stays bounded."""

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(strategy)
    def run(case: Case[Any]) -> None:
        call(case)

    run()


def check(case: Case[Any], headers: dict[str, str]) -> tuple[int | None, list[Finding]]:
    """Send the case; its answer's status and what is wrong with the answer."""
    operation = f"{case.method.upper()} {case.operation.path}"
    try:
        response = case.call(headers=headers, timeout=10)
    except Exception as error:  # no answer at all (reset, timeout) is a finding too
        request = f"{operation} {case.path_parameters} {case.query} {case.headers} {case.body!r}"
        return None, [Finding(operation, ("no answer",), request, None, repr(error))]
    excluded = ONLY_VALID_WITH_EQUAL_KEYS if gives_two_idempotency_keys(case) else []
    try:
        case.validate_response(response, checks=CHECKS, excluded_checks=excluded, headers=headers)
    except FailureGroup as group:
        problems = tuple(describe_failure(failure) for failure in group.exceptions)
        request = describe_request(response)
        answer = response.content.decode(errors="replace")[:300]
        return response.status_code, [
            Finding(operation, problems, request, response.status_code, answer)
        ]
    return response.status_code, []


def gives_two_idempotency_keys(case: Case[Any]) -> bool:
    """A producer call with an ``Idempotency-Key`` header and a different body key."""
    if (case.method.upper(), case.operation.path) != PRODUCER_CALL:
        return False
    headers = {name.lower(): value for name, value in (case.headers or {}).items()}
    header_key = headers.get("idempotency-key")
    body_key = case.body.get("idempotency_key") if isinstance(case.body, dict) else None
    return header_key is not None and body_key is not None and header_key != body_key


def describe_failure(failure: Failure) -> str:
    detail = " ".join(str(failure.message).split())
    return f"{failure.title}: {detail[:300]}" if detail else str(failure.title)


def describe_request(response: schemathesis.Response) -> str:
    """The request as sent, without its token and the headers every request has."""
    request = response.request
    url = urlsplit(str(request.url))
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _TRANSPORT_HEADERS}
    body = request.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    parts = [f"{request.method} {target}"]
    if headers:
        parts.append(f"headers={headers}")
    if isinstance(body, str) and body:
        parts.append(f"body={body[:500]}")
    return " ".join(parts)


# The patterns of the document against the validators they describe: a value the pattern
# allows is accepted, any other refused. A generated call shows a mismatch only by luck;
# these search where the validators' answers turn.

# Where stripping turns: every character pydantic strips, and some it keeps.
STRIPPABLE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
MESSAGE_ALPHABET = STRIPPABLE + "\x00\x1c\u180e\u200b\ufeffa\u00e9"


def documented(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


@functools.cache
def adapter(annotated: Any) -> TypeAdapter[str]:
    return TypeAdapter(annotated)


def accepted(annotated: Any, value: str) -> bool:
    try:
        adapter(annotated).validate_python(value)
    except ValidationError:
        return False
    return True


def agreement(max_examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The same examples on every run, as for the calls above."""
    return hypothesis.settings(max_examples=max_examples, derandomize=True, database=None)


@pytest.mark.parametrize(
    ("link", "allowed"),
    [
        *[(link, True) for link in ("/", "/a", "/a//b?c#d", "http://x", "HTTPS://x/y?z#w")],
        *[(link, True) for link in ("http://[::1]/", "https://m\u00fcnchen.example/\u00e9")],
        *[(link, False) for link in ("", "//evil.example", "/\\evil.example", "a/b", "http://")],
        *[(link, False) for link in ("mailto:x@y", "ftp://x", "http:x", "http:///x")],
        *[(link, False) for link in ("http://a b", "/a\tb", "/\x7f", "/\x85", "/a\u3000")],
    ],
)
def test_a_link_is_a_site_path_or_an_http_url_with_a_host(link: str, allowed: bool) -> None:
    """The document's pattern is the validator's rule: one decides for both."""
    assert accepted(LinkUrl, link) is allowed
    assert documented(LINK_URL_PATTERN, link) is allowed


@agreement(max_examples=1000)
@hypothesis.given(
    st.one_of(
        st.text(st.sampled_from(MESSAGE_ALPHABET), max_size=8),
        st.builds(
            "{}{}{}".format,
            st.text(st.sampled_from(STRIPPABLE), max_size=3),
            st.integers(MESSAGE_MAX_CHARS - 2, MESSAGE_MAX_CHARS + 1).map("m".__mul__),
            st.text(st.sampled_from(STRIPPABLE), max_size=3),
        ),
    )
)
def test_the_message_pattern_allows_exactly_the_accepted_messages(message: str) -> None:
    assert documented(MESSAGE_PATTERN, message) == accepted(Message, message)


@pytest.mark.parametrize("user_id", ["u", "u\x00", "\x00", "\u00e9 \n", "\x01"])
def test_the_no_nul_pattern_allows_exactly_the_accepted_user_ids(user_id: str) -> None:
    assert documented(NO_NUL_PATTERN, user_id) == accepted(UserId, user_id)
