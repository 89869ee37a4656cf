"""Many producer calls at once: every caller, every row and every socket sees each create.

Concurrent creates share transactions. Whatever the grouping, a socket must see its
user's items and counts as if they had been written one by one: each count equals the
items that preceded it, so a badge never disagrees with the list next to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from .support.servers import Server, ServerPool
from .support.tabs import Tab

NOTIFICATIONS = "/api/v1/notifications/"


async def read_creates(tab: Tab, expected: int) -> tuple[list[str], list[int]]:
    """Frames until ``expected`` items and their count arrived: item ids, counts.

    Only creates happen while the tab is open, and it opened on an empty list: every
    count must then equal the number of items received before it.
    """
    ids: list[str] = []
    counts: list[int] = []
    while not (len(ids) == expected and counts and counts[-1] == expected):
        frame = await tab.next_event()
        if frame["event"] == "notification.created":
            ids.append(frame["payload"]["id"])
        elif frame["event"] == "unread_count.updated":
            counts.append(frame["payload"]["count"])
            assert counts[-1] == len(set(ids)), f"count {counts[-1]} after {len(ids)} items"
        else:
            raise AssertionError(f"unexpected frame {frame}")
    return ids, counts


def row_ids(found: list[dict[str, Any]]) -> set[str]:
    return {str(row["id"]).replace("-", "") for row in found}


def plain(ids: list[str] | set[str]) -> set[str]:
    return {item_id.replace("-", "") for item_id in ids}


async def test_50_concurrent_creates_for_one_user_reach_its_socket_with_exact_counts(
    socket_server: Server, user: str, rows: Any
) -> None:
    async with socket_server.connect(user) as tab:
        assert await tab.start() == ([], 0)
        created = await asyncio.gather(*(socket_server.send(user, f"n{i}") for i in range(50)))

        ids, counts = await read_creates(tab, 50)

        assert sorted(ids) == sorted(item["id"] for item in created)
        assert counts == sorted(counts)
        assert row_ids(await rows(socket_server, user)) == plain(ids)
        assert await socket_server.unread_count(user) == 50
        await socket_server.assert_quiet(tab, user)  # no duplicate followed (adds a row: last)


async def test_concurrent_creates_for_many_users_and_broadcasts_reach_each_user(
    socket_server: Server, user: str, rows: Any
) -> None:
    users = [f"{user}-{i}" for i in range(10)]

    async def broadcast(message: str) -> list[dict[str, Any]]:
        body = {"user_ids": users, "type": "GENERIC_INFO", "message": message}
        answer = await socket_server.http.post(
            NOTIFICATIONS, json=body, headers=socket_server.producer
        )
        assert answer.status_code == 201, answer.text
        items: list[dict[str, Any]] = answer.json()
        return items

    async with contextlib.AsyncExitStack() as stack:
        tabs = [await stack.enter_async_context(socket_server.connect(u)) for u in users]
        for tab in tabs:
            assert await tab.start() == ([], 0)
        singles = [socket_server.send(users[i % 10], f"n{i}") for i in range(50)]
        answers: list[Any] = await asyncio.gather(*singles, broadcast("b1"), broadcast("b2"))

        sent: dict[str, set[str]] = {recipient: set() for recipient in users}
        for i, item in enumerate(answers[:50]):
            sent[users[i % 10]].add(item["id"])
        for items in answers[50:]:
            assert isinstance(items, list)
            for recipient, item in zip(users, items, strict=True):
                sent[recipient].add(item["id"])
        received = await asyncio.gather(*(read_creates(tab, 7) for tab in tabs))

        for recipient, (ids, _) in zip(users, received, strict=True):
            assert set(ids) == sent[recipient]
            assert row_ids(await rows(socket_server, recipient)) == plain(sent[recipient])
            assert await socket_server.unread_count(recipient) == 7
        for recipient, tab in zip(users, tabs, strict=True):
            await socket_server.assert_quiet(tab, recipient)


async def test_one_create_the_database_refuses_fails_alone(
    server_pool: ServerPool, user: str, rows: Any
) -> None:
    """A create the database refuses (here a trigger refuses its message) fails alone.

    A long broadcast first keeps the writer busy, so the others queue up behind it and
    share one transaction with the refused create.
    """
    server = await server_pool.get("postgresql", "inprocess")
    refused = f"refused-{user}"
    engine = create_async_engine(server.settings.resolved_database_url)
    async with engine.begin() as connection:
        await connection.execute(text(REFUSE_FUNCTION.format(message=refused)))
        await connection.execute(text(REFUSE_TRIGGER))
    try:
        await _create_refused_among_others(server, user, refused, rows)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER campana_test_refuse ON notifications"))
        await engine.dispose()


REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION campana_test_refuse() RETURNS trigger AS $$
BEGIN
    IF NEW.message = '{message}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql
"""
REFUSE_TRIGGER = """
CREATE TRIGGER campana_test_refuse BEFORE INSERT ON notifications
FOR EACH ROW EXECUTE FUNCTION campana_test_refuse()
"""


async def _create_refused_among_others(server: Server, user: str, refused: str, rows: Any) -> None:
    others = [f"{user}-{i}" for i in range(2000)]
    async with server.connect(user) as tab:
        assert await tab.start() == ([], 0)
        broadcast = asyncio.create_task(
            server.http.post(
                NOTIFICATIONS,
                json={"user_ids": others, "type": "GENERIC_INFO", "message": "everyone"},
                headers=server.producer,
            )
        )
        await asyncio.sleep(0.05)
        bodies = [{"user_id": user, "type": "GENERIC_INFO", "message": f"n{i}"} for i in range(20)]
        bodies.insert(10, {"user_id": user, "type": "GENERIC_INFO", "message": refused})
        answers = await asyncio.gather(
            *(
                server.http.post(NOTIFICATIONS, json=body, headers=server.producer)
                for body in bodies
            )
        )
        assert (await broadcast).status_code == 201

        statuses = [answer.status_code for answer in answers]
        assert statuses[10] >= 400
        assert statuses[:10] + statuses[11:] == [201] * 20
        good = {answer.json()["id"] for answer in answers if answer.status_code == 201}
        ids, _ = await read_creates(tab, 20)

        assert set(ids) == good
        assert row_ids(await rows(server, user)) == plain(good)
        assert await server.unread_count(user) == 20
        await server.assert_quiet(tab, user)


def batch_totals(metrics_text: str) -> tuple[float, float]:
    """(rows written, transactions) by shared create transactions so far."""
    found = dict(
        re.findall(r"^campana_create_batch_size_(sum|count) (\S+)$", metrics_text, re.MULTILINE)
    )
    return float(found.get("sum", 0)), float(found.get("count", 0))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_concurrent_creates_share_transactions(
    server_pool: ServerPool, user: str, database: str
) -> None:
    """Seen by an operator in the batch size histogram (of a process: the registry is its own).

    The test holds the database's write lock, so that the first create keeps the writer
    waiting while the 50 others arrive: they must then share a transaction or a few.
    """
    server = await server_pool.get(database, "process")
    first = f"{user}-first"
    await server.send(first, "has a version row to lock")
    rows_before, batches_before = batch_totals((await server.http.get("/metrics")).text)

    async with holding_writes(server, first):
        waiting = asyncio.create_task(server.send(first, "waits for the lock"))
        await asyncio.sleep(0.2)
        others = asyncio.gather(*(server.send(f"{user}-{i % 5}", f"n{i}") for i in range(50)))
        await asyncio.sleep(1.0)
    await asyncio.gather(waiting, others)

    rows_after, batches_after = batch_totals((await server.http.get("/metrics")).text)
    assert rows_after - rows_before == 51
    assert batches_after - batches_before <= 5


@contextlib.asynccontextmanager
async def holding_writes(server: Server, user_id: str) -> AsyncIterator[None]:
    """Hold what a create of ``user_id`` must wait for: its row lock, or SQLite's write lock."""
    url = server.settings.resolved_database_url
    if server.database == "sqlite":
        path = url.split(":///", 1)[1]
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("COMMIT")
            connection.close()
        return
    engine = create_async_engine(url)
    try:
        async with engine.begin() as held:
            await held.execute(
                text("SELECT version FROM user_versions WHERE user_id = :u FOR UPDATE"),
                {"u": user_id},
            )
            yield
    finally:
        await engine.dispose()


async def test_reads_read_all_and_creates_racing_leave_the_badge_equal_to_the_unread_rows(
    rest_server: Server, user: str, rows: Any
) -> None:
    """Every change takes the user's row first: none deadlocks, and the count stays exact,
    in the database and on the user's socket.

    Had reading one item locked the item before the user, while reading all locks the user
    before the items, the two would deadlock under this race (they once did: a 500).
    """
    items = [await rest_server.send(user, f"old {i}") for i in range(20)]
    async with rest_server.connect(user) as tab:
        await tab.start()
        read_all = rest_server.http.post(f"{NOTIFICATIONS}read-all", headers=rest_server.auth(user))
        reads: list[Awaitable[httpx.Response]] = [
            *(rest_server.mark_read(user, item["id"]) for item in items[::2]),
            read_all,
            *(rest_server.mark_read(user, item["id"]) for item in items[1::2]),
        ]
        creates = asyncio.gather(*(rest_server.send(user, f"new {i}") for i in range(10)))
        answers, _ = await asyncio.gather(asyncio.gather(*reads), creates)
        for answer in answers:
            assert answer.status_code == 200, answer.text
        unread = [row for row in await rows(rest_server, user) if not row["is_read"]]
        assert {row["message"] for row in unread} <= {f"new {i}" for i in range(10)}
        assert await rest_server.unread_count(user) == len(unread)
        marker = await rest_server.send(user, "marker")
        frames = await tab.read_until_holds(marker["id"])
    counts = [f["payload"]["count"] for f in frames if f["event"] == "unread_count.updated"]
    assert counts[-2:] == [len(unread), len(unread) + 1]  # the last before the marker's own
