"""Faults that try to leave an open tab behind the database, and what every tab holds after.

Each test makes one fault real: Redis restarted, killed or paused; the link to Redis cut
or stalled on the way; PostgreSQL unreachable; a change committed by a process that died
before publishing; an instance killed mid-traffic. Then it asserts what the user sees:
every tab still open holds the newest items and the exact badge within the stated bound,
on the socket it opened (no reconnect). The figures end up in the run's summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from campana import store

from .support.proxy import TcpProxy
from .support.redis_server import RedisServer
from .support.report import STALENESS
from .support.servers import POSTGRES_URL, Server, ServerPool
from .support.tabs import Tab
from .support.waits import until

pytestmark = pytest.mark.timeout(120)

SWEEP_SECONDS = 2.0
# A tab left behind is found by the next sweep, which waits up to a second for events
# still on their way before it reloads the tab's snapshot; two busy cores add slack.
SWEEP_BOUND = SWEEP_SECONDS + 1.0 + 3.0
PUBLISH_TIMEOUT_SECONDS = 5.0  # the Redis broker's read timeout on a publish


async def start_cluster(
    pool: ServerPool, redis_urls: Sequence[str], **overrides: Any
) -> list[Server]:
    """`campana serve` processes on the test PostgreSQL, one per Redis URL given."""
    options = {"sweep_seconds": SWEEP_SECONDS, **overrides}
    return list(
        await asyncio.gather(
            *(pool.start("postgresql", "process", redis_url=url, **options) for url in redis_urls)
        )
    )


@contextlib.asynccontextmanager
async def open_tabs(user: str, *on: Server) -> AsyncIterator[list[Tab]]:
    """One tab of ``user`` on each server given, opened and then read continuously."""
    async with contextlib.AsyncExitStack() as stack:
        tabs = [await stack.enter_async_context(server.connect(user)) for server in on]
        for tab in tabs:
            await tab.start()
            tab.follow()
        yield tabs


async def truth(server: Server, user: str) -> tuple[list[dict[str, Any]], int]:
    """The user's 20 newest items and unread count, as the database holds them."""
    listed = await server.http.get("/api/v1/notifications/?limit=20", headers=server.auth(user))
    assert listed.status_code == 200, listed.text
    return listed.json(), await server.unread_count(user)


async def converge(
    name: str, tabs: Sequence[Tab], server: Server, user: str, *, since: float, within: float
) -> float:
    """Wait until every tab holds the truth; record and return the seconds since ``since``."""
    newest, count = await truth(server, user)
    while not all(tab.view.agrees_with(newest, count) for tab in tabs):
        if time.monotonic() - since > within:
            shown = [
                (tab.view.unread_count, sum(item["id"] not in tab.view.items for item in newest))
                for tab in tabs
            ]
            pytest.fail(
                f"after {within:.1f} s the tabs show (badge, items missing) {shown}; "
                f"the database has {count} unread"
            )
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - since
    assert all(tab.is_open for tab in tabs), "a tab had to reconnect"
    STALENESS[name] = elapsed
    return elapsed


class Traffic:
    """Creates and reads of one user through several instances, until stopped."""

    def __init__(self, user: str, through: Sequence[Server], *, tolerate: Sequence[Server] = ()):
        self._user = user
        self._through = through
        self._tolerate = tolerate  # instances that may die meanwhile
        self._created: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def start(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        for step in itertools.count():
            server = random.choice(self._through)
            try:
                if step % 3 == 2 and self._created:
                    answer = await server.mark_read(self._user, random.choice(self._created[-10:]))
                    assert answer.status_code == 200, answer.text
                else:
                    self._created.append((await server.send(self._user, f"n{step}"))["id"])
                self.writes += 1
            except (httpx.TransportError, AssertionError):
                if server not in self._tolerate:
                    raise
            await asyncio.sleep(0.03)


async def test_creates_after_an_idle_redis_restart_reach_every_tab_at_once(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    """Each instance's publisher holds a pooled connection that the restart made stale."""
    # A sweep too slow to help: the publish itself must get through.
    first, second = await start_cluster(server_pool, [spare_redis.url] * 2, sweep_seconds=300)
    async with open_tabs(user, first, second) as tabs:
        await first.send(user, "before, through the first")
        await second.send(user, "before, through the second")
        await converge("warm-up", tabs, first, user, since=time.monotonic(), within=5)

        spare_redis.shutdown_nosave()
        spare_redis.start()
        # Both subscribers are back once they have resent the state to their tabs.
        await until(lambda: all(tab.view.snapshots >= 2 for tab in tabs), within=15)

        since = time.monotonic()
        await first.send(user, "after, through the first")
        await second.send(user, "after, through the second")
        await converge(
            "idle Redis restart, then a create on each instance",
            tabs,
            first,
            user,
            since=since,
            within=2.0,
        )
    assert "publishing" not in logs_of(first, second)  # the retry got both through


async def test_tabs_converge_when_redis_is_killed_and_restarted_under_traffic(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    first, second = await start_cluster(server_pool, [spare_redis.url] * 2)
    async with open_tabs(user, first, first, second, second) as tabs:
        traffic = Traffic(user, (first, second)).start()
        await asyncio.sleep(1.0)
        spare_redis.kill()
        await asyncio.sleep(1.5)  # REST keeps storing meanwhile: Traffic asserts 201 and 200
        spare_redis.start()
        await asyncio.sleep(0.5)
        await traffic.stop()
        since = time.monotonic()
        await converge(
            "Redis killed and restarted under traffic",
            tabs,
            first,
            user,
            since=since,
            within=SWEEP_BOUND,
        )
    assert traffic.writes > 20


async def test_tabs_converge_after_redis_is_paused_past_the_publish_timeout(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    first, second = await start_cluster(server_pool, [spare_redis.url] * 2)
    seed = await first.send(user, "before the pause")
    async with open_tabs(user, first, second) as tabs:
        spare_redis.pause()
        try:
            writes = asyncio.gather(
                first.send(user, "during the pause, through the first"),
                second.send(user, "during the pause, through the second"),
                second.mark_read(user, seed["id"]),
            )
            await asyncio.sleep(PUBLISH_TIMEOUT_SECONDS + 1.0)
        finally:
            spare_redis.resume()
        since = time.monotonic()
        await writes
        await converge(
            "Redis paused past the publish timeout",
            tabs,
            first,
            user,
            since=since,
            within=SWEEP_BOUND,
        )
    # The fault was the one intended: a publish gave up on a Redis that did not answer.
    assert "BrokerTimeout" in logs_of(first, second)


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_a_publish_lost_on_its_way_to_redis_still_reaches_the_other_instance(
    server_pool: ServerPool, spare_redis: RedisServer, user: str, fault: str
) -> None:
    """The first instance reaches Redis through a proxy that loses its publish."""
    proxy = await TcpProxy("127.0.0.1", spare_redis.port).start()
    try:
        first, second = await start_cluster(
            server_pool, [proxy.url_for(spare_redis.url), spare_redis.url]
        )
        async with open_tabs(user, first, second, second) as tabs:
            if fault == "cut":
                proxy.cut()
                await first.send(user, "created while the link to Redis is cut")
            else:
                proxy.stall()
                create = asyncio.ensure_future(first.send(user, "created while the link stalls"))
                await asyncio.sleep(PUBLISH_TIMEOUT_SECONDS + 0.5)
                proxy.cut()  # what was held back is gone with the connections
                await create
            await second.send(user, "created through the second meanwhile")
            proxy.restore()
            since = time.monotonic()
            await converge(
                f"link to Redis {fault}: one publish lost",
                tabs,
                second,
                user,
                since=since,
                within=SWEEP_BOUND,
            )
        assert "publishing 3 events failed" in logs_of(first)
    finally:
        await proxy.close()


async def test_a_tab_opened_while_its_instance_connects_to_redis_gets_live_events(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    """The tab's user is wanted while the subscriber's connection is being made: the
    subscription must include it, or its live events stop at this instance for good."""
    proxy = await TcpProxy("127.0.0.1", spare_redis.port).start()
    try:
        proxy.stall()  # the subscriber's handshake hangs from the start
        [server] = await start_cluster(
            server_pool, [proxy.url_for(spare_redis.url)], sweep_seconds=300
        )
        async with open_tabs(user, server) as tabs:
            proxy.restore()
            # The instance reaches Redis and resends the state to its tab.
            await until(lambda: tabs[0].view.snapshots >= 2, within=10)
            since = time.monotonic()
            await server.send(user, "after the instance reached Redis")
            await converge(
                "a tab opened while its instance connected to Redis",
                tabs,
                server,
                user,
                since=since,
                within=2.0,
            )
    finally:
        await proxy.close()


async def test_a_change_committed_by_a_process_that_died_before_publishing_reaches_every_tab(
    server_pool: ServerPool, user: str
) -> None:
    first, second = await start_cluster(server_pool, [server_pool.redis_url] * 2)
    item = await first.send(user, "published as usual")
    async with open_tabs(user, first, second) as tabs:
        # This test process commits as a Campana process does, then "dies": no publish.
        engine = create_async_engine(POSTGRES_URL)
        try:
            async with store.create_sessionmaker(engine).begin() as session:
                await store.add_notifications(session, [_new_row(user, "never published")])
                read = await store.change_notification(
                    session, user, uuid.UUID(item["id"]), store.Action.READ
                )
                assert read is not None and read.badge is not None
        finally:
            await engine.dispose()
        since = time.monotonic()
        await converge(
            "a commit whose process died before publishing",
            tabs,
            first,
            user,
            since=since,
            within=SWEEP_BOUND,
        )


async def test_tabs_on_the_surviving_instance_converge_after_the_other_is_killed(
    server_pool: ServerPool, user: str
) -> None:
    first, second = await start_cluster(server_pool, [server_pool.redis_url] * 2)
    assert first.process is not None
    async with open_tabs(user, first, second, second) as tabs:
        traffic = Traffic(user, (first, second), tolerate=(first,)).start()
        await asyncio.sleep(1.0)
        first.process.kill()
        await asyncio.sleep(0.5)
        await traffic.stop()
        since = time.monotonic()
        await converge(
            "an instance SIGKILLed mid-traffic",
            tabs[1:],
            second,
            user,
            since=since,
            within=SWEEP_BOUND,
        )
        assert not tabs[0].is_open


@contextlib.asynccontextmanager
async def behind_a_postgres_proxy(pool: ServerPool) -> AsyncIterator[tuple[Server, TcpProxy]]:
    """A server whose PostgreSQL is reached through a proxy the test can cut or stall."""
    postgres = make_url(POSTGRES_URL)
    proxy = await TcpProxy(postgres.host or "127.0.0.1", postgres.port or 5432).start()
    try:
        [server] = await start_cluster(
            pool,
            [pool.redis_url],
            database_url=proxy.url_for(POSTGRES_URL),
            database_timeout_seconds=2.0,
        )
        yield server, proxy
    finally:
        await proxy.close()


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_rest_answers_503_while_postgresql_is_unreachable_and_works_again_after(
    server_pool: ServerPool, user: str, fault: str
) -> None:
    async with behind_a_postgres_proxy(server_pool) as (server, proxy):
        seed = await server.send(user, "before the outage")
        async with open_tabs(user, server) as tabs:
            proxy.cut() if fault == "cut" else proxy.stall()
            calls = {
                "list": server.http.get("/api/v1/notifications/", headers=server.auth(user)),
                "count": server.http.get(
                    "/api/v1/notifications/unread-count", headers=server.auth(user)
                ),
                "read": server.mark_read(user, seed["id"]),
                # Several at once: they share one transaction, and each must get its 503
                # after one timeout, not one after another.
                **{
                    f"create-{i}": server.http.post(
                        "/api/v1/notifications/",
                        json={"user_id": user, "type": "GENERIC_INFO", "message": f"lost? {i}"},
                        headers=server.producer,
                    )
                    for i in range(5)
                },
            }
            started = time.monotonic()
            answers = dict(zip(calls, await asyncio.gather(*calls.values()), strict=True))
            # A stalled link costs a pooled connection's check and a new connection's try.
            assert time.monotonic() - started < 2 * 2.0 + 1.5
            for answer in answers.values():
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == "database_unavailable"
                assert answer.headers["retry-after"]
            ready = await server.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["failed"] == ["database"]

            proxy.restore()
            since = time.monotonic()
            await until_ok(lambda: server.http.get("/readyz"), timeout=10)
            after = await server.send(user, "after the outage")
            assert (await server.mark_read(user, seed["id"])).status_code == 200
            await converge(f"PostgreSQL {fault}", tabs, server, user, since=since, within=10)
            assert after["id"] in tabs[0].view.items


async def test_pooled_connections_dropped_while_idle_are_replaced_without_an_error(
    server_pool: ServerPool, user: str
) -> None:
    """A restart or a proxy's idle timeout drops connections that wait in the pool; the
    next calls get new ones (checked because they waited), not a 503."""
    async with behind_a_postgres_proxy(server_pool) as (server, proxy):
        # Several calls at once leave several connections in the pool.
        await asyncio.gather(*(server.send(user, f"warm {i}") for i in range(4)))
        proxy.cut()
        proxy.restore()
        await asyncio.sleep(store.IDLE_CHECK_SECONDS + 0.2)  # what makes a pooled one checked
        answers = await asyncio.gather(
            server.http.get("/api/v1/notifications/", headers=server.auth(user)),
            server.http.get("/api/v1/notifications/unread-count", headers=server.auth(user)),
            server.http.post(
                "/api/v1/notifications/",
                json={"user_id": user, "type": "GENERIC_INFO", "message": "after the drop"},
                headers=server.producer,
            ),
        )
        assert [answer.status_code for answer in answers] == [200, 200, 201], answers[-1].text
        count = await server.http.get(
            "/api/v1/notifications/unread-count", headers=server.auth(user)
        )
        assert count.json() == {"count": 5}


def logs_of(*servers: Server) -> str:
    return "".join(server.log() for server in servers)


@pytest.mark.parametrize(
    ("sqlstate", "refusal"),
    [
        ("57P03", "the database system is starting up"),
        ("57P01", "terminating connection due to administrator command"),
        ("53300", "sorry, too many clients already"),
    ],
)
async def test_a_postgresql_that_refuses_sessions_for_now_is_a_503(
    server_pool: ServerPool, user: str, sqlstate: str, refusal: str
) -> None:
    """What PostgreSQL answers while it restarts, fails over or is full."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            if body[:4] == struct.pack("!I", 80877103):  # SSLRequest: no
                writer.write(b"N")
                continue
            fields = b"".join(
                kind + value.encode() + b"\0"
                for kind, value in ((b"S", "FATAL"), (b"C", sqlstate), (b"M", refusal))
            )
            writer.write(b"E" + struct.pack("!I", len(fields) + 5) + fields + b"\0")
            writer.close()
            return

    fake = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    try:
        server = await server_pool.start(
            "postgresql",
            "inprocess",
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test",
        )
        answer = await server.http.get(
            "/api/v1/notifications/unread-count", headers=server.auth(user)
        )
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "database_unavailable"
    finally:
        fake.close()


async def until_ok(call: Callable[[], Any], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await call()).status_code != 200:
        assert time.monotonic() < deadline, "still not ready"
        await asyncio.sleep(0.1)


def _new_row(user_id: str, message: str) -> store.NewNotification:
    return store.NewNotification(
        id=uuid.uuid4(),
        user_id=user_id,
        type="GENERIC_INFO",
        message=message,
        link_url=None,
        is_read=False,
        created_at=datetime.now(UTC),
    )


async def test_a_message_campana_did_not_write_is_ignored_and_delivery_goes_on(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    """Another program publishes on the user's channel and on the broadcast channel."""
    [instance] = await start_cluster(server_pool, [spare_redis.url])
    async with instance.connect(user) as tab:
        await tab.start()
        redis = Redis.from_url(spare_redis.url)
        try:
            assert await redis.publish(f"campana:user:{user}", b"not ours") == 1
            assert await redis.publish("campana:batch", b'[["' + user.encode() + b'", 1]]') == 1
        finally:
            await redis.aclose()
        await instance.assert_quiet(tab, user)  # the next frame is a real notification
        assert tab.is_open
    logs = logs_of(instance)
    assert f"ignored a message on campana:user:{user}: not JSON" in logs
    assert "ignored a message on campana:batch: an event is not a record of six fields" in logs
    assert "Traceback" not in logs
