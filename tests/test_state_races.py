"""Every state and count exact under races and faults, on three instances.

Reads, unreads, archives, seen-all and read-all `up_to` race through three instances
while creates flow; then, with faults (Redis restarted, a process that committed and
died before publishing), every open tab must end with the database's counts, per type,
and its newest items in their states, on the socket it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from campana import store
from campana.schemas import NotificationType

from .support.redis_server import RedisServer
from .support.servers import POSTGRES_URL, Server, ServerPool
from .support.tabs import Tab

pytestmark = pytest.mark.timeout(120)

SWEEP_SECONDS = 2.0
SWEEP_BOUND = SWEEP_SECONDS + 1.0 + 3.0  # as tests/test_faults.py: a sweep, and slack
TYPES = [kind.value for kind in NotificationType]


def _newest_first(item: dict[str, Any]) -> tuple[datetime, str]:
    return (datetime.fromisoformat(item["created_at"]), item["id"])


class StateTab:
    """A tab that knows the states, built from its frames as a client of
    docs/protocol.md ("The feed's states") builds it: the inbox it holds and its counts."""

    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self.inbox: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, Any] | None = None
        self.unread: int | None = None
        self._task: asyncio.Task[None] | None = None

    def apply(self, frame: dict[str, Any]) -> None:
        event, payload = frame["event"], frame["payload"]
        if event == "snapshot":
            fresh = {item["id"]: item for item in payload}
            oldest = min((_newest_first(i) for i in payload), default=None)
            for held_id, held in list(self.inbox.items()):
                covered = len(payload) < 20 or (oldest is not None and _newest_first(held) > oldest)
                if held_id not in fresh and covered:
                    del self.inbox[held_id]  # it left the inbox
            self.inbox.update(fresh)
        elif event in ("notification.created", "notification.updated"):
            if payload["is_archived"]:
                self.inbox.pop(payload["id"], None)
            else:
                self.inbox[payload["id"]] = payload
        elif event == "notification.read" and payload["id"] in self.inbox:
            self.inbox[payload["id"]] |= {"is_read": True, "is_seen": True}
        elif event == "notification.deleted":
            self.inbox.pop(payload["id"], None)
        elif event == "notifications.changed":
            self._apply_bulk(payload)
        elif event == "counts.updated":
            self.counts = payload
        elif event == "unread_count.updated":
            self.unread = payload["count"]

    def _apply_bulk(self, payload: dict[str, Any]) -> None:
        change, where = payload["change"], payload["filter"]
        if where["archived"]:
            return  # this tab holds the inbox only
        up_to = where["up_to"]
        for item_id, item in list(self.inbox.items()):
            if where["types"] is not None and item["type"] not in where["types"]:
                continue
            if where["is_read"] is not None and item["is_read"] != where["is_read"]:
                continue
            if up_to is not None and _newest_first(item) > _newest_first(up_to):
                continue
            if change.get("deleted") or change.get("is_archived"):
                del self.inbox[item_id]
            else:
                self.inbox[item_id] = item | change

    def follow(self) -> None:
        async def read() -> None:
            with contextlib.suppress(Exception):
                while True:
                    self.apply(await self.tab.next_event(timeout=3600))

        self._task = asyncio.create_task(read())

    def agrees_with(self, newest: list[dict[str, Any]], counts: dict[str, Any]) -> bool:
        return (
            self.counts == counts
            and self.unread == counts["unread"]
            and all(self.inbox.get(item["id"]) == item for item in newest)
        )

    def newest_held(self) -> str | None:
        """The id of the newest item the tab shows: what a bulk call's `up_to` names."""
        if not self.inbox:
            return None
        newest: str = max(self.inbox.values(), key=_newest_first)["id"]
        return newest


@contextlib.asynccontextmanager
async def state_tabs(user: str, *on: Server) -> AsyncIterator[list[StateTab]]:
    async with contextlib.AsyncExitStack() as stack:
        tabs = []
        for server in on:
            tab = await stack.enter_async_context(
                Tab(f"{server.ws_url}?token={server.token(user)}&counts=1")
            )
            state = StateTab(tab)
            for _ in range(3):  # snapshot, unread count, counts
                state.apply(await tab.next_event())
            state.follow()
            tabs.append(state)
        yield tabs


async def the_database(server: Server, user: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    listed = await server.http.get("/api/v1/notifications/?limit=20", headers=server.auth(user))
    counts = await server.http.get("/api/v1/notifications/counts", headers=server.auth(user))
    assert listed.status_code == counts.status_code == 200
    return listed.json(), counts.json()


async def converge(tabs: Sequence[StateTab], server: Server, user: str, *, within: float) -> None:
    since = time.monotonic()
    while True:
        # Read each time: a call the traffic gave up on may still commit meanwhile.
        newest, counts = await the_database(server, user)
        if all(tab.agrees_with(newest, counts) for tab in tabs):
            break
        if time.monotonic() - since > within:
            shown = [(tab.unread, tab.counts and tab.counts["unseen"]) for tab in tabs]
            wrong = [
                (item, [tab.inbox.get(item["id"]) for tab in tabs])
                for item in newest
                if any(tab.inbox.get(item["id"]) != item for tab in tabs)
            ]
            pytest.fail(
                f"after {within:.1f} s the tabs show (unread, unseen) {shown}; the database "
                f"has {counts['unread']}, {counts['unseen']}; items held otherwise: {wrong[:2]}"
            )
        await asyncio.sleep(0.05)
    assert all(tab.tab.is_open for tab in tabs), "a tab had to reconnect"
    assert counts == await counted_from_rows(server, user)
    assert (await the_database(server, user))[1] == counts  # nothing moved meanwhile


async def counted_from_rows(server: Server, user: str) -> dict[str, Any]:
    """The counts as the user's whole inbox says, page by page: what the counters must be."""
    by_type = {kind: {"unread": 0, "unseen": 0} for kind in TYPES}
    path: str | None = "/api/v1/notifications/?limit=100"
    while path is not None:
        page = await server.http.get(path, headers=server.auth(user))
        assert page.status_code == 200
        for item in page.json():
            by_type[item["type"]]["unread"] += not item["is_read"]
            by_type[item["type"]]["unseen"] += not item["is_seen"]
        link = page.headers.get("link")
        path = link.split(";")[0].strip("<>") if link else None
    return {
        "unread": sum(kind["unread"] for kind in by_type.values()),
        "unseen": sum(kind["unseen"] for kind in by_type.values()),
        "by_type": by_type,
    }


class MixedTraffic:
    """One user's creates and every kind of change, through several instances at once."""

    def __init__(
        self, user: str, through: Sequence[Server], tabs: Sequence[StateTab], *, tolerate: bool
    ) -> None:
        self._user, self._through, self._tabs = user, through, tabs
        self._tolerate = tolerate  # a fault may fail a call meanwhile
        self._created: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.calls: dict[str, int] = {}

    def start(self) -> MixedTraffic:
        self._tasks = [asyncio.create_task(self._run(lane)) for lane in range(3)]
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # a call given up on here may still be committing there
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _run(self, lane: int) -> None:
        for step in itertools.count():
            server = self._through[(lane + step) % len(self._through)]
            kind = (
                "create"
                if step % 2 == 0 or not self._created
                else random.choice(["read", "unread", "archive", "seen-all", "read-all"])
            )
            try:
                await self._call(server, kind)
                self.calls[kind] = self.calls.get(kind, 0) + 1
            except (httpx.TransportError, AssertionError):
                if not self._tolerate:
                    raise
            await asyncio.sleep(0.01)

    async def _call(self, server: Server, kind: str) -> None:
        auth = server.auth(self._user)
        if kind == "create":
            item = await server.send(self._user, "m", type=random.choice(TYPES))
            self._created.append(item["id"])
            return
        if kind in ("read", "unread", "archive"):
            target = random.choice(self._created[-15:])
            answer = await server.http.patch(f"/api/v1/notifications/{target}/{kind}", headers=auth)
        else:
            up_to = random.choice(self._tabs).newest_held()
            body: dict[str, Any] = {"up_to": up_to} if up_to and kind == "read-all" else {}
            if kind == "read-all" and random.random() < 0.5:
                body["types"] = random.sample(TYPES, 3)
            answer = await server.http.post(
                f"/api/v1/notifications/{kind}", json=body, headers=auth
            )
        # Archived items can still be read or unread, and nothing is deleted: only a 200.
        assert answer.status_code == 200, answer.text


async def _cluster(pool: ServerPool, redis_url: str, count: int = 3) -> list[Server]:
    return list(
        await asyncio.gather(
            *(
                pool.start(
                    "postgresql", "process", redis_url=redis_url, sweep_seconds=SWEEP_SECONDS
                )
                for _ in range(count)
            )
        )
    )


async def test_every_count_converges_after_a_mixed_race_on_three_instances(
    server_pool: ServerPool, user: str
) -> None:
    servers = await _cluster(server_pool, server_pool.redis_url)
    for i in range(10):
        await servers[0].send(user, f"before {i}", type=TYPES[i % len(TYPES)])
    async with state_tabs(user, *servers, servers[0]) as tabs:
        traffic = MixedTraffic(user, servers, tabs, tolerate=False).start()
        await asyncio.sleep(3.0)
        await traffic.stop()
        await converge(tabs, servers[1], user, within=SWEEP_BOUND)
    assert set(traffic.calls) == {"create", "read", "unread", "archive", "seen-all", "read-all"}


async def test_every_count_converges_when_redis_restarts_during_a_mixed_race(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    servers = await _cluster(server_pool, spare_redis.url)
    for i in range(10):
        await servers[0].send(user, f"before {i}", type=TYPES[i % len(TYPES)])
    async with state_tabs(user, *servers) as tabs:
        traffic = MixedTraffic(user, servers, tabs, tolerate=False).start()
        await asyncio.sleep(1.0)
        spare_redis.kill()
        await asyncio.sleep(1.0)  # REST keeps storing meanwhile: every call must succeed
        spare_redis.start()
        await asyncio.sleep(1.0)
        await traffic.stop()
        await converge(tabs, servers[2], user, within=SWEEP_BOUND)


async def test_changes_of_every_state_committed_by_a_process_that_died_reach_every_tab(
    server_pool: ServerPool, user: str
) -> None:
    """This test process commits as a Campana process does (an archive, a read-all batch,
    a seen one, a delete), then "dies": nothing is published. The sweep finds it."""
    servers = await _cluster(server_pool, server_pool.redis_url, count=2)
    items = [await servers[0].send(user, f"n{i}", type=TYPES[i % len(TYPES)]) for i in range(6)]
    async with state_tabs(user, *servers) as tabs:
        # A tab may name the deleted item as `up_to` until it learns: 404s are allowed.
        traffic = MixedTraffic(user, servers, tabs, tolerate=True).start()
        await asyncio.sleep(1.0)
        engine = create_async_engine(POSTGRES_URL)
        try:
            async with store.create_sessionmaker(engine).begin() as session:
                for item, action in zip(
                    items,
                    (store.Action.ARCHIVE, store.Action.SEEN, store.Action.DELETE),
                    strict=False,
                ):
                    changed = await store.change_notification(
                        session, user, uuid.UUID(item["id"]), action
                    )
                    assert changed is not None
                badge = await store.badge(session, user)
                batch = await store.change_batch(
                    session,
                    user,
                    store.Action.READ,
                    store.View(),
                    up_to_version=badge.version,
                    after=None,
                    limit=1000,
                )
                assert batch.changed > 0
        finally:
            await engine.dispose()
        await asyncio.sleep(0.5)
        await traffic.stop()
        await converge(tabs, servers[0], user, within=SWEEP_BOUND)
    listed, _counts = await the_database(servers[0], user)
    assert items[2]["id"] not in {item["id"] for item in listed}  # the deleted one
    assert sum(traffic.calls.values()) > 20
