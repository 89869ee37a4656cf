"""What the REST calls refuse at their edges: body type and size, deep pages, methods a
path does not have, an unauthorised scraper; and what the logs and the OpenAPI say."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import prometheus_client
import pytest
from uvicorn.logging import AccessFormatter

from campana.api.rest import MAX_SKIP
from campana.logs import REDACTED, JsonFormatter, RedactTokens, log_config, redact

from .support.servers import ALLOWED_ORIGIN, Server, ServerPool
from .support.waits import until

NOTIFICATIONS = "/api/v1/notifications/"
MAX_BODY = 2048
JSON_TYPE = {"Content-Type": "application/json"}
# The producer call has a short road (a server's call) and the full one (a browser's).
ROADS = pytest.mark.parametrize("origin", [{}, {"Origin": ALLOWED_ORIGIN}], ids=["short", "full"])


def body(user_id: str, **fields: Any) -> dict[str, Any]:
    return {"user_id": user_id, "type": "GENERIC_INFO", "message": "hello", **fields}


def large_body(user_id: str) -> bytes:
    """A body the call would take (about 4 KB), were it not above ``MAX_BODY``."""
    return json.dumps(body(user_id, message="m" * 1900, link_url="/" + "l" * 2000)).encode()


async def small_limit(pool: ServerPool) -> Server:
    return await pool.get("sqlite", "inprocess", http_max_body_bytes=MAX_BODY)


@dataclass
class RawAnswer:
    status_code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def post_head(headers: dict[str, str]) -> bytes:
    lines = [f"POST {NOTIFICATIONS} HTTP/1.1", "Host: campana", *map(": ".join, headers.items())]
    return "\r\n".join([*lines, "", ""]).encode()


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def post_raw(server: Server, headers: dict[str, str], *parts: bytes) -> RawAnswer:
    """POST written by hand (a head, then each part as is), read until the server closes.

    A part that never ends its body tells whether the server answers without waiting for
    the rest; reading to the end tells whether it closes the connection.
    """
    reader, writer = await connect(server)
    try:
        writer.write(post_head(headers))
        for part in parts:
            writer.write(part)
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    fields = (line.partition(":") for line in header_lines)
    answer_headers = {name.lower(): value.strip() for name, _, value in fields}
    return RawAnswer(int(status_line.split()[1]), answer_headers, content)


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# Content type


@ROADS
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonp", "json"],
)
async def test_a_body_not_sent_as_json_is_415_and_writes_nothing(
    rest_server: Server, user: str, rows: Any, origin: dict[str, str], content_type: str | None
) -> None:
    headers = {**rest_server.producer, **origin}
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = await rest_server.http.post(
        NOTIFICATIONS, content=json.dumps(body(user)), headers=headers
    )
    assert answer.status_code == 415, answer.text
    assert answer.json() == {
        "error": "unsupported_media_type",
        "detail": "the body must be JSON, sent with Content-Type: application/json",
    }
    assert await rows(rest_server, user) == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json ;"]
)
async def test_json_with_parameters_or_in_any_case_is_json(
    rest_server: Server, user: str, content_type: str
) -> None:
    headers = {**rest_server.producer, "Content-Type": content_type}
    answer = await rest_server.http.post(
        NOTIFICATIONS, content=json.dumps(body(user)), headers=headers
    )
    assert answer.status_code == 201, answer.text


@ROADS
async def test_the_token_is_checked_before_the_content_type_and_the_type_before_the_size(
    server_pool: ServerPool, user: str, rows: Any, origin: dict[str, str]
) -> None:
    server = await small_limit(server_pool)
    text = {**origin, "Content-Type": "text/plain"}
    cases = [({}, 401), (server.auth(user), 403), (server.producer, 415)]
    for headers, status in cases:
        answer = await server.http.post(NOTIFICATIONS, content=b"x" * 4096, headers=headers | text)
        assert answer.status_code == status, answer.text
    assert await rows(server, user) == []


# Body size


@ROADS
async def test_a_declared_body_above_the_limit_is_413_before_a_byte_of_it_is_read(
    server_pool: ServerPool, user: str, rows: Any, origin: dict[str, str]
) -> None:
    server = await small_limit(server_pool)
    content = large_body(user)
    headers = {**server.producer, **JSON_TYPE, **origin, "Content-Length": str(len(content))}
    # Only the head is sent: an answer that waited for the body would never come.
    unsent = await post_raw(server, headers)
    sent = await post_raw(server, headers, content)
    for answer in (unsent, sent):
        assert answer.status_code == 413
        assert answer.headers["connection"] == "close"
        assert answer.json() == {
            "error": "body_too_large",
            "detail": f"the request body is larger than {MAX_BODY} bytes",
        }
    assert await rows(server, user) == []


@ROADS
async def test_a_chunked_body_is_413_as_soon_as_it_grows_past_the_limit(
    server_pool: ServerPool, user: str, rows: Any, origin: dict[str, str]
) -> None:
    server = await small_limit(server_pool)
    content = large_body(user)
    headers = {**server.producer, **JSON_TYPE, **origin, "Transfer-Encoding": "chunked"}
    # The whole body in 1 KB chunks, but never its last (empty) chunk: the answer comes
    # from the size alone.
    parts = [chunk(content[i : i + 1024]) for i in range(0, len(content), 1024)]
    answer = await post_raw(server, headers, *parts)
    assert answer.status_code == 413
    assert answer.headers["connection"] == "close"
    assert answer.json()["error"] == "body_too_large"
    assert await rows(server, user) == []


@ROADS
async def test_bodies_within_the_limit_are_created_declared_or_chunked(
    server_pool: ServerPool, user: str, rows: Any, origin: dict[str, str]
) -> None:
    server = await small_limit(server_pool)
    content = json.dumps(body(user, message="m" * 1500)).encode()
    assert len(content) < MAX_BODY

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(content), 500):
            yield content[i : i + 500]

    headers = {**server.producer, **JSON_TYPE, **origin}
    declared = await server.http.post(NOTIFICATIONS, content=content, headers=headers)
    streamed = await server.http.post(NOTIFICATIONS, content=chunked(), headers=headers)
    assert (declared.status_code, streamed.status_code) == (201, 201), streamed.text
    assert len(await rows(server, user)) == 2


def answered(status: int) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "campana_request_duration_seconds_count",
        {"method": "POST", "route": NOTIFICATIONS, "status": str(status)},
    )
    return value or 0.0


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """What the in-process servers log as errors (a 500's traceback among them)."""
    handler = ErrorRecords()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@ROADS
async def test_a_client_gone_in_the_middle_of_its_body_is_no_server_error(
    rest_server: Server, user: str, rows: Any, origin: dict[str, str]
) -> None:
    headers = {**rest_server.producer, **JSON_TYPE, **origin, "Content-Length": "1000"}
    before = answered(400), answered(500)
    with server_errors() as errors:
        _, writer = await connect(rest_server)
        writer.write(post_head(headers) + b'{"user_id": "' + b"x" * 100)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await until(lambda: (answered(400), answered(500)) != before, within=10)
    assert (answered(400), answered(500)) == (before[0] + 1, before[1])
    assert [record.getMessage() for record in errors] == []
    assert await rows(rest_server, user) == []


# Paging


async def test_skip_may_reach_its_documented_maximum(rest_server: Server, user: str) -> None:
    answer = await rest_server.http.get(
        NOTIFICATIONS, params={"skip": MAX_SKIP}, headers=rest_server.auth(user)
    )
    assert answer.status_code == 200
    assert answer.json() == []
    schema = (await rest_server.http.get("/openapi.json")).json()
    parameters = schema["paths"][NOTIFICATIONS]["get"]["parameters"]
    (skip,) = (parameter for parameter in parameters if parameter["name"] == "skip")
    assert skip["schema"]["maximum"] == MAX_SKIP == 1_000_000
    assert "1,000,000" in skip["description"]


# Methods


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (NOTIFICATIONS, "GET, POST, OPTIONS"),
        ("/api/v1/notifications/read-all", "POST, OPTIONS"),
        (f"/api/v1/notifications/{uuid.uuid4()}/read", "PATCH, OPTIONS"),
        ("/healthz", "GET, OPTIONS"),
    ],
)
async def test_a_405_names_every_method_of_the_path_and_options_answers_them(
    rest_server: Server, path: str, allowed: str
) -> None:
    for method in ("DELETE", "PUT"):
        answer = await rest_server.http.request(method, path)
        assert answer.status_code == 405
        assert answer.headers["allow"] == allowed
        assert answer.json() == {"error": "method_not_allowed", "detail": "Method Not Allowed"}
    options = await rest_server.http.options(path)
    assert options.status_code == 204
    assert options.headers["allow"] == allowed
    assert options.content == b""


async def test_a_cors_preflight_is_still_answered_for_cors(rest_server: Server) -> None:
    answer = await rest_server.http.options(
        NOTIFICATIONS,
        headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]


# Metrics


async def test_metrics_need_the_metrics_token_when_one_is_set(server_pool: ServerPool) -> None:
    token = "scrape-" + uuid.uuid4().hex
    server = await server_pool.get("sqlite", "inprocess", metrics_token=token)
    for authorization in (None, "Bearer", "Bearer wrong", f"Basic {token}", f"Bearer {token}x"):
        headers = {"Authorization": authorization} if authorization else {}
        answer = await server.http.get("/metrics", headers=headers)
        assert answer.status_code == 401, authorization
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {
            "error": "unauthorized",
            "detail": "/metrics needs Authorization: Bearer <CAMPANA_METRICS_TOKEN>",
        }
    for authorization in (f"Bearer {token}", f"bearer  {token}"):
        answer = await server.http.get("/metrics", headers={"Authorization": authorization})
        assert answer.status_code == 200
        assert "campana_request_duration_seconds" in answer.text


async def test_metrics_are_open_when_no_metrics_token_is_set(rest_server: Server) -> None:
    assert rest_server.settings.metrics_token is None
    assert (await rest_server.http.get("/metrics")).status_code == 200


# OpenAPI


async def test_openapi_says_exactly_one_of_user_id_or_user_ids(rest_server: Server) -> None:
    schema = (await rest_server.http.get("/openapi.json")).json()
    post = schema["paths"][NOTIFICATIONS]["post"]
    body_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["oneOf"] == [
        {
            "required": ["user_id"],
            "properties": {"user_id": {"type": "string"}},
            "not": {"required": ["user_ids"]},
        },
        {
            "required": ["user_ids"],
            "properties": {"user_ids": {"type": "array"}},
            "not": {"required": ["user_id"]},
        },
    ]
    assert {"413", "415"} <= set(post["responses"])


async def test_a_body_of_each_documented_alternative_is_created(
    rest_server: Server, user: str, rows: Any
) -> None:
    schema = (await rest_server.http.get("/openapi.json")).json()
    body_schema = schema["paths"][NOTIFICATIONS]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    values = {"string": user, "array": [user]}
    for alternative in body_schema["oneOf"]:
        (field,) = alternative["required"]
        request = {
            field: values[alternative["properties"][field]["type"]],
            **{name: "GENERIC_INFO" if name == "type" else "m" for name in body_schema["required"]},
        }
        answer = await rest_server.http.post(
            NOTIFICATIONS, json=request, headers=rest_server.producer
        )
        assert answer.status_code == 201, (request, answer.text)
    assert len(await rows(rest_server, user)) == 2


# Logs


SECRET = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2VjcmV0LXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    "query",
    [
        f"token={SECRET}",
        f"TOKEN={SECRET}",
        f"%74oken={SECRET}",
        f"%54%4F%4B%45%4E={SECRET}",
        f"%2574oken={SECRET}",
        f"token%3D{SECRET}",
        f"token%3d{SECRET}",
        f"x=1&to%6Ben={SECRET}&y=2",
        f"token=%{SECRET[0].encode().hex()}{SECRET[1:]}",
        f"next=%2Fws%3Ftoken%3D{SECRET}",
        f"authorization=Bearer%20{SECRET}",
    ],
)
def test_redact_hides_a_token_however_its_query_is_encoded(query: str) -> None:
    line = f'127.0.0.1:5000 - "GET /api/v1/notifications/ws?{query} HTTP/1.1" 101'
    redacted = redact(line)
    assert REDACTED in redacted
    assert SECRET not in redacted
    assert SECRET[1:] not in redacted
    assert redacted.startswith('127.0.0.1:5000 - "GET /api/v1/notifications/ws?')
    assert redacted.endswith(' HTTP/1.1" 101')


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        ("skip=20&limit=10", "skip=20&limit=10"),
        (f"%74oken={SECRET}&limit=10", "%74oken=[redacted]&limit=10"),
        (f"limit=10&token%3D{SECRET}", "limit=10&[redacted]"),
    ],
)
def test_redact_keeps_every_other_parameter_as_sent(query: str, logged: str) -> None:
    assert redact(f"GET /api/v1/notifications/?{query} HTTP/1.1") == (
        f"GET /api/v1/notifications/?{logged} HTTP/1.1"
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("query", [f"%74oken={SECRET}", f"TOKEN={SECRET}", f"token%3D{SECRET}"])
def test_access_lines_carry_no_token_in_either_format(log_format: str, query: str) -> None:
    config = log_config(log_format=log_format)["formatters"]["access"]
    formatter = (
        AccessFormatter(fmt=config["fmt"], use_colors=False)
        if log_format == "text"
        else JsonFormatter()
    )
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/api/v1/notifications/ws?{query}", "1.1", 101),
        None,
    )
    assert RedactTokens().filter(record)
    line = formatter.format(record)
    assert "/api/v1/notifications/ws?" in line
    assert REDACTED in line
    assert SECRET not in line
