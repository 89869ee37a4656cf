"""The REST calls: status codes, bodies, validation, ownership, idempotency."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from campana.api import rest

from .support.servers import ALLOWED_ORIGIN, Server, ServerPool
from .support.tokens import BAD_TOKENS

NOTIFICATIONS = "/api/v1/notifications/"


def body(user_id: str, **fields: Any) -> dict[str, Any]:
    return {"user_id": user_id, "type": "GENERIC_INFO", "message": "hello", **fields}


# Listing and counting


async def test_list_is_newest_first_and_pages_stably(rest_server: Server, user: str) -> None:
    sent = [await rest_server.send(user, f"n{i}") for i in range(5)]

    first = await rest_server.http.get(
        NOTIFICATIONS, params={"limit": 3}, headers=rest_server.auth(user)
    )
    rest = await rest_server.http.get(
        NOTIFICATIONS, params={"skip": 3, "limit": 3}, headers=rest_server.auth(user)
    )

    assert first.status_code == rest.status_code == 200
    assert [i["id"] for i in first.json() + rest.json()] == [i["id"] for i in reversed(sent)]


async def test_items_created_together_are_ordered_by_id_descending(
    rest_server: Server, user: str
) -> None:
    """One bulk call gives items with one created_at: the id breaks the tie."""
    others = [f"{user}-{i}" for i in range(3)]
    answer = await rest_server.http.post(
        NOTIFICATIONS,
        json={"user_ids": [user, *others], "type": "GENERIC_INFO", "message": "m"},
        headers=rest_server.producer,
    )
    assert answer.status_code == 201
    await rest_server.send(user, "a")
    await rest_server.send(user, "b")
    items = (await rest_server.http.get(NOTIFICATIONS, headers=rest_server.auth(user))).json()
    keys = [(item["created_at"], item["id"]) for item in items]
    assert keys == sorted(keys, reverse=True)


async def test_item_has_the_guides_fields_its_states_and_a_zoned_timestamp(
    rest_server: Server, user: str
) -> None:
    item = await rest_server.send(user, "  padded  ", link_url="https://example.com/x")
    guide = {"id", "message", "type", "link_url", "is_read", "created_at"}
    assert set(item) == guide | {"is_seen", "is_archived"}
    assert item["message"] == "padded"
    assert (item["is_read"], item["is_seen"], item["is_archived"]) == (False, False, False)
    assert item["created_at"].endswith(("Z", "+00:00"))
    uuid.UUID(item["id"])


@pytest.mark.parametrize(
    "params",
    [
        {"skip": -1},
        {"skip": rest.MAX_SKIP + 1},
        {"skip": 2**63},
        {"skip": 10**30},
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
    ],
)
async def test_bad_paging_is_422(rest_server: Server, user: str, params: dict[str, Any]) -> None:
    answer = await rest_server.http.get(
        NOTIFICATIONS, params=params, headers=rest_server.auth(user)
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "validation_failed"
    assert answer.json()["detail"].startswith(f"query.{next(iter(params))}: ")


async def test_unread_count_counts_only_the_callers_unread(rest_server: Server, user: str) -> None:
    first = await rest_server.send(user)
    await rest_server.send(user)
    await rest_server.send(user + "-other")
    await rest_server.mark_read(user, first["id"])
    assert await rest_server.unread_count(user) == 1


# Authentication


def bearer(token: str | None) -> str | None:
    """The Authorization header a client sends with ``token``: none without one."""
    return None if token is None else f"Bearer {token}".strip()


@pytest.mark.parametrize(
    "authorization",
    [
        *(pytest.param(bearer(bad.token), id=bad.name) for bad in BAD_TOKENS),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
    ],
)
async def test_bad_credentials_are_401_with_www_authenticate(
    rest_server: Server, user: str, rows: Any, authorization: str | None
) -> None:
    """On a user's call and on the producer call, which reads its token on a road of its own."""
    headers = {"Authorization": authorization} if authorization else {}
    answers = [
        await rest_server.http.get("/api/v1/notifications/unread-count", headers=headers),
        await rest_server.http.post(NOTIFICATIONS, json=body(user), headers=headers),
    ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"] == "unauthorized"
    assert await rows(rest_server, user) == []


async def test_a_token_is_read_as_http_bearer_reads_it(rest_server: Server, user: str) -> None:
    """Scheme in any case, spaces before the token ignored, on every call."""
    token = rest_server.producer["Authorization"].removeprefix("Bearer ")
    for authorization in (f"bearer {token}", f"Bearer  {token}"):
        headers = {"Authorization": authorization}
        answer = await rest_server.http.post(NOTIFICATIONS, json=body(user), headers=headers)
        assert answer.status_code == 201, answer.text
        count = await rest_server.http.get("/api/v1/notifications/unread-count", headers=headers)
        assert count.status_code == 200, count.text
    assert await rest_server.unread_count(user) == 2


async def test_plain_user_token_cannot_create_403(
    rest_server: Server, user: str, rows: Any
) -> None:
    answer = await rest_server.http.post(
        NOTIFICATIONS, json=body(user), headers=rest_server.auth(user)
    )
    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"
    assert await rows(rest_server, user) == []


async def test_producer_call_answers_alike_from_a_server_and_from_a_browser(
    rest_server: Server, user: str, rows: Any
) -> None:
    """The producer call has a short road (no ``Origin``) and the full one (a browser's,
    for CORS): the same statuses, bodies and headers, and CORS only on the second."""
    browser = {"Origin": ALLOWED_ORIGIN}
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[dict[str, str], dict[str, Any] | str]] = [
        (rest_server.producer, body(user)),
        ({}, body(user)),
        ({"Authorization": "Basic abc"}, body(user)),
        (rest_server.auth(user), body(user)),
        (rest_server.producer, body(user, link_url="javascript:alert(1)")),
        (rest_server.producer, "{not json"),
        (rest_server.producer, body(user, user_ids=[user])),
    ]
    for headers, payload in cases:
        answers = []
        for origin in ({}, browser):
            sent = {**headers, **origin, "Content-Type": "application/json"}
            content = payload if isinstance(payload, str) else json.dumps(payload)
            answers.append(
                await rest_server.http.post(NOTIFICATIONS, content=content, headers=sent)
            )
        plain, cors = answers
        assert plain.status_code == cors.status_code, (headers, payload)
        if plain.status_code == 201:
            assert plain.json().keys() == cors.json().keys()
        else:
            assert plain.json() == cors.json()
        assert plain.headers.get("www-authenticate") == cors.headers.get("www-authenticate")
        assert plain.headers["content-type"] == cors.headers["content-type"] == "application/json"
        assert "access-control-allow-origin" not in plain.headers
        assert cors.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    statuses = [
        (
            await rest_server.http.post(NOTIFICATIONS, content="{}", headers=headers | json_type)
        ).status_code
        for headers, _ in cases[:4]
    ]
    assert statuses == [422, 401, 401, 403]
    assert len(await rows(rest_server, user)) == 2


async def test_producer_calls_without_an_origin_take_the_short_road() -> None:
    """``ProducerCalls`` answers a server's call itself and hands a browser's (with an
    ``Origin``) and every other request to the framework."""
    reached: list[str] = []

    async def framework(scope: Scope, _receive: Receive, _send: Send) -> None:
        reached.append(f"{scope['method']} {scope['path']}")

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    road = rest.ProducerCalls(framework)
    app = SimpleNamespace(state=SimpleNamespace(services=None))
    for method, path, headers in [
        ("POST", NOTIFICATIONS, []),
        ("POST", NOTIFICATIONS, [(b"origin", ALLOWED_ORIGIN.encode())]),
        ("GET", NOTIFICATIONS, []),
        ("POST", "/api/v1/notifications/read-all", []),
    ]:
        scope = {"type": "http", "method": method, "path": path, "headers": headers, "app": app}
        await road(scope, receive, send)

    assert reached == [
        f"POST {NOTIFICATIONS}",
        f"GET {NOTIFICATIONS}",
        "POST /api/v1/notifications/read-all",
    ]
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 401  # answered on the short road: no token


# Mark read


async def test_mark_read_answers_the_updated_item_and_again_unchanged(
    rest_server: Server, user: str, rows: Any
) -> None:
    item = await rest_server.send(user)
    answer = await rest_server.mark_read(user, item["id"])
    assert answer.status_code == 200
    assert answer.json() == {**item, "is_read": True, "is_seen": True}
    again = await rest_server.mark_read(user, item["id"])
    assert again.status_code == 200
    assert again.json() == {**item, "is_read": True, "is_seen": True}
    assert [row["is_read"] for row in await rows(rest_server, user)] == [True]
    assert await rest_server.unread_count(user) == 0


async def test_mark_read_of_another_users_notification_is_404_and_changes_nothing(
    rest_server: Server, user: str, rows: Any
) -> None:
    owner = user + "-owner"
    item = await rest_server.send(owner)
    answer = await rest_server.mark_read(user, item["id"])
    assert answer.status_code == 404
    assert answer.json() == {"error": "not_found", "detail": "notification not found"}
    assert [row["is_read"] for row in await rows(rest_server, owner)] == [False]
    assert await rest_server.unread_count(owner) == 1


async def test_mark_read_of_unknown_id_is_404(rest_server: Server, user: str) -> None:
    answer = await rest_server.mark_read(user, str(uuid.uuid4()))
    assert answer.status_code == 404


async def test_mark_read_of_malformed_id_is_422(rest_server: Server, user: str) -> None:
    answer = await rest_server.mark_read(user, "not-a-uuid")
    assert answer.status_code == 422
    assert "notification_id" in answer.json()["detail"]


async def test_read_all_answers_zero_and_reads_every_item(
    rest_server: Server, user: str, rows: Any
) -> None:
    for i in range(3):
        await rest_server.send(user, f"n{i}")
    other = await rest_server.send(user + "-other")
    answer = await rest_server.http.post(
        "/api/v1/notifications/read-all", headers=rest_server.auth(user)
    )
    assert answer.status_code == 200
    assert answer.json() == {"count": 0, "changed": 3, "done": True}
    assert [row["is_read"] for row in await rows(rest_server, user)] == [True, True, True]
    assert await rest_server.unread_count(user + "-other") == 1
    assert other["is_read"] is False


# Creating


async def test_create_for_many_users_gives_each_their_own_item(
    rest_server: Server, user: str, rows: Any
) -> None:
    users = [f"{user}-{i}" for i in range(3)]
    answer = await rest_server.http.post(
        NOTIFICATIONS,
        json={"user_ids": [*users, users[0]], "type": "CAMPAIGN_COMPLETED", "message": "done"},
        headers=rest_server.producer,
    )
    assert answer.status_code == 201
    items = answer.json()
    assert len(items) == 3
    assert len({item["id"] for item in items}) == 3
    for recipient, item in zip(users, items, strict=True):
        assert [str(row["id"]).replace("-", "") for row in await rows(rest_server, recipient)] == [
            item["id"].replace("-", "")
        ]


BAD_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("unknown-type", {"type": "CAMPAIGN_EXPLODED"}),
    ("empty-message", {"message": ""}),
    ("blank-message", {"message": "   \n "}),
    ("long-message", {"message": "x" * 2001}),
    ("javascript-link", {"link_url": "javascript:alert(1)"}),
    ("data-link", {"link_url": "data:text/html,<script>alert(1)</script>"}),
    ("ftp-link", {"link_url": "ftp://example.com/file"}),
    ("protocol-relative-link", {"link_url": "//evil.example/path"}),
    ("backslash-link", {"link_url": "/\\evil.example"}),
    ("schemeless-link", {"link_url": "example.com/path"}),
    ("long-link", {"link_url": "/" + "a" * 2048}),
    ("unknown-field", {"colour": "red"}),
    ("both-recipients", {"user_ids": ["someone"]}),
    ("no-recipient", {"user_id": None}),
    ("empty-user-id", {"user_id": ""}),
    ("empty-user-ids", {"user_id": None, "user_ids": []}),
    ("nul-in-message", {"message": "bad \x00 byte"}),
    ("nul-in-user-id", {"user_id": "a\x00b"}),
    ("nul-in-idempotency-key", {"idempotency_key": "k\x00"}),
]


@pytest.mark.parametrize("changes", [c for _, c in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
async def test_invalid_create_is_422_and_writes_nothing(
    rest_server: Server, user: str, rows: Any, changes: dict[str, Any]
) -> None:
    request = {k: v for k, v in {**body(user), **changes}.items() if v is not None}
    answer = await rest_server.http.post(NOTIFICATIONS, json=request, headers=rest_server.producer)
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["error"] == "validation_failed"
    assert error["detail"]
    assert await rows(rest_server, user) == []


@pytest.mark.parametrize(
    "link", ["https://example.com/campaigns/1?tab=stats#top", "http://localhost:3000/x", "/c/9"]
)
async def test_safe_links_are_kept(rest_server: Server, user: str, link: str) -> None:
    assert (await rest_server.send(user, link_url=link))["link_url"] == link


async def test_link_of_2048_characters_is_accepted(rest_server: Server, user: str) -> None:
    link = "/" + "a" * 2047
    assert (await rest_server.send(user, link_url=link))["link_url"] == link


async def test_failed_multi_user_create_creates_none(
    rest_server: Server, user: str, rows: Any
) -> None:
    good = [f"{user}-{i}" for i in range(3)]
    answer = await rest_server.http.post(
        NOTIFICATIONS,
        json={"user_ids": [good[0], "x" * 256, *good[1:]], "type": "GENERIC_INFO", "message": "m"},
        headers=rest_server.producer,
    )
    assert answer.status_code == 422
    for recipient in good:
        assert await rows(rest_server, recipient) == []
        assert await rest_server.unread_count(recipient) == 0


async def test_more_recipients_than_allowed_is_422_and_writes_nothing(
    server_pool: ServerPool, user: str, rows: Any
) -> None:
    server = await server_pool.get("sqlite", "inprocess", max_recipients=3)
    users = [f"{user}-{i}" for i in range(4)]
    answer = await server.http.post(
        NOTIFICATIONS,
        json={"user_ids": users, "type": "GENERIC_INFO", "message": "m"},
        headers=server.producer,
    )
    assert answer.status_code == 422
    assert "at most 3" in answer.json()["detail"]
    for recipient in users:
        assert await rows(server, recipient) == []


# Idempotency


async def test_retry_with_the_same_idempotency_key_returns_the_original(
    rest_server: Server, user: str, rows: Any
) -> None:
    headers = {**rest_server.producer, "Idempotency-Key": f"key-{user}"}
    first = await rest_server.http.post(NOTIFICATIONS, json=body(user), headers=headers)
    retry = await rest_server.http.post(NOTIFICATIONS, json=body(user), headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(await rows(rest_server, user)) == 1


async def test_idempotency_key_in_the_body_works_too(
    rest_server: Server, user: str, rows: Any
) -> None:
    request = {
        "user_ids": [user, user + "-b"],
        "type": "GENERIC_INFO",
        "message": "m",
        "idempotency_key": f"body-{user}",
    }
    first = await rest_server.http.post(NOTIFICATIONS, json=request, headers=rest_server.producer)
    retry = await rest_server.http.post(NOTIFICATIONS, json=request, headers=rest_server.producer)
    assert retry.json() == first.json()
    assert len(await rows(rest_server, user)) == 1


async def test_same_key_with_a_different_body_is_409(
    rest_server: Server, user: str, rows: Any
) -> None:
    headers = {**rest_server.producer, "Idempotency-Key": f"key-{user}"}
    await rest_server.http.post(NOTIFICATIONS, json=body(user), headers=headers)
    answer = await rest_server.http.post(
        NOTIFICATIONS, json=body(user, message="other"), headers=headers
    )
    assert answer.status_code == 409
    assert answer.json()["error"] == "idempotency_conflict"
    assert len(await rows(rest_server, user)) == 1


async def test_concurrent_retries_with_one_key_create_once(
    rest_server: Server, user: str, rows: Any
) -> None:
    headers = {**rest_server.producer, "Idempotency-Key": f"race-{user}"}
    answers = await asyncio.gather(
        *(rest_server.http.post(NOTIFICATIONS, json=body(user), headers=headers) for _ in range(5))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(await rows(rest_server, user)) == 1
    assert await rest_server.unread_count(user) == 1


async def test_header_and_body_keys_that_differ_are_422(rest_server: Server, user: str) -> None:
    headers = {**rest_server.producer, "Idempotency-Key": "one"}
    answer = await rest_server.http.post(
        NOTIFICATIONS, json=body(user, idempotency_key="two"), headers=headers
    )
    assert answer.status_code == 422


# Documentation


async def test_openapi_describes_every_call(rest_server: Server) -> None:
    schema = (await rest_server.http.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths["/api/v1/notifications/"]) == {"get", "post"}
    assert "get" in paths["/api/v1/notifications/unread-count"]
    assert "patch" in paths["/api/v1/notifications/{notification_id}/read"]
    assert "post" in paths["/api/v1/notifications/read-all"]
    assert (await rest_server.http.get("/docs")).status_code == 200
