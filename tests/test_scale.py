"""Many processes, one PostgreSQL and one Redis; and what production does to them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .support.redis_server import RedisServer
from .support.servers import Server, ServerPool
from .support.tabs import Tab

pytestmark = pytest.mark.timeout(120)


async def cluster(pool: ServerPool) -> tuple[Server, Server]:
    """Two `campana serve` processes sharing the test PostgreSQL and Redis."""
    first = await pool.get("postgresql", "process", name="a", broker="redis")
    second = await pool.get("postgresql", "process", name="b", broker="redis")
    return first, second


async def test_every_event_crosses_instances_and_tabs_stay_in_sync(
    server_pool: ServerPool, user: str
) -> None:
    first, second = await cluster(server_pool)
    async with first.connect(user) as tab_a, second.connect(user) as tab_b:
        await tab_a.start()
        await tab_b.start()

        item = await first.send(user, "created on the first instance")
        for tab in (tab_a, tab_b):
            assert await tab.next_event() == {"event": "notification.created", "payload": item}
            assert (await tab.next_event())["payload"] == {"count": 1}

        assert (await second.mark_read(user, item["id"])).status_code == 200
        for tab in (tab_a, tab_b):
            assert await tab.next_event() == {
                "event": "notification.read",
                "payload": {"id": item["id"], "is_read": True},
            }
            assert (await tab.next_event())["payload"] == {"count": 0}

        await second.send(user, "another")
        await first.http.post("/api/v1/notifications/read-all", headers=first.auth(user))
        marker = await second.send(user, "marker")
        for tab in (tab_a, tab_b):
            frames = await tab.read_until_holds(marker["id"])
            counts = [f["payload"]["count"] for f in frames if f["event"] == "unread_count.updated"]
            assert 0 in counts  # read-all's, before the marker's count of 1
            assert counts[-1] == 1


async def test_a_broadcast_to_300_users_reaches_their_tabs_on_the_other_instance(
    server_pool: ServerPool, user: str
) -> None:
    """Big publishes travel as one Redis message that every instance sorts for its users."""
    first, second = await cluster(server_pool)
    users = [f"{user}-{i}" for i in range(300)]
    bystander = f"{user}-not-named"
    async with contextlib.AsyncExitStack() as stack:
        tabs = [await stack.enter_async_context(second.connect(u)) for u in users[::100]]
        other = await stack.enter_async_context(second.connect(bystander))
        for tab in (*tabs, other):
            await tab.start()
        answer = await first.http.post(
            "/api/v1/notifications/",
            json={"user_ids": users, "type": "GENERIC_INFO", "message": "to everyone"},
            headers=first.producer,
        )
        assert answer.status_code == 201, answer.text
        items = {item["id"] for item in answer.json()}
        for tab in tabs:
            created = await tab.next_event()
            assert created["event"] == "notification.created"
            assert created["payload"]["id"] in items
            assert await tab.next_event() == {
                "event": "unread_count.updated",
                "payload": {"count": 1},
            }
        await second.assert_quiet(other, bystander)


async def test_badge_is_exact_when_creates_and_reads_race_across_instances(
    server_pool: ServerPool, user: str
) -> None:
    first, second = await cluster(server_pool)
    seed = [await first.send(user, f"seed{i}") for i in range(15)]
    async with first.connect(user) as tab_a, second.connect(user) as tab_b:
        await tab_a.start()
        await tab_b.start()
        jobs: list[Any] = [random.choice((first, second)).send(user, f"r{i}") for i in range(15)]
        jobs += [random.choice((first, second)).mark_read(user, item["id"]) for item in seed]
        random.shuffle(jobs)
        await asyncio.gather(*jobs)

        truth = await first.unread_count(user)
        assert truth == 15
        marker = await second.send(user, "marker")
        for tab in (tab_a, tab_b):
            frames = await tab.read_until_holds(marker["id"])
            counts = [f["payload"]["count"] for f in frames if f["event"] == "unread_count.updated"]
            assert counts[-2:] == [truth, truth + 1]  # the last before the marker's own


async def test_one_subscriber_connection_per_process_for_500_users(
    server_pool: ServerPool, user: str
) -> None:
    server = await server_pool.get("postgresql", "process", name="many", broker="redis")
    assert server.process is not None
    redis_url = server.settings.redis_url
    assert redis_url is not None

    async with contextlib.AsyncExitStack() as stack:
        tabs = []
        for batch in range(10):
            opened = [server.connect(f"{user}-{batch}-{i}") for i in range(50)]
            tabs += await asyncio.gather(*(stack.enter_async_context(t) for t in opened))
        await asyncio.gather(*(tab.start() for tab in tabs))

        client = aioredis.Redis.from_url(redis_url)
        try:
            listing = await client.client_list()
        finally:
            await client.aclose()
        mine = [c for c in listing if c.get("name") == f"campana-subscriber-{server.process.pid}"]
        assert len(mine) == 1, mine
        assert int(mine[0]["sub"]) >= 500


async def test_broker_outage_keeps_rest_working_and_the_client_catches_up(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    server = await server_pool.start("postgresql", "process", redis_url=spare_redis.url)
    async with server.connect(user) as tab:
        await tab.start()
        before = await server.send(user, "before the outage")
        assert (await tab.next_event())["payload"] == before
        assert (await tab.next_event())["payload"] == {"count": 1}

        spare_redis.stop()
        during = await server.send(user, "during the outage")
        assert await server.unread_count(user) == 2
        ready = await server.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["broker"]

        spare_redis.start()
        snapshot = await tab.next_event(timeout=15)
        assert snapshot["event"] == "snapshot"
        assert [item["id"] for item in snapshot["payload"]] == [during["id"], before["id"]]
        assert await tab.next_event() == {"event": "unread_count.updated", "payload": {"count": 2}}

        after = await server.send(user, "after the outage")
        assert (await tab.next_event())["payload"] == after
    assert (await server.http.get("/readyz")).status_code == 200


async def test_a_slow_reader_is_closed_with_1013_while_others_get_everything(
    server_pool: ServerPool, user: str
) -> None:
    # The close's deadline leaves the slow tab time to read up to the close frame later.
    server = await server_pool.get(
        "sqlite", "inprocess", ws_send_queue_size=16, ws_close_timeout_seconds=60.0
    )
    # A tab that stops reading: a tiny receive window, and a client that buffers one frame.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    slow = await connect(
        f"{server.ws_url}?token={server.token(user)}", sock=raw, max_queue=1, compression=None
    )
    try:
        async with server.connect(user) as normal:
            await normal.start()

            async def read_everything(expected: set[str]) -> None:
                while expected:
                    frame = await normal.next_event(timeout=10)
                    if frame["event"] == "notification.created":
                        expected.discard(frame["payload"]["id"])

            expected: set[str] = set()
            reader = asyncio.create_task(read_everything(expected))
            message = "x" * 1900
            for start in range(0, 300, 20):
                items = await asyncio.gather(
                    *(server.send(user, f"{message}{i}") for i in range(start, start + 20))
                )
                expected.update(item["id"] for item in items)
            sent_all = time.monotonic()
            await reader
            assert time.monotonic() - sent_all < 2, "the normal tab was held up"
        frames = await _frames_until_closed(slow)
    finally:
        slow.transport.abort()
    assert slow.close_code == 1013
    assert frames < 600


async def _frames_until_closed(connection: Any) -> int:
    frames = 0
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(connection.recv(), 10)
            frames += 1
    return frames


async def test_sigterm_closes_every_socket_with_1012(server_pool: ServerPool, user: str) -> None:
    server = await server_pool.start("sqlite", "process")
    assert server.process is not None
    async with contextlib.AsyncExitStack() as stack:
        tabs: list[Tab] = [
            await stack.enter_async_context(server.connect(f"{user}-{i}")) for i in range(20)
        ]
        await asyncio.gather(*(tab.start() for tab in tabs))
        server.process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(tab.close_code() for tab in tabs))
    assert codes == [1012] * 20
    # Uvicorn re-raises the signal after its graceful shutdown, as a signalled process should.
    assert await asyncio.to_thread(server.process.wait, 15) in (0, -signal.SIGTERM)


async def test_an_instance_started_while_redis_is_down_serves_and_catches_up(
    server_pool: ServerPool, spare_redis: RedisServer, user: str
) -> None:
    spare_redis.stop()
    server = await server_pool.start("postgresql", "process", redis_url=spare_redis.url)
    async with server.connect(user) as tab:
        assert await tab.start() == ([], 0)
        item = await server.send(user, "while Redis was down")
        spare_redis.start()
        snapshot = await tab.next_event(timeout=15)
        assert snapshot == {"event": "snapshot", "payload": [item]}
        assert await tab.next_event() == {"event": "unread_count.updated", "payload": {"count": 1}}
