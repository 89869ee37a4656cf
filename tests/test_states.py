"""The feed's states (seen, unread again, archived, deleted), its counts per type and its
bulk changes, as a user sees them: each call's answer, the rows it leaves in the database,
``GET /counts`` and ``GET /unread-count`` after it, and the frames every tab receives.

What each call should do is kept in a :class:`Feed`, the test's own copy of one user's
items built from the wire spec's rules; every answer, row, count and frame is checked
against it. A tab opened with ``&counts=1`` gets ``counts.updated`` after every change;
one opened without gets exactly the guide's frames and the new item events, never that.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from campana import store

from .support.servers import Server, ServerPool
from .support.tabs import Tab, instant
from .support.waits import until

API = "/api/v1/notifications"
TYPES = (
    "GENERIC_INFO",
    "TEMPLATE_APPROVED",
    "TEMPLATE_REJECTED",
    "CAMPAIGN_SCHEDULED",
    "CAMPAIGN_SENDING",
    "CAMPAIGN_COMPLETED",
    "CAMPAIGN_ERROR",
)
ACTIONS = ("read", "unread", "seen", "archive", "unarchive", "delete")
BULK_CALLS = ("read-all", "seen-all", "archive-all", "unarchive-all", "delete-all")
# What each call writes on the items it changes (None: they go).
ITEM_CHANGES: dict[str, dict[str, bool] | None] = {
    "read": {"is_read": True, "is_seen": True},  # a read item is seen
    "unread": {"is_read": False},  # and stays seen
    "seen": {"is_seen": True},
    "archive": {"is_archived": True},
    "unarchive": {"is_archived": False},
    "delete": None,
}
BULK_CHANGES: dict[str, dict[str, bool] | None] = {
    "read-all": ITEM_CHANGES["read"],
    "seen-all": ITEM_CHANGES["seen"],
    "archive-all": ITEM_CHANGES["archive"],
    "unarchive-all": ITEM_CHANGES["unarchive"],
    "delete-all": None,
}
NOT_FOUND = {"error": "not_found", "detail": "notification not found"}
UP_TO_NOT_FOUND = {"error": "not_found", "detail": "up_to: no notification of yours has this id"}


# The test's copy of a user's items


def newest_first(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: (instant(item["created_at"]), item["id"]), reverse=True)


def counts_of(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The counts object the spec defines: unread and unseen items of the inbox, per type."""
    inbox = [item for item in items if not item["is_archived"]]

    def tally(kind: str | None) -> dict[str, int]:
        of_kind = [item for item in inbox if kind is None or item["type"] == kind]
        return {
            "unread": sum(not item["is_read"] for item in of_kind),
            "unseen": sum(not item["is_seen"] for item in of_kind),
        }

    return {**tally(None), "by_type": {kind: tally(kind) for kind in TYPES}}


class Feed:
    """One user's items, as the spec says the calls made so far left them."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, item: dict[str, Any]) -> dict[str, Any]:
        self.items[item["id"]] = dict(item)
        return item

    def apply(self, item_id: str, action: str) -> dict[str, Any]:
        """One item's call; the item after it (as it was, when deleted)."""
        change = ITEM_CHANGES[action]
        if change is None:
            return self.items.pop(item_id)
        self.items[item_id].update(change)
        return dict(self.items[item_id])

    def bulk(self, call: str, body: dict[str, Any] | None) -> int:
        """One bulk call; how many items it changed."""
        body = body or {}
        archived = call == "unarchive-all" or bool(body.get("archived"))
        types, is_read = body.get("types"), body.get("is_read")
        bound = None
        if "up_to" in body:
            newest = self.items[body["up_to"]]
            bound = (instant(newest["created_at"]), newest["id"])
        change = BULK_CHANGES[call]
        hit = [
            item
            for item in self.items.values()
            if item["is_archived"] == archived
            and (types is None or item["type"] in types)
            and (is_read is None or item["is_read"] == is_read)
            and (bound is None or (instant(item["created_at"]), item["id"]) <= bound)
            and (change is None or any(item[name] != value for name, value in change.items()))
        ]
        for item in hit:
            if change is None:
                del self.items[item["id"]]
            else:
                item.update(change)
        return len(hit)

    def view(
        self,
        *,
        archived: bool = False,
        types: Sequence[str] | None = None,
        is_read: bool | None = None,
        is_seen: bool | None = None,
    ) -> list[dict[str, Any]]:
        return newest_first(
            [
                item
                for item in self.items.values()
                if item["is_archived"] == archived
                and (types is None or item["type"] in types)
                and (is_read is None or item["is_read"] == is_read)
                and (is_seen is None or item["is_seen"] == is_seen)
            ]
        )

    @property
    def unread(self) -> int:
        count: int = self.counts()["unread"]
        return count

    def counts(self) -> dict[str, Any]:
        return counts_of(list(self.items.values()))

    def rows(self) -> dict[str, tuple[str, bool, bool, bool]]:
        return {
            item_id: (item["type"], item["is_read"], item["is_seen"], item["is_archived"])
            for item_id, item in self.items.items()
        }


# Calls


async def item_call(server: Server, user: str, item_id: str, action: str) -> httpx.Response:
    if action == "delete":
        return await server.http.delete(f"{API}/{item_id}", headers=server.auth(user))
    return await server.http.patch(f"{API}/{item_id}/{action}", headers=server.auth(user))


async def bulk_call(
    server: Server, user: str, call: str, body: Any = None, *, content: str | None = None
) -> httpx.Response:
    """A bulk call: without a body, with ``body`` as JSON, or with raw ``content``."""
    headers = server.auth(user)
    if content is not None:
        headers = {**headers, "Content-Type": "application/json"}
        return await server.http.post(f"{API}/{call}", content=content, headers=headers)
    if body is None:
        return await server.http.post(f"{API}/{call}", headers=headers)
    return await server.http.post(f"{API}/{call}", json=body, headers=headers)


async def get_counts(server: Server, user: str) -> dict[str, Any]:
    answer = await server.http.get(f"{API}/counts", headers=server.auth(user))
    assert answer.status_code == 200, answer.text
    counts: dict[str, Any] = answer.json()
    return counts


async def listed(server: Server, user: str, url: str = f"{API}/", **params: Any) -> httpx.Response:
    answer = await server.http.get(url, params=params or None, headers=server.auth(user))
    assert answer.status_code == 200, answer.text
    return answer


async def make_items(
    server: Server, user: str, feed: Feed, specs: Sequence[tuple[str, str, Sequence[str]]]
) -> dict[str, str]:
    """Items created oldest first, each (name, type, calls that give it its state)."""
    named = {}
    for name, kind, calls in specs:
        item = feed.add(await server.send(user, name, type=kind))
        named[name] = item["id"]
        for action in calls:
            assert (await item_call(server, user, item["id"], action)).status_code == 200
            feed.apply(item["id"], action)
    return named


# The database, read by the test


def engine_of(engines: dict[str, AsyncEngine], server: Server) -> AsyncEngine:
    url = server.settings.resolved_database_url
    if url not in engines:
        engines[url] = create_async_engine(url)
    return engines[url]


DbRows = Callable[[Server, str], Awaitable[dict[str, tuple[str, bool, bool, bool]]]]


@pytest.fixture
def db_rows(engines: dict[str, AsyncEngine]) -> DbRows:
    """``await db_rows(server, user)``: each of the user's rows, by id: (type, is_read,
    is_seen, is_archived), straight from the database."""

    async def read(server: Server, user_id: str) -> dict[str, tuple[str, bool, bool, bool]]:
        async with engine_of(engines, server).connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT id, type, is_read, is_seen, is_archived FROM notifications"
                    " WHERE user_id = :user_id"
                ),
                {"user_id": user_id},
            )
            return {
                str(uuid.UUID(str(row.id))): (
                    row.type,
                    bool(row.is_read),
                    bool(row.is_seen),
                    bool(row.is_archived),
                )
                for row in result
            }

    return read


async def insert_items(
    engines: dict[str, AsyncEngine],
    server: Server,
    user: str,
    specs: Sequence[tuple[str, bool, bool]],
    *,
    start: datetime,
    step: timedelta = timedelta(milliseconds=1),
    tie: int = 1,
) -> list[dict[str, Any]]:
    """Rows written as a create writes them (counts and version moved, nothing published),
    each (type, is_read, is_archived), oldest first from ``start``, ``tie`` of them at
    each instant. Answers them as the feed holds them."""
    rows = [
        store.NewNotification(
            id=uuid.uuid4(),
            user_id=user,
            type=kind,
            message=f"stored {i}",
            link_url=None,
            is_read=is_read,
            created_at=start + (i // tie) * step,
            is_archived=is_archived,
        )
        for i, (kind, is_read, is_archived) in enumerate(specs)
    ]
    async with store.create_sessionmaker(engine_of(engines, server)).begin() as session:
        await store.add_notifications(session, rows)
    return [
        {
            "id": str(row.id),
            "message": row.message,
            "type": row.type,
            "link_url": None,
            "is_read": row.is_read,
            "is_seen": row.is_read,
            "is_archived": row.is_archived,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]


async def assert_holds(server: Server, user: str, feed: Feed, db_rows: DbRows) -> None:
    """The rows, ``GET /counts`` and ``GET /unread-count`` say what the feed says."""
    assert await db_rows(server, user) == feed.rows()
    assert await get_counts(server, user) == feed.counts()
    assert await server.unread_count(user) == feed.unread


# Frames


def frame(event: str, payload: Any) -> dict[str, Any]:
    return {"event": event, "payload": payload}


def count_frame(count: int) -> dict[str, Any]:
    return frame("unread_count.updated", {"count": count})


def counts_frame(counts: dict[str, Any]) -> dict[str, Any]:
    return frame("counts.updated", counts)


def item_frames(action: str, item: dict[str, Any], unread: int | None) -> list[dict[str, Any]]:
    """What one item's call sends to every tab (``unread``: the new count, if it moved).

    As built: a read sends the guide's pair (``notification.read`` then the count) before
    ``notification.updated``; the spec has the item events first, the count after.
    """
    count = [] if unread is None else [count_frame(unread)]
    if action == "read":
        read = frame("notification.read", {"id": item["id"], "is_read": True})
        return [read, *count, frame("notification.updated", item)]
    if action == "delete":
        return [frame("notification.deleted", {"id": item["id"]}), *count]
    return [frame("notification.updated", item), *count]


def wire_time(text: str) -> str:
    """An instant as the wire writes it (``Z``, as items' ``created_at``)."""
    return datetime.fromisoformat(text).isoformat().replace("+00:00", "Z")


def changed_payload(call: str, body: dict[str, Any] | None, feed: Feed) -> dict[str, Any]:
    """``notifications.changed`` for a bulk call (made with ``body``, before it ran)."""
    body = body or {}
    up_to = None
    if "up_to" in body:
        newest = feed.items[body["up_to"]]
        up_to = {"id": newest["id"], "created_at": wire_time(newest["created_at"])}
    else:  # where it stopped: the view's newest item when it began
        archived = call == "unarchive-all" or bool(body.get("archived"))
        view = [i for i in feed.items.values() if i["is_archived"] == archived]
        if view:
            newest = max(view, key=lambda i: (datetime.fromisoformat(i["created_at"]), i["id"]))
            up_to = {"id": newest["id"], "created_at": wire_time(newest["created_at"])}
    return {
        "change": BULK_CHANGES[call] or {"deleted": True},
        "filter": {
            "archived": call == "unarchive-all" or bool(body.get("archived")),
            "types": body.get("types"),
            "is_read": body.get("is_read"),
            "up_to": up_to,
        },
    }


@dataclass
class Pair:
    """Two tabs of one user: one opened as the guide has it, one with ``&counts=1``."""

    plain: Tab
    counting: Tab
    snapshot: list[dict[str, Any]]

    async def expect(
        self, frames: list[dict[str, Any]], counts: dict[str, Any] | None = None
    ) -> None:
        """The plain tab's next frames are exactly ``frames``; the counting tab's, those
        and then ``counts.updated`` with ``counts``."""
        after = [] if counts is None else [counts_frame(counts)]
        bulk = any(f["event"] == "notifications.changed" for f in frames)
        for tab, wanted in ((self.plain, frames), (self.counting, [*frames, *after])):
            got = [await tab.next_event() for _ in wanted]
            assert got == wanted, f"{'counting' if tab is self.counting else 'plain'} tab"
            if bulk:
                # Then every tab reads its inbox again (see docs/protocol.md).
                snapshot, count = await tab.next_event(), await tab.next_event()
                assert snapshot["event"] == "snapshot", snapshot
                unread = [f for f in wanted if f["event"] == "unread_count.updated"]
                if unread:
                    assert count == unread[-1]
                if tab is self.counting:
                    again = await tab.next_event()
                    assert again == (after[0] if after else again), "counts after the snapshot"

    async def quiet(self, server: Server, user: str, feed: Feed) -> None:
        """Nothing more reached either tab: the next frames are a marker's, created now."""
        marker = feed.add(await server.send(user, "marker"))
        await self.expect(
            [frame("notification.created", marker), count_frame(feed.unread)], feed.counts()
        )


@contextlib.asynccontextmanager
async def open_pair(server: Server, user: str) -> AsyncIterator[Pair]:
    async with server.connect(user) as plain, server.connect(user, counts=True) as counting:
        snapshot, _ = await plain.start()
        await counting.start()
        assert (await counting.next_event())["event"] == "counts.updated"
        yield Pair(plain, counting, snapshot)


async def settle(
    tabs: Sequence[tuple[Tab, bool]],
    truth: dict[str, Any],
    newest: list[dict[str, Any]] | None = None,
    *,
    within: float = 10.0,
) -> None:
    """Wait until every tab (and whether it counts) shows ``truth``'s unread count, the
    counting ones ``truth`` itself, and each holds the ``newest`` items as they are."""

    def behind(tab: Tab, counts: bool) -> list[str]:
        wrong = []
        if tab.view.unread_count != truth["unread"]:
            wrong.append(f"badge {tab.view.unread_count}, not {truth['unread']}")
        if tab.view.counts != (truth if counts else None):
            wrong.append(f"counts {tab.view.counts}")
        wrong += [
            f"holds {tab.view.items.get(item['id'])} for {item}"
            for item in newest or ()
            if tab.view.items.get(item["id"]) != item
        ]
        return wrong

    try:
        await until(lambda: not any(behind(*tab) for tab in tabs), within=within)
    except AssertionError:
        shown = {i: behind(*tab) for i, tab in enumerate(tabs)}
        pytest.fail(f"after {within} s, with {truth}, the tabs show: {shown}")


# One user's items in every state, and what the per-item and bulk calls do to them

# Items a to d, then each call in turn: every state change an item can go through.
ITEM_SPECS: list[tuple[str, str, Sequence[str]]] = [
    ("a", "GENERIC_INFO", ()),
    ("b", "CAMPAIGN_ERROR", ()),
    ("c", "TEMPLATE_APPROVED", ()),
    ("d", "CAMPAIGN_ERROR", ()),
]
ITEM_STEPS = [
    ("a", "seen"),  # unseen -1, still unread
    ("b", "read"),  # read, and so seen
    ("b", "unread"),  # unread again, still seen
    ("b", "archive"),  # an archived unread item does not count
    ("b", "read"),  # read in the archive: no count moves
    ("b", "unread"),
    ("c", "archive"),  # unread and unseen leave the counts
    ("c", "unarchive"),  # and come back
    ("b", "unarchive"),  # unread again in the inbox: the count goes up
    ("c", "delete"),  # an unread one: the count goes down
    ("a", "read"),
    ("a", "archive"),
    ("a", "delete"),  # archived: no count moves
    ("d", "read"),
    ("d", "delete"),  # read: no count moves
]

BULK_SPECS: list[tuple[str, str, Sequence[str]]] = [
    ("a", "GENERIC_INFO", ()),
    ("b", "CAMPAIGN_ERROR", ()),
    ("c", "TEMPLATE_APPROVED", ("read",)),
    ("d", "GENERIC_INFO", ("seen",)),
    ("e", "TEMPLATE_REJECTED", ("archive",)),
    ("f", "CAMPAIGN_ERROR", ("read", "archive")),
    ("g", "CAMPAIGN_COMPLETED", ()),
    ("h", "GENERIC_INFO", ()),
    ("i", "CAMPAIGN_SENDING", ()),
    ("j", "CAMPAIGN_ERROR", ()),
]
# Each bulk call and body (``up_to`` names an item); each changes some items.
BULK_STEPS: list[tuple[str, dict[str, Any] | None]] = [
    ("read-all", {"types": ["CAMPAIGN_ERROR", "TEMPLATE_APPROVED"]}),  # b, j
    ("read-all", {"up_to": "g"}),  # a, d, g: not h, i (created after g)
    ("seen-all", {"types": ["GENERIC_INFO"]}),  # h
    ("seen-all", {}),  # i; not e (archived)
    ("archive-all", {"is_read": True}),  # a, b, c, d, g, j: not h, i (unread)
    ("unarchive-all", {"types": ["CAMPAIGN_ERROR"]}),  # b, f, j
    ("read-all", None),  # the guide's call: h, i; not e (archived)
    ("unarchive-all", None),  # a, c, d, e, g: e unread, the count goes up
    ("archive-all", {"types": ["GENERIC_INFO"]}),  # a, d, h
    ("delete-all", {"is_read": True}),  # the inbox's read ones: b, c, f, g, i, j
    ("delete-all", {"archived": True}),  # the archived view: a, d, h
    ("delete-all", None),  # the inbox: e
]


def resolved(body: dict[str, Any] | None, named: dict[str, str]) -> dict[str, Any] | None:
    if body is None or "up_to" not in body:
        return body
    return {**body, "up_to": named[body["up_to"]]}


async def run_item_steps(
    through: Server,
    user: str,
    feed: Feed,
    named: dict[str, str],
    *,
    pairs: Sequence[Pair] = (),
    check: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Each of ``ITEM_STEPS`` through one server: its answer, then ``check()`` (the
    database and the counts) or the frames every pair of tabs receives."""
    for name, action in ITEM_STEPS:
        unread = feed.unread
        answer = await item_call(through, user, named[name], action)
        item = feed.apply(named[name], action)
        if action == "delete":
            assert (answer.status_code, answer.content) == (204, b""), (name, action)
        else:
            assert answer.status_code == 200, (name, action, answer.text)
            assert answer.json() == item, (name, action)
        if check is not None:
            await check()
        frames = item_frames(action, item, None if feed.unread == unread else feed.unread)
        for pair in pairs:
            await pair.expect(frames, feed.counts())


async def run_bulk_steps(
    through: Server,
    user: str,
    feed: Feed,
    named: dict[str, str],
    *,
    pairs: Sequence[Pair] = (),
    check: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Each of ``BULK_STEPS``, as ``run_item_steps`` runs its steps."""
    for call, template in BULK_STEPS:
        body = resolved(template, named)
        unread = feed.unread
        payload = changed_payload(call, body, feed)
        answer = await bulk_call(through, user, call, body)
        changed = feed.bulk(call, body)
        assert changed, f"{call} {body}: the table's step changes nothing"
        assert answer.status_code == 200, (call, body, answer.text)
        assert answer.json() == {"count": feed.unread, "changed": changed, "done": True}
        if check is not None:
            await check()
        count = [] if feed.unread == unread else [count_frame(feed.unread)]
        for pair in pairs:
            await pair.expect([*count, frame("notifications.changed", payload)], feed.counts())


# 1. Per-item calls: answers, rows and counts


async def test_each_item_call_answers_the_item_after_it_and_moves_rows_and_counts(
    rest_server: Server, user: str, db_rows: DbRows
) -> None:
    feed = Feed()
    named = await make_items(rest_server, user, feed, ITEM_SPECS)
    await assert_holds(rest_server, user, feed, db_rows)

    await run_item_steps(
        rest_server,
        user,
        feed,
        named,
        check=lambda: assert_holds(rest_server, user, feed, db_rows),
    )

    # What is left: b, unread and seen, back in the inbox.
    assert await get_counts(rest_server, user) == {
        "unread": 1,
        "unseen": 0,
        "by_type": {kind: {"unread": int(kind == "CAMPAIGN_ERROR"), "unseen": 0} for kind in TYPES},
    }
    assert await db_rows(rest_server, user) == {named["b"]: ("CAMPAIGN_ERROR", False, True, False)}


async def test_a_call_that_changes_nothing_answers_the_item_as_it_is_and_sends_nothing(
    rest_server: Server, user: str, db_rows: DbRows
) -> None:
    feed = Feed()
    cases = [
        ("read", ("read",)),
        ("unread", ()),
        ("unread", ("read", "unread")),
        ("seen", ("seen",)),
        ("seen", ("read",)),  # read is seen
        ("archive", ("archive",)),
        ("unarchive", ()),
    ]
    specs = [(f"{action}-{i}", TYPES[i], calls) for i, (action, calls) in enumerate(cases)]
    named = await make_items(rest_server, user, feed, specs)
    async with open_pair(rest_server, user) as pair:
        for name, _, _ in specs:
            action = name.split("-")[0]
            answer = await item_call(rest_server, user, named[name], action)
            assert answer.status_code == 200, (name, answer.text)
            assert answer.json() == feed.items[named[name]], name
        await assert_holds(rest_server, user, feed, db_rows)
        await pair.quiet(rest_server, user, feed)


async def test_item_calls_on_an_unknown_or_someone_elses_item_are_404_and_change_nothing(
    rest_server: Server, user: str, db_rows: DbRows
) -> None:
    owner, caller, newcomer = f"{user}-owner", f"{user}-caller", f"{user}-new"
    feed, theirs = Feed(), Feed()
    owned = feed.add(await rest_server.send(owner, "the owner's"))
    theirs.add(await rest_server.send(caller, "the caller's own"))
    gone = feed.add(await rest_server.send(owner, "deleted"))
    assert (await item_call(rest_server, owner, gone["id"], "delete")).status_code == 204
    feed.apply(gone["id"], "delete")
    async with open_pair(rest_server, owner) as pair:
        for action in ACTIONS:
            for who, item_id in [
                (caller, owned["id"]),  # a user with items of their own
                (newcomer, owned["id"]),  # a user with none at all
                (owner, str(uuid.uuid4())),
                (owner, gone["id"]),
            ]:
                answer = await item_call(rest_server, who, item_id, action)
                assert answer.status_code == 404, (action, who, answer.text)
                assert answer.json() == NOT_FOUND
        await assert_holds(rest_server, owner, feed, db_rows)
        await assert_holds(rest_server, caller, theirs, db_rows)
        await pair.quiet(rest_server, owner, feed)


async def test_item_calls_with_a_malformed_id_are_422(rest_server: Server, user: str) -> None:
    """`DELETE /not-a-uuid` is no path at all (404): a bulk path such as `/read-all` must
    answer its 405, not "malformed id"."""
    await rest_server.send(user)
    for action in ACTIONS:
        answer = await item_call(rest_server, user, "not-a-uuid", action)
        if action == "delete":
            assert answer.status_code == 404, answer.text
            continue
        assert answer.status_code == 422, (action, answer.text)
        assert answer.json()["error"] == "validation_failed"
        assert "notification_id" in answer.json()["detail"]
    assert await rest_server.unread_count(user) == 1


# 2. Views: the list's filters and cursor pages


def next_url(answer: httpx.Response) -> str | None:
    link: str | None = answer.headers.get("link")
    if link is None:
        return None
    assert link.startswith("<") and link.endswith('>; rel="next"'), link
    return link[1 : -len('>; rel="next"')]


async def walk(server: Server, user: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page, following the ``Link`` header from the first to the last."""
    answer = await listed(server, user, **params)
    pages = [answer.json()]
    while (url := next_url(answer)) is not None:
        answer = await listed(server, user, url)
        pages.append(answer.json())
    return pages


VIEWS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"archived": "false"}, {}),
    ({"archived": "true"}, {"archived": True}),
    ({"is_read": "false"}, {"is_read": False}),
    ({"is_read": "true"}, {"is_read": True}),
    ({"is_seen": "false"}, {"is_seen": False}),
    ({"type": ["CAMPAIGN_ERROR", "GENERIC_INFO"]}, {"types": ["CAMPAIGN_ERROR", "GENERIC_INFO"]}),
    (
        {"type": "TEMPLATE_APPROVED", "archived": "true"},
        {"types": ["TEMPLATE_APPROVED"], "archived": True},
    ),
    (
        {"type": ["CAMPAIGN_ERROR", "TEMPLATE_APPROVED"], "is_read": "false"},
        {"types": ["CAMPAIGN_ERROR", "TEMPLATE_APPROVED"], "is_read": False},
    ),
    ({"type": "GENERIC_INFO", "is_seen": "false"}, {"types": ["GENERIC_INFO"], "is_seen": False}),
    (
        {"archived": "true", "is_read": "false", "is_seen": "false"},
        {"archived": True, "is_read": False, "is_seen": False},
    ),
]


async def test_every_view_pages_gaplessly_newest_first_with_only_its_items(
    rest_server: Server, user: str, engines: dict[str, AsyncEngine]
) -> None:
    feed = Feed()
    # Written by the test, older than the rest, four at each instant (the id breaks the
    # tie): each type read or not, archived or not, four times.
    kinds = ("GENERIC_INFO", "CAMPAIGN_ERROR", "TEMPLATE_APPROVED")
    stored = [(kind, i % 2 == 1, i % 4 >= 2) for i in range(16) for kind in kinds]
    for item in await insert_items(
        engines, rest_server, user, stored, start=datetime.now(UTC) - timedelta(minutes=1), tie=4
    ):
        feed.add(item)
    # Seen and unread, in the inbox and archived: only the calls make those.
    states: list[Sequence[str]] = [("seen",), ("read", "unread", "archive")]
    specs = [(f"{kind}-{i}", kind, calls) for i, calls in enumerate(states) for kind in kinds]
    created = await make_items(rest_server, user, feed, specs)

    for params, wanted in VIEWS:
        expected = feed.view(**wanted)
        assert len(expected) >= 4, f"{params}: too few items to page"
        pages = await walk(rest_server, user, limit=3, **params)
        assert all(pages), f"{params}: an empty page"
        walked = [item["id"] for chunk in pages for item in chunk]
        assert walked == [item["id"] for item in expected], params
        whole = (await listed(rest_server, user, limit=100, **params)).json()
        assert [item for item in whole if item["id"] in created.values()] == [
            item for item in expected if item["id"] in created.values()
        ], params


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"archived": "maybe"}, "query.archived: "),
        ({"is_seen": "maybe"}, "query.is_seen: "),
        ({"type": ["CAMPAIGN_ERROR", "NOT_A_TYPE"]}, "query.type.1: "),
    ],
)
async def test_bad_view_filters_are_422(
    rest_server: Server, user: str, params: dict[str, Any], detail: str
) -> None:
    answer = await rest_server.http.get(f"{API}/", params=params, headers=rest_server.auth(user))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(detail)


# 3. Bulk calls: answers, rows and counts


async def test_each_bulk_call_changes_the_items_its_body_names_and_no_other(
    rest_server: Server, user: str, db_rows: DbRows
) -> None:
    feed = Feed()
    named = await make_items(rest_server, user, feed, BULK_SPECS)
    bystander = Feed()
    bystander.add(await rest_server.send(f"{user}-other", "someone else's"))
    await run_bulk_steps(
        rest_server,
        user,
        feed,
        named,
        check=lambda: assert_holds(rest_server, user, feed, db_rows),
    )
    assert feed.items == {}
    await assert_holds(rest_server, f"{user}-other", bystander, db_rows)


async def test_read_all_up_to_an_item_leaves_every_newer_item_unread(
    rest_server: Server, user: str, db_rows: DbRows
) -> None:
    feed = Feed()
    named = await make_items(
        rest_server, user, feed, [(name, "CAMPAIGN_ERROR", ()) for name in "abc"]
    )
    answer = await bulk_call(rest_server, user, "read-all", {"up_to": named["b"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"count": 1, "changed": 2, "done": True}
    assert await db_rows(rest_server, user) == {
        named["a"]: ("CAMPAIGN_ERROR", True, True, False),
        named["b"]: ("CAMPAIGN_ERROR", True, True, False),
        named["c"]: ("CAMPAIGN_ERROR", False, False, False),
    }
    assert (await get_counts(rest_server, user))["by_type"]["CAMPAIGN_ERROR"] == {
        "unread": 1,
        "unseen": 1,
    }


BAD_BULK_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("unknown-field", {"body": {"colour": "red"}}),
    ("unknown-type", {"body": {"types": ["CAMPAIGN_EXPLODED"]}}),
    ("types-not-a-list", {"body": {"types": "CAMPAIGN_ERROR"}}),
    ("no-types", {"body": {"types": []}}),
    ("up-to-not-a-uuid", {"body": {"up_to": "not-a-uuid"}}),
    ("is-read-not-a-bool", {"body": {"is_read": "maybe"}}),
    ("not-an-object", {"body": ["CAMPAIGN_ERROR"]}),
    ("not-json", {"content": '{"types": '}),
]


async def test_bad_bulk_bodies_are_422_and_change_nothing(
    rest_server: Server, user: str, db_rows: DbRows
) -> None:
    feed = Feed()
    await make_items(rest_server, user, feed, BULK_SPECS)
    async with open_pair(rest_server, user) as pair:
        # One body model for all five: each bad body on the guide's call and on the one
        # that takes ``archived``, an unknown field on the others.
        cases = [
            (call, name, bad)
            for call in BULK_CALLS
            for name, bad in BAD_BULK_BODIES
            if call in ("read-all", "delete-all") or name == "unknown-field"
        ]
        # ``archived`` is delete-all's alone.
        cases += [(call, "archived", {"body": {"archived": True}}) for call in BULK_CALLS[:4]]
        cases += [("delete-all", "archived-not-a-bool", {"body": {"archived": "maybe"}})]
        for call, name, bad in cases:
            answer = await bulk_call(rest_server, user, call, **bad)
            assert answer.status_code == 422, (call, name, answer.text)
            assert answer.json()["error"] == "validation_failed", (call, name)
        await assert_holds(rest_server, user, feed, db_rows)
        await pair.quiet(rest_server, user, feed)


async def test_bulk_calls_up_to_an_unknown_or_someone_elses_item_are_404_and_change_nothing(
    rest_server: Server, user: str, db_rows: DbRows
) -> None:
    feed = Feed()
    await make_items(rest_server, user, feed, BULK_SPECS)
    theirs = await rest_server.send(f"{user}-other", "someone else's")
    async with open_pair(rest_server, user) as pair:
        for call in BULK_CALLS:
            for up_to in (theirs["id"], str(uuid.uuid4())):
                answer = await bulk_call(rest_server, user, call, {"up_to": up_to})
                assert answer.status_code == 404, (call, answer.text)
                assert answer.json() == UP_TO_NOT_FOUND
        await assert_holds(rest_server, user, feed, db_rows)
        await pair.quiet(rest_server, user, feed)


# 4. What tabs receive


async def test_a_counts_tab_opens_with_snapshot_count_and_counts_and_both_leave_out_archived(
    rest_server: Server, user: str
) -> None:
    feed = Feed()
    await make_items(rest_server, user, feed, BULK_SPECS)
    inbox = feed.view()
    async with (
        rest_server.connect(user, counts=True) as counting,
        rest_server.connect(user) as plain,
    ):
        opening = [await counting.next_event() for _ in range(3)]
        assert opening == [
            frame("snapshot", inbox),
            count_frame(feed.unread),
            counts_frame(feed.counts()),
        ]
        assert feed.counts() == await get_counts(rest_server, user)
        assert await plain.start() == (inbox, feed.unread)
        pair = Pair(plain, counting, inbox)
        await pair.quiet(rest_server, user, feed)  # the plain tab's opening was two frames


async def test_each_item_call_sends_its_frames_in_order_and_counts_only_where_asked(
    rest_server: Server, user: str
) -> None:
    feed = Feed()
    named = await make_items(rest_server, user, feed, ITEM_SPECS)
    async with open_pair(rest_server, user) as pair:
        await run_item_steps(rest_server, user, feed, named, pairs=[pair])
        await pair.quiet(rest_server, user, feed)


async def test_each_bulk_call_sends_the_count_then_what_changed_and_counts_where_asked(
    rest_server: Server, user: str
) -> None:
    feed = Feed()
    named = await make_items(rest_server, user, feed, BULK_SPECS)
    async with open_pair(rest_server, user) as pair:
        await run_bulk_steps(rest_server, user, feed, named, pairs=[pair])
        await pair.quiet(rest_server, user, feed)


async def test_read_all_with_nothing_unread_still_sends_the_guides_count_of_zero(
    rest_server: Server, user: str
) -> None:
    """The guide: read-all sends one ``unread_count.updated`` of 0, which its client takes
    as "every item I hold is read" (the spec keeps the guide's frames). A tab that holds an
    item as unread (read while it was away, older than its snapshot) is set right by it."""
    item = await rest_server.send(user)
    assert (await rest_server.mark_read(user, item["id"])).status_code == 200
    async with rest_server.connect(user) as tab:
        await tab.start()
        answer = await bulk_call(rest_server, user, "read-all")
        assert answer.json() == {"count": 0, "changed": 0, "done": True}
        marker = await rest_server.send(user, "marker")
        assert await tab.next_event() == count_frame(0), "read-all sent no count"
        assert (await tab.next_event())["event"] == "notifications.changed"
        assert await tab.next_event() == frame("notification.created", marker)


# 5. Two instances sharing PostgreSQL and Redis


async def cluster(pool: ServerPool) -> tuple[Server, Server]:
    """Two `campana serve` processes on the test PostgreSQL and Redis (those of
    ``tests/test_scale.py``: one pair per session)."""
    first = await pool.get("postgresql", "process", name="a", broker="redis")
    second = await pool.get("postgresql", "process", name="b", broker="redis")
    return first, second


@pytest.mark.timeout(120)
async def test_changes_through_one_instance_reach_tabs_on_the_other_with_the_same_frames(
    server_pool: ServerPool, user: str
) -> None:
    first, second = await cluster(server_pool)
    items, bulk = Feed(), Feed()
    named = await make_items(first, user, items, ITEM_SPECS)
    async with open_pair(first, user) as near, open_pair(second, user) as far:
        await run_item_steps(first, user, items, named, pairs=[near, far])
    bulk_user = f"{user}-bulk"
    named = await make_items(second, bulk_user, bulk, BULK_SPECS)
    async with open_pair(first, bulk_user) as far, open_pair(second, bulk_user) as near:
        await run_bulk_steps(second, bulk_user, bulk, named, pairs=[near, far])


@pytest.mark.timeout(120)
async def test_mixed_changes_on_both_instances_leave_every_tab_at_the_counts(
    server_pool: ServerPool, user: str
) -> None:
    first, second = await cluster(server_pool)
    bulks: list[tuple[str, dict[str, Any] | None]] = [
        ("seen-all", None),
        ("read-all", {"types": ["CAMPAIGN_ERROR", "GENERIC_INFO"]}),
        ("archive-all", {"is_read": True}),
        ("unarchive-all", {"types": ["CAMPAIGN_ERROR"]}),
        ("unarchive-all", None),
    ]
    async with contextlib.AsyncExitStack() as stack:
        tabs: list[tuple[Tab, bool]] = []
        for server in (first, second):
            for counts in (False, True):
                tab = await stack.enter_async_context(server.connect(user, counts=counts))
                await tab.start()
                if counts:
                    assert (await tab.next_event())["event"] == "counts.updated"
                tab.follow()
                tabs.append((tab, counts))
        created: list[str] = []

        async def worker(number: int) -> None:
            chance = random.Random(number)
            for step in range(15):
                server = (first, second)[(number + step) % 2]
                roll = chance.random()
                if roll < 0.35 or not created:
                    kind = chance.choice(TYPES[::3])
                    created.append((await server.send(user, f"w{number}", type=kind))["id"])
                elif roll < 0.9:
                    action = chance.choice(ACTIONS)
                    answer = await item_call(server, user, chance.choice(created), action)
                    assert answer.status_code in (200, 204, 404), answer.text  # 404: deleted
                else:
                    answer = await bulk_call(server, user, *chance.choice(bulks))
                    assert answer.status_code == 200, answer.text

        await asyncio.gather(*(worker(number) for number in range(4)))
        truth = await get_counts(first, user)
        assert await get_counts(second, user) == truth
        assert await first.unread_count(user) == await second.unread_count(user) == truth["unread"]

        def settled() -> bool:
            return all(
                tab.view.unread_count == truth["unread"]
                and tab.view.counts == (truth if counts else None)
                for tab, counts in tabs
            )

        await until(settled, within=10, what=f"every tab at {truth}")
        for tab, counts in tabs:
            assert tab.is_open
            last_count = None
            for received in tab.received:
                if received["event"] == "unread_count.updated":
                    last_count = received["payload"]["count"]
                elif received["event"] == "counts.updated":
                    assert counts, "counts.updated on a tab that did not ask for it"
                    # The unread total is the count sent just before it, at one version.
                    assert received["payload"]["unread"] == last_count


# 6. A bulk change of several batches


def stored_unread(count: int) -> list[tuple[str, bool, bool]]:
    return [(TYPES[i % len(TYPES)], False, False) for i in range(count)]


@pytest.mark.timeout(120)
async def test_a_bulk_read_of_many_batches_leaves_the_items_created_during_it_unread(
    rest_server: Server, user: str, engines: dict[str, AsyncEngine], db_rows: DbRows
) -> None:
    feed = Feed()
    old = await insert_items(
        engines,
        rest_server,
        user,
        stored_unread(2500),
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    for item in old:
        feed.add(item)
    async with open_pair(rest_server, user) as pair:
        newest = pair.snapshot[0]
        assert newest["id"] == old[-1]["id"]
        pair.plain.follow()
        pair.counting.follow()
        during: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def create_meanwhile() -> None:
            while not stop.is_set():
                kind = TYPES[len(during) % len(TYPES)]
                during.append(await rest_server.send(user, f"during {len(during)}", type=kind))

        creating = asyncio.gather(*(create_meanwhile() for _ in range(3)))
        await until(lambda: len(during) >= 3, within=5, what="creates flowing")
        answer = await bulk_call(rest_server, user, "read-all", {"up_to": newest["id"]})
        stop.set()
        await creating
        assert answer.status_code == 200, answer.text
        assert answer.json()["changed"] == 2500
        assert answer.json()["done"] is True

        for item in during:
            feed.add(item)
        for item in old:
            feed.apply(item["id"], "read")
        await assert_holds(rest_server, user, feed, db_rows)
        assert feed.unread == len(during)

        truth = await get_counts(rest_server, user)
        newest_now = (await listed(rest_server, user, limit=20)).json()
        tabs = [(pair.plain, False), (pair.counting, True)]
        await settle(tabs, truth)  # the badge and the counts, first
        # Creates did flow during it: one at least between two of its batches (a count of
        # the bulk change's own is one that no notification.created comes just before).
        events = [f["event"] for f in pair.plain.received][2:]
        batches = [
            i
            for i, event in enumerate(events)
            if event == "unread_count.updated" and events[i - 1] != "notification.created"
        ]
        assert "notification.created" in events[batches[0] : batches[-1]]
        end = {
            "change": {"is_read": True, "is_seen": True},
            "filter": {
                "archived": False,
                "types": None,
                "is_read": None,
                "up_to": {"id": newest["id"], "created_at": newest["created_at"]},
            },
        }
        for tab, counts in tabs:
            done = [f["payload"] for f in tab.received if f["event"] == "notifications.changed"]
            assert done == [end], (
                f"notifications.changed on the {'counting' if counts else 'plain'} tab"
            )
        await settle(tabs, truth, newest_now)  # the items it held, read by that frame
        assert not any(f["event"] == "counts.updated" for f in pair.plain.received)


async def test_a_bulk_change_of_exactly_one_full_batch_ends_with_what_changed(
    rest_server: Server, user: str, engines: dict[str, AsyncEngine], db_rows: DbRows
) -> None:
    """The batch was full, so the end is only known from a second batch that finds none."""
    feed = Feed()
    for item in await insert_items(
        engines,
        rest_server,
        user,
        stored_unread(1000),
        start=datetime.now(UTC) - timedelta(hours=1),
    ):
        feed.add(item)
    async with open_pair(rest_server, user) as pair:
        answer = await bulk_call(rest_server, user, "seen-all")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"count": 1000, "changed": 1000, "done": True}
        payload = changed_payload("seen-all", None, feed)
        feed.bulk("seen-all", None)
        # The full batch's counts (no unread count: none moved), then the end's.
        done, counts = frame("notifications.changed", payload), counts_frame(feed.counts())
        assert await pair.plain.next_event() == done
        assert [await pair.counting.next_event() for _ in range(3)] == [counts, done, counts]
        for tab in (pair.plain, pair.counting):  # then the inbox again
            assert (await tab.next_event())["event"] == "snapshot"
            assert await tab.next_event() == count_frame(feed.unread)
        assert await pair.counting.next_event() == counts
        await pair.quiet(rest_server, user, feed)
    await assert_holds(rest_server, user, feed, db_rows)


@pytest.mark.timeout(120)
async def test_a_bulk_change_past_a_second_answers_202_and_finishes_in_the_server(
    server_pool: ServerPool, user: str, engines: dict[str, AsyncEngine], db_rows: DbRows
) -> None:
    """The second batch waits on a row this test holds locked, so the call outlasts its
    second; when the lock goes the change carries on and says it is done."""
    server = await server_pool.get("postgresql", "inprocess")
    feed = Feed()
    old = await insert_items(
        engines,
        server,
        user,
        [("GENERIC_INFO", False, False)] * 1500,
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    for item in old:
        feed.add(item)
    async with open_pair(server, user) as pair:
        async with engine_of(engines, server).connect() as holder, holder.begin():
            # The oldest item is in the second batch (the newest 1000 come first).
            await holder.execute(
                text("SELECT id FROM notifications WHERE id = :id FOR UPDATE"),
                {"id": uuid.UUID(old[0]["id"])},
            )
            answer = await bulk_call(server, user, "read-all")
            assert answer.status_code == 202, answer.text
            assert answer.json() == {"count": 500, "changed": 1000, "done": False}
            half = counts_of(old[:500])
            await pair.expect([count_frame(500)], half)
        payload = changed_payload("read-all", None, feed)
        feed.bulk("read-all", None)
        await pair.expect([count_frame(0), frame("notifications.changed", payload)], feed.counts())
        await pair.quiet(server, user, feed)
    await assert_holds(server, user, feed, db_rows)
