"""Cursor pages of ``GET /api/v1/notifications/``: ``before=<id>``, the ``Link`` header to
the next page, the ``is_read`` and ``type`` filters, on both databases."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest

from .support.servers import ALLOWED_ORIGIN, Server

NOTIFICATIONS = "/api/v1/notifications/"
NEXT = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


async def page(
    server: Server, user: str, url: str = NOTIFICATIONS, **params: Any
) -> httpx.Response:
    answer = await server.http.get(url, params=params or None, headers=server.auth(user))
    assert answer.status_code == 200, answer.text
    return answer


def next_url(answer: httpx.Response) -> str | None:
    link = answer.headers.get("link")
    if link is None:
        return None
    found = NEXT.match(link)
    assert found, link
    return found["url"]


async def walk(server: Server, user: str, **params: Any) -> list[list[str]]:
    """Every page's ids, following the ``Link`` header from the first page to the end."""
    answer = await page(server, user, **params)
    pages = [[item["id"] for item in answer.json()]]
    while (url := next_url(answer)) is not None:
        answer = await page(server, user, url)
        pages.append([item["id"] for item in answer.json()])
    return pages


async def test_following_the_link_walks_every_item_once_newest_first(
    rest_server: Server, user: str
) -> None:
    sent = [(await rest_server.send(user, f"n{i}"))["id"] for i in range(7)]
    pages = await walk(rest_server, user, limit=3)
    assert pages == [sent[:3:-1], sent[3:0:-1], sent[:1]]  # no empty page at the end


async def test_a_page_that_holds_the_last_item_has_no_link(rest_server: Server, user: str) -> None:
    for i in range(3):
        await rest_server.send(user, f"n{i}")
    assert next_url(await page(rest_server, user, limit=3)) is None
    assert next_url(await page(rest_server, user, limit=2)) is not None
    assert (await page(rest_server, user + "-nobody")).json() == []


async def test_pages_stay_gapless_and_without_repeats_while_items_are_added(
    rest_server: Server, user: str
) -> None:
    """Items created between two pages would shift an offset; the cursor does not move."""
    older = [(await rest_server.send(user, f"old{i}"))["id"] for i in range(7)]
    first = await page(rest_server, user, limit=3)
    for i in range(4):
        await rest_server.send(user, f"new{i}")
    second = await page(rest_server, user, next_url(first) or "no link")
    third = await page(rest_server, user, next_url(second) or "no link")
    seen = [item["id"] for item in first.json() + second.json() + third.json()]
    assert seen == older[::-1]
    assert next_url(third) is None


async def _all(server: Server, user: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await page(server, user, limit=100)).json()
    return items


async def test_unread_pages_hold_only_unread_items_and_follow_their_filter(
    rest_server: Server, user: str
) -> None:
    sent = [(await rest_server.send(user, f"n{i}"))["id"] for i in range(8)]
    for item_id in sent[::2]:
        assert (await rest_server.mark_read(user, item_id)).status_code == 200
    pages = await walk(rest_server, user, limit=2, is_read="false")
    assert pages == [[sent[7], sent[5]], [sent[3], sent[1]]]
    read = await walk(rest_server, user, limit=3, is_read="true")
    assert read == [[sent[6], sent[4], sent[2]], [sent[0]]]


async def test_type_filters_and_keeps_the_filter_in_the_link(
    rest_server: Server, user: str
) -> None:
    failed = []
    for i in range(5):
        await rest_server.send(user, f"n{i}")
        failed.append((await rest_server.send(user, f"f{i}", type="CAMPAIGN_ERROR"))["id"])
    first = await page(rest_server, user, limit=2, type="CAMPAIGN_ERROR")
    assert "type=CAMPAIGN_ERROR" in (next_url(first) or "")
    pages = await walk(rest_server, user, limit=2, type="CAMPAIGN_ERROR")
    assert [item for chunk in pages for item in chunk] == failed[::-1]
    assert all(item["type"] == "CAMPAIGN_ERROR" for item in await _items(rest_server, user, failed))


async def _items(server: Server, user: str, ids: list[str]) -> list[dict[str, Any]]:
    return [item for item in await _all(server, user) if item["id"] in ids]


async def test_skip_pages_as_the_contract_has_it_and_its_link_turns_into_a_cursor(
    rest_server: Server, user: str
) -> None:
    sent = [(await rest_server.send(user, f"n{i}"))["id"] for i in range(5)]
    answer = await page(rest_server, user, skip=1, limit=2)
    assert [item["id"] for item in answer.json()] == [sent[3], sent[2]]
    url = next_url(answer) or ""
    assert "skip" not in url and f"before={sent[2]}" in url
    assert [item["id"] for item in (await page(rest_server, user, url)).json()] == [
        sent[1],
        sent[0],
    ]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"before": "not-a-uuid"}, "query.before: "),
        ({"is_read": "maybe"}, "query.is_read: "),
        ({"type": "NOT_A_TYPE"}, "query.type.0: "),
    ],
)
async def test_bad_cursors_and_filters_are_422(
    rest_server: Server, user: str, params: dict[str, Any], detail: str
) -> None:
    answer = await rest_server.http.get(
        NOTIFICATIONS, params=params, headers=rest_server.auth(user)
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "validation_failed"
    assert answer.json()["detail"].startswith(detail)


@pytest.mark.parametrize("cursor", ["UNKNOWN", "OTHER"])
async def test_a_cursor_that_is_not_one_of_your_items_is_404(
    rest_server: Server, user: str, cursor: str
) -> None:
    other = await rest_server.send(f"{user}-other", "someone else's")
    before = str(uuid.uuid4()) if cursor == "UNKNOWN" else other["id"]
    answer = await rest_server.http.get(
        NOTIFICATIONS, params={"before": before}, headers=rest_server.auth(user)
    )
    assert answer.status_code == 404, answer.text
    assert answer.json() == {
        "error": "not_found",
        "detail": "before: no notification of yours has this id",
    }


async def test_skip_after_a_cursor_skips_older_items(rest_server: Server, user: str) -> None:
    sent = [(await rest_server.send(user, f"n{i}"))["id"] for i in range(5)]
    answer = await page(rest_server, user, before=sent[4], skip=1, limit=2)
    assert [item["id"] for item in answer.json()] == [sent[2], sent[1]]


async def test_a_browser_on_another_origin_can_read_the_link(
    rest_server: Server, user: str
) -> None:
    for i in range(3):
        await rest_server.send(user, f"n{i}")
    answer = await rest_server.http.get(
        NOTIFICATIONS,
        params={"limit": 1},
        headers={**rest_server.auth(user), "Origin": ALLOWED_ORIGIN},
    )
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "link" in [name.strip() for name in exposed.split(",")]


async def test_concurrent_creates_never_make_a_cursor_walk_repeat_or_skip(
    rest_server: Server, user: str
) -> None:
    older = [(await rest_server.send(user, f"old{i}"))["id"] for i in range(10)]
    creating = asyncio.gather(*(rest_server.send(user, f"new{i}") for i in range(10)))
    pages = await walk(rest_server, user, limit=2)
    await creating
    walked = [item for chunk in pages for item in chunk]
    assert len(walked) == len(set(walked))
    assert walked[-10:] == older[::-1]  # every old item, in order, after whatever new came
