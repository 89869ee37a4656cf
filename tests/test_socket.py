"""The WebSocket as a browser tab sees it: frames in order, close codes, limits.

A test taking ``socket_server`` runs five times, once in each of ``SOCKET_SETUPS``.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime
from typing import Any

import pytest

from .support.frames import read_frame
from .support.handshakes import ACCEPT, UpgradeHead, bad_upgrades, upgrade_head
from .support.servers import ALLOWED_ORIGIN, Server, ServerPool
from .support.tokens import BAD_TOKENS


async def test_socket_opens_with_snapshot_newest_first_then_unread_count(
    socket_server: Server, user: str
) -> None:
    first = await socket_server.send(user, "first")
    second = await socket_server.send(user, "second")
    await socket_server.mark_read(user, first["id"])

    async with socket_server.connect(user) as tab:
        items, count = await tab.start()

    assert [item["id"] for item in items] == [second["id"], first["id"]]
    assert items[0] == second
    assert items[1]["is_read"] is True
    assert count == 1


async def test_snapshot_holds_at_most_the_twenty_newest(socket_server: Server, user: str) -> None:
    sent = [await socket_server.send(user, f"n{i}") for i in range(23)]

    async with socket_server.connect(user) as tab:
        items, count = await tab.start()

    assert [item["id"] for item in items] == [item["id"] for item in reversed(sent[-20:])]
    assert count == 23


@pytest.mark.parametrize("token", [pytest.param(bad.token, id=bad.name) for bad in BAD_TOKENS])
async def test_bad_token_is_accepted_then_closed_with_4401(
    socket_server: Server, token: str | None
) -> None:
    async with socket_server.connect_raw("" if token is None else f"?token={token}") as tab:
        assert await tab.close_code() == 4401
    assert tab.received == []


async def test_origin_outside_the_allow_list_is_closed_with_4403(
    socket_server: Server, user: str
) -> None:
    async with socket_server.connect(user, origin="http://evil.example") as tab:
        assert await tab.close_code() == 4403
    async with socket_server.connect(user, origin=ALLOWED_ORIGIN) as tab:
        await tab.start()


async def test_created_reaches_every_socket_of_the_user_and_no_one_else(
    socket_server: Server, user: str
) -> None:
    async with (
        socket_server.connect(user) as tab_one,
        socket_server.connect(user) as tab_two,
        socket_server.connect(user + "-other") as stranger,
    ):
        for tab in (tab_one, tab_two, stranger):
            await tab.start()
        item = await socket_server.send(user, "campaign scheduled", type="CAMPAIGN_SCHEDULED")

        for tab in (tab_one, tab_two):
            assert await tab.next_event() == {"event": "notification.created", "payload": item}
            assert await tab.next_event() == {
                "event": "unread_count.updated",
                "payload": {"count": 1},
            }
        await socket_server.assert_quiet(stranger, user + "-other")


async def test_mark_read_sends_read_then_count_and_only_on_a_real_change(
    socket_server: Server, user: str
) -> None:
    """The guide's pair, then the item's whole new state (a guide client ignores it)."""
    item = await socket_server.send(user)
    async with socket_server.connect(user) as tab:
        await tab.start()

        assert (await socket_server.mark_read(user, item["id"])).status_code == 200
        assert await tab.next_event() == {
            "event": "notification.read",
            "payload": {"id": item["id"], "is_read": True},
        }
        assert await tab.next_event() == {"event": "unread_count.updated", "payload": {"count": 0}}
        assert await tab.next_event() == {
            "event": "notification.updated",
            "payload": {**item, "is_read": True, "is_seen": True},
        }

        assert (await socket_server.mark_read(user, item["id"])).status_code == 200
        await socket_server.assert_quiet(tab, user)


async def test_read_all_sends_one_count_of_zero_and_no_per_item_events(
    socket_server: Server, user: str
) -> None:
    items = [await socket_server.send(user, f"n{i}") for i in range(3)]
    async with socket_server.connect(user) as tab:
        await tab.start()
        answer = await socket_server.http.post(
            "/api/v1/notifications/read-all", headers=socket_server.auth(user)
        )
        assert answer.json() == {"count": 0, "changed": 3, "done": True}
        newest = max(
            items, key=lambda item: (datetime.fromisoformat(item["created_at"]), item["id"])
        )

        assert await tab.next_event() == {"event": "unread_count.updated", "payload": {"count": 0}}
        # What changed, for clients that hold items (a guide client ignores it).
        assert await tab.next_event() == {
            "event": "notifications.changed",
            "payload": {
                "change": {"is_read": True, "is_seen": True},
                "filter": {
                    "archived": False,
                    "types": None,
                    "is_read": None,
                    # Where it stopped: the newest item when it began.
                    "up_to": {"id": newest["id"], "created_at": newest["created_at"]},
                },
            },
        }
        # Then the inbox again, as the database has it after the change.
        snapshot = await tab.next_event()
        assert snapshot["event"] == "snapshot"
        assert [item["is_read"] for item in snapshot["payload"]] == [True] * 3
        assert await tab.next_event() == {"event": "unread_count.updated", "payload": {"count": 0}}
        await socket_server.assert_quiet(tab, user)


async def test_each_ping_is_answered_with_a_keepalive(
    hour_keepalive_socket_server: Server, user: str
) -> None:
    server = hour_keepalive_socket_server
    async with server.connect(user) as tab:
        await tab.start()
        await tab.send("ping")
        await tab.send("ping")
        for _ in range(2):
            frame = await tab.next_event(timeout=2, keepalive=True)
            assert frame == {"event": "keepalive", "payload": {}}


async def test_other_client_frames_are_ignored(socket_server: Server, user: str) -> None:
    async with socket_server.connect(user) as tab:
        await tab.start()
        for frame in ("hello", '{"event": "snapshot"}', b"\x00\x01"):
            await tab.send(frame)
        await socket_server.assert_quiet(tab, user)


@pytest.mark.parametrize("mode", ["inprocess", "process"])
async def test_keepalive_arrives_every_period_without_client_traffic(
    server_pool: ServerPool, user: str, mode: str
) -> None:
    server = await server_pool.get("sqlite", mode, keepalive_seconds=0.5)
    async with server.connect(user) as tab:
        await tab.start()
        started = time.monotonic()
        for _ in range(2):
            assert await tab.next_event(timeout=2, keepalive=True) == {
                "event": "keepalive",
                "payload": {},
            }
        assert time.monotonic() - started < 2.5


async def test_socket_is_closed_with_4401_when_its_token_expires(
    socket_server: Server, user: str
) -> None:
    async with socket_server.connect(user, token=socket_server.token(user, ttl=2)) as tab:
        await tab.start()
        started = time.monotonic()
        assert await tab.close_code(timeout=6) == 4401
    assert time.monotonic() - started < 4


async def test_frame_over_4_kib_is_closed_with_1009(
    hour_keepalive_socket_server: Server, user: str
) -> None:
    async with hour_keepalive_socket_server.connect(user) as tab:
        await tab.start()
        await tab.send("x" * 4096)  # at the limit: allowed, the socket still answers a ping
        await tab.send("ping")
        assert (await tab.next_event(timeout=2, keepalive=True))["event"] == "keepalive"
        await tab.send("x" * 4097)
        assert await tab.close_code() == 1009


async def test_a_flood_of_frames_is_closed_with_1008(socket_server: Server, user: str) -> None:
    async with socket_server.connect(user) as tab:
        await tab.start()
        for _ in range(100):
            await tab.send("hello")
        assert await tab.close_code() == 1008


async def test_no_gap_between_snapshot_and_live_events_while_creating(
    socket_server: Server, user: str
) -> None:
    """Tabs open while items are being created each hold a gapless, complete tail."""
    created: list[str] = []
    stop = asyncio.Event()

    async def produce() -> None:
        for i in range(60):
            created.append((await socket_server.send(user, f"n{i}"))["id"])
        stop.set()

    async def open_tab(delay: float) -> set[str]:
        await asyncio.sleep(delay)
        async with socket_server.connect(user) as tab:
            items, _ = await tab.start()
            known = {item["id"] for item in items}
            await stop.wait()
            for frame in await tab.read_until_holds(created[-1]):  # the last one created
                if frame["event"] == "notification.created":
                    known.add(frame["payload"]["id"])
            counts = [
                f["payload"]["count"] for f in tab.received if f["event"] == "unread_count.updated"
            ]
            # Only creates happen: a count lower than one already received is a stale one.
            assert counts == sorted(counts), f"stale count after a fresher one: {counts}"
            assert counts[-1] == len(created)
            return known

    producer = asyncio.create_task(produce())
    tabs = await asyncio.gather(*(open_tab(0.05 * i) for i in range(8)))
    await producer

    for known in tabs:
        held = [item_id for item_id in created if item_id in known]
        assert held, "a tab knows nothing"
        first = created.index(held[0])
        missing = [item_id for item_id in created[first:] if item_id not in known]
        assert missing == [], f"gap: {len(missing)} items after the snapshot never arrived"
        assert created[-1] in known


async def test_badge_is_exact_after_30_concurrent_creates_and_reads(
    socket_server: Server, user: str
) -> None:
    seed = [await socket_server.send(user, f"seed{i}") for i in range(15)]
    async with socket_server.connect(user) as tab_one, socket_server.connect(user) as tab_two:
        await tab_one.start()
        await tab_two.start()

        async def create(i: int) -> Any:
            return await socket_server.send(user, f"race{i}")

        async def read(item: dict[str, Any]) -> Any:
            return await socket_server.mark_read(user, item["id"])

        jobs = [create(i) for i in range(15)] + [read(item) for item in seed]
        random.shuffle(jobs)
        await asyncio.gather(*jobs)

        truth = await socket_server.unread_count(user)
        assert truth == 15
        marker = await socket_server.send(user, "marker")
        for tab in (tab_one, tab_two):
            frames = await tab.read_until_holds(marker["id"])
            counts = [f["payload"]["count"] for f in frames if f["event"] == "unread_count.updated"]
            assert counts[-2:] == [truth, truth + 1]  # the last before the marker's own


async def test_tokens_never_reach_the_log(server_pool: ServerPool, user: str) -> None:
    server = await server_pool.get("sqlite", "process")
    token = server.token(user)
    async with server.connect(user, token=token) as tab:
        await tab.start()
    await server.http.get("/api/v1/notifications/unread-count", params={"token": token})
    log = await server.logged("/unread-count?token=[redacted]")  # the last request's line
    assert token not in log
    assert token.split(".")[2] not in log


async def test_a_stale_count_never_follows_a_fresher_one(socket_server: Server, user: str) -> None:
    """Tabs open during concurrent creates: counts only go up, and end at the truth."""
    done = asyncio.Event()
    marker: dict[str, Any] = {}

    async def produce(worker: int) -> None:
        for i in range(8):
            await socket_server.send(user, f"w{worker}-{i}")

    async def open_tab(delay: float) -> list[int]:
        await asyncio.sleep(delay)
        async with socket_server.connect(user) as tab:
            await tab.start()
            await done.wait()
            await tab.read_until_holds(marker["id"])  # created after every other
        return [f["payload"]["count"] for f in tab.received if f["event"] == "unread_count.updated"]

    tabs = [asyncio.create_task(open_tab(0.02 * i)) for i in range(10)]
    await asyncio.gather(*(produce(worker) for worker in range(8)))
    marker.update(await socket_server.send(user, "marker"))
    done.set()
    for counts in await asyncio.gather(*tabs):
        assert counts == sorted(counts), f"stale count after a fresher one: {counts}"
        # The marker's own count last, after 64 (unless the tab opened after the marker).
        assert counts[-1] == 65 and counts[-2:-1] in ([], [64])


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(upgrade_head(), 101, id="good"),
        *(
            pytest.param(case.head, case.status, id=case.name)
            for case in bad_upgrades("other-path", "no-key", "short-key", "version-8")
        ),
    ],
)
async def test_the_opening_handshake_is_checked(
    rest_server: Server, head: UpgradeHead, status: int
) -> None:
    """RFC 6455 §4.2: a bad upgrade gets a plain HTTP error; a good one the RFC's accept key."""
    host, port = rest_server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode())
    try:
        answer = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        assert answer.startswith(f"HTTP/1.1 {status} "), answer
        if status == 101:
            assert f"Sec-WebSocket-Accept: {ACCEPT}\r\n" in answer
            # The upgrade carries no token: the first frame is the close that refuses it.
            assert (await asyncio.wait_for(read_frame(reader), 10)).close_code == 4401
        if status == 426:
            assert "Sec-WebSocket-Version: 13\r\n" in answer
    finally:
        writer.close()
