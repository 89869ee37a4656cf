"""The hub's catch-up rules, driven at its seams: a socket that records the frames it is
sent, the in-process broker, and a state source whose reads the test can hold back.

Integration tests (test_faults.py) show that tabs converge after real faults; these pin
down the order of frames a tab receives while it catches up, which timing there cannot.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from campana import hub as hub_module
from campana.broker import InProcessBroker
from campana.connection import GAP_WAIT_SECONDS, Connection, Delivery, SocketLimits
from campana.hub import Hub, Refused
from campana.models import COUNTED_TYPES
from campana.protocol import (
    Event,
    count_event,
    counts_event,
    created_event,
    read_event,
    snapshot_event,
    version_event,
)

from .support.frames import split_frames
from .support.waits import until

LIMITS = SocketLimits(send_queue_size=64, per_user=20, per_process=100)


class RecordingSocket:
    """A socket that takes every frame and keeps what a tab would receive."""

    def __init__(self) -> None:
        self.writable = True
        self.frames: list[dict[str, Any]] = []
        self.closes: list[int] = []  # every close frame asked for, in order

    def write(self, wire: bytes) -> None:
        frames, rest = split_frames(wire)  # one write may carry several frames
        assert rest == b"", f"a write ending in a part of a frame: {wire!r}"
        self.frames.extend(frame.json() for frame in frames)

    def close_with(self, code: int) -> None:
        self.closes.append(code)

    @property
    def closed_with(self) -> int | None:
        return self.closes[-1] if self.closes else None

    @property
    def events(self) -> list[str]:
        return [frame["event"] for frame in self.frames if frame["event"] != "keepalive"]


class UserState:
    """The hub's state source over what the database holds for the users (``committed``
    versions); ``hold()`` makes reads wait for ``release()``."""

    def __init__(self) -> None:
        self.committed: dict[str, int] = {}
        self.loads = 0  # reads of a socket's state begun
        self.version_reads = 0  # reads of every user's version (the sweep's)
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def load_opening(self, user_id: str) -> list[Event]:
        version = self.committed.get(user_id, 0)  # read when the request comes, as SQL does
        self.loads += 1
        await self._open.wait()
        return [
            snapshot_event(user_id, version, [{"v": version}]),
            count_event(user_id, version, version),
            counts_event(user_id, version, every_count(version)),
        ]

    async def versions(self, user_ids: Sequence[str]) -> dict[str, int]:
        self.version_reads += 1
        return {user_id: self.committed.get(user_id, 0) for user_id in user_ids}


@pytest.fixture
def state() -> UserState:
    return UserState()


@pytest.fixture
async def hub(state: UserState) -> AsyncIterator[Hub]:
    hub = Hub(InProcessBroker(), state, keepalive_seconds=3600, sweep_seconds=3600, limits=LIMITS)
    await hub.start()
    yield hub
    for connection in OPENED.pop(hub, []):
        hub.detach(connection)  # as the socket layer does once the transport is gone
    await hub.close(0.1)


OPENED: dict[Hub, list[Connection]] = {}


async def open_tab(
    hub: Hub, user_id: str = "u", *, counts: bool = False
) -> tuple[Connection, RecordingSocket]:
    socket = RecordingSocket()
    connection = hub.attach(socket, user_id=user_id, expires_at=time.time() + 3600, counts=counts)
    assert isinstance(connection, Connection)
    OPENED.setdefault(hub, []).append(connection)
    await hub.open(connection)
    return connection, socket


def created(version: int, user_id: str = "u") -> list[Event]:
    item = {"id": f"item-{version}"}
    return [created_event(user_id, version, item), count_event(user_id, version, version)]


def every_count(unread: int) -> list[int]:
    """A badge's numbers: ``unread`` items, unseen, all of them of the first type."""
    return [unread, unread, unread, unread, *[0] * 12]


def with_counts(events: list[Event]) -> list[Event]:
    """The events of a change followed by every count, as the server publishes them."""
    last = events[-1]
    return [*events, counts_event(last.user_id, last.version, every_count(last.version))]


def read(version: int, user_id: str = "u") -> list[Event]:
    return [
        read_event(user_id, version, uuid.UUID(int=version)),
        count_event(user_id, version, version),
    ]


def counts(socket: RecordingSocket) -> list[int]:
    return [f["payload"]["count"] for f in socket.frames if f["event"] == "unread_count.updated"]


async def until_live(*connections: Connection, within: float = 1.0) -> None:
    """Until each connection's reload (or wait for a version) is over: its frames are sent."""
    await until(
        lambda: all(c.delivery is Delivery.LIVE for c in connections),
        within=within,
        what="every connection live",
    )


async def test_a_live_event_during_a_reload_follows_the_snapshot_read_before_it(
    hub: Hub, state: UserState
) -> None:
    """A snapshot read before an event must not reach the tab after that event."""
    state.committed["u"] = 1
    connection, socket = await open_tab(hub)
    state.hold()
    hub.resync()  # the broker came back: every socket's state is read again
    await until(lambda: state.loads == 2, what="the read began")  # it sees version 1
    state.committed["u"] = 2
    hub.deliver(read(2))  # a change committed after the read began
    assert socket.events == ["snapshot", "unread_count.updated"]
    state.release()
    await until_live(connection)
    assert socket.events[2:] == [
        *("snapshot", "unread_count.updated"),
        *("notification.read", "unread_count.updated"),
    ]
    assert counts(socket) == [1, 1, 2]


async def test_a_snapshot_older_than_what_the_tab_was_sent_is_dropped(
    hub: Hub, state: UserState
) -> None:
    connection, socket = await open_tab(hub)
    hub.deliver(created(1))
    state.committed["u"] = 0  # an impossible read from the past: it must not reach the tab
    connection.reload("test")
    await until_live(connection)
    assert socket.events == [
        *("snapshot", "unread_count.updated"),
        *("notification.created", "unread_count.updated"),
    ]
    assert connection.delivery is Delivery.LIVE


async def test_an_event_sent_already_is_dropped_and_a_count_never_repeats(
    hub: Hub, state: UserState
) -> None:
    state.committed["u"] = 3
    connection, socket = await open_tab(hub)
    hub.deliver(created(3))  # its item is in the snapshot: a duplicate the contract allows
    hub.deliver(created(4))
    hub.deliver(created(4))  # delivered twice (a publish retried after a timeout)
    assert socket.events[2:] == [
        "notification.created",
        *("notification.created", "unread_count.updated"),
    ]
    assert counts(socket) == [3, 4]
    assert connection.version == 4


async def test_two_instances_publishing_out_of_order_reach_the_tab_in_version_order(
    hub: Hub, state: UserState
) -> None:
    connection, socket = await open_tab(hub)
    hub.deliver(created(2))  # overtook version 1
    assert socket.events == ["snapshot", "unread_count.updated"]
    assert connection.delivery is Delivery.WAITING
    hub.deliver(created(1))
    ids = [f["payload"]["id"] for f in socket.frames if f["event"] == "notification.created"]
    assert ids == ["item-1", "item-2"]
    assert counts(socket) == [0, 1, 2]  # each version whole, in order: both counts go out
    assert state.loads == 1  # no reload was needed


async def test_a_version_still_missing_after_the_wait_reloads_the_tab(
    hub: Hub, state: UserState
) -> None:
    connection, socket = await open_tab(hub)
    state.committed["u"] = 2
    hub.deliver(created(2))  # version 1 was lost with its publish
    await until_live(connection, within=GAP_WAIT_SECONDS + 2)  # the wait, then the reload
    assert state.loads == 2
    # The snapshot holds version 2; its event follows all the same (a snapshot holds only
    # the newest items), its count does not.
    assert socket.events[2:] == ["snapshot", "unread_count.updated", "notification.created"]
    assert counts(socket) == [0, 2]
    assert connection.delivery is Delivery.LIVE


async def test_a_notice_reloads_a_tab_behind_it_and_not_one_that_is_up_to_date(
    hub: Hub, state: UserState
) -> None:
    state.committed["u"] = 1
    behind_connection, behind = await open_tab(hub, "u")
    state.committed["v"] = 5
    current_connection, current = await open_tab(hub, "v")
    state.committed["u"] = 4
    hub.deliver([version_event("u", 4), version_event("v", 5)])
    await until_live(behind_connection, current_connection)
    assert behind.events[2:] == ["snapshot", "unread_count.updated"]
    assert counts(behind) == [1, 4]
    assert current.events == ["snapshot", "unread_count.updated"]
    assert state.loads == 3


async def test_the_sweep_reloads_only_tabs_behind_the_database(
    hub: Hub, state: UserState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "SWEEP_GRACE_SECONDS", 0.05)
    state.committed.update({"up-to-date": 5, "behind": 5, "in-flight": 5})
    tabs = {user: await open_tab(hub, user) for user in state.committed}
    state.committed.update({"behind": 7, "in-flight": 6})  # committed, never published
    sweep = asyncio.ensure_future(hub.sweep())
    await until(lambda: state.version_reads == 1, what="the sweep read the versions")
    hub.deliver(created(6, "in-flight"))  # published: arrives within the grace
    assert await sweep == 1
    await until_live(*(connection for connection, _ in tabs.values()))
    assert counts(tabs["behind"][1]) == [5, 7]
    assert tabs["behind"][1].events[2:] == ["snapshot", "unread_count.updated"]
    assert counts(tabs["in-flight"][1]) == [5, 6]
    assert tabs["up-to-date"][1].events == ["snapshot", "unread_count.updated"]


async def test_a_failed_reload_sends_what_waited_and_leaves_the_tab_to_the_sweep(
    hub: Hub, state: UserState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "SWEEP_GRACE_SECONDS", 0.05)
    connection, socket = await open_tab(hub)

    async def unreachable(user_id: str) -> list[Event]:
        raise OSError("database unreachable")

    load = state.load_opening
    state.load_opening = unreachable  # type: ignore[method-assign]
    hub.deliver(created(2))
    await until_live(connection, within=GAP_WAIT_SECONDS + 2)  # the wait, the failed reload
    assert socket.events[2:] == ["notification.created", "unread_count.updated"]
    assert connection.is_behind(2)  # it may lack version 1

    state.load_opening = load  # type: ignore[method-assign]
    state.committed["u"] = 2
    assert await hub.sweep() == 1
    await until_live(connection)
    assert socket.events[4:] == ["snapshot", "unread_count.updated"]
    assert counts(socket) == [0, 2, 2]  # a count after every snapshot, never an older one
    assert not connection.is_behind(2)


async def test_a_reload_asked_for_while_one_is_read_reads_again(hub: Hub, state: UserState) -> None:
    """The broker came back while a socket's state was being read: that read may predate
    what was published during the outage, so it is read once more."""
    connection, socket = await open_tab(hub)
    state.hold()
    connection.reload("test")
    await until(lambda: state.loads == 2, what="the read began")
    state.committed["u"] = 3  # published while the broker was away
    hub.resync()
    state.release()
    await until_live(connection)
    assert state.loads == 3
    assert counts(socket) == [0, 3]


def snapshot_versions(socket: RecordingSocket) -> list[int]:
    return [f["payload"][0]["v"] for f in socket.frames if f["event"] == "snapshot"]


async def test_a_snapshot_queued_behind_a_paused_transport_never_follows_a_newer_one(
    hub: Hub, state: UserState
) -> None:
    connection, socket = await open_tab(hub)
    socket.writable = False  # the client stopped reading for a moment
    state.committed["u"] = 1
    hub.resync()
    await until_live(connection)  # snapshot 1 and its count wait on the transport
    state.committed["u"] = 2
    hub.resync()
    await until_live(connection)  # snapshot 2 goes in front of them
    socket.writable = True
    connection.flush()  # resume_writing
    assert snapshot_versions(socket) == [0, 2]
    assert counts(socket) == [0, 2]


async def test_a_sweep_leaves_alone_a_tab_whose_frames_wait_on_its_transport(
    hub: Hub, state: UserState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "SWEEP_GRACE_SECONDS", 0.05)
    connection, socket = await open_tab(hub)
    socket.writable = False
    state.committed["u"] = 1
    hub.deliver(created(1))
    assert await hub.sweep() == 0
    socket.writable = True
    connection.flush()
    assert counts(socket) == [0, 1]
    assert state.loads == 1


async def test_a_first_snapshot_that_cannot_be_read_closes_the_socket_with_1011(
    hub: Hub, state: UserState
) -> None:
    """Even when the first read was superseded (the broker came back meanwhile) and the
    second failed: a tab never goes live without its opening frames."""
    state.hold()
    socket = RecordingSocket()
    connection = hub.attach(socket, user_id="u", expires_at=time.time() + 3600)
    assert isinstance(connection, Connection)
    OPENED.setdefault(hub, []).append(connection)
    opening = asyncio.ensure_future(hub.open(connection))
    await until(lambda: state.loads == 1, what="the first read began")
    hub.resync()

    async def unreachable(user_id: str) -> list[Event]:
        raise OSError("database unreachable")

    state.load_opening = unreachable  # type: ignore[method-assign]
    state.release()
    await opening
    await until(lambda: socket.closed_with is not None, what="a close")
    assert socket.closed_with == 1011
    assert socket.events == []


async def test_a_burst_while_waiting_for_a_version_reloads_instead_of_closing(
    hub: Hub, state: UserState
) -> None:
    connection, socket = await open_tab(hub)
    hub.deliver(created(2))  # version 1 is missing: what follows waits
    for version in range(3, 3 + LIMITS.send_queue_size):
        hub.deliver(created(version))
    state.committed["u"] = 2 + LIMITS.send_queue_size
    await until_live(connection)
    assert socket.closed_with is None
    assert counts(socket) == [0, 2 + LIMITS.send_queue_size]
    assert connection.delivery is Delivery.LIVE


async def test_changes_delivered_while_a_version_is_missing_all_reach_the_tab(
    hub: Hub, state: UserState
) -> None:
    """More changes than a snapshot holds arrive during the wait: the reload's snapshot
    shows the newest, and the events of the others still follow it."""
    connection, socket = await open_tab(hub)
    for version in range(2, 27):  # version 1 was lost with its publish
        hub.deliver(created(version))
    state.committed["u"] = 26
    await until_live(connection, within=GAP_WAIT_SECONDS + 2)  # the wait, then the reload
    ids = {f["payload"]["id"] for f in socket.frames if f["event"] == "notification.created"}
    assert ids == {f"item-{version}" for version in range(2, 27)}
    assert counts(socket)[-1] == 26


# The socket's side of the seam: backpressure, limits and closing.


async def test_a_tab_that_stops_reading_gets_its_frames_in_order_once_it_reads_again(
    hub: Hub,
) -> None:
    connection, socket = await open_tab(hub)
    socket.writable = False  # the transport's buffer is above its high-water mark
    for version in range(1, 6):
        hub.deliver(created(version))
    assert socket.events == ["snapshot", "unread_count.updated"]
    socket.writable = True
    assert connection.flush() == 10  # resume_writing
    assert counts(socket) == [0, 1, 2, 3, 4, 5]
    ids = [f["payload"]["id"] for f in socket.frames if f["event"] == "notification.created"]
    assert ids == [f"item-{version}" for version in range(1, 6)]


async def test_a_tab_whose_queue_fills_while_it_does_not_read_is_closed_1013_once(
    hub: Hub,
) -> None:
    connection, socket = await open_tab(hub)
    socket.writable = False
    for version in range(1, LIMITS.send_queue_size // 2 + 2):  # two frames a change
        hub.deliver(created(version))
    assert socket.closes == [1013]
    assert connection.closing
    socket.writable = True
    assert connection.flush() == 0  # what was queued is dropped, not sent after the close
    hub.deliver(created(LIMITS.send_queue_size))
    assert socket.events == ["snapshot", "unread_count.updated"]
    assert socket.closes == [1013]


async def test_a_count_older_than_the_one_the_tab_holds_is_dropped(hub: Hub) -> None:
    _, socket = await open_tab(hub)
    hub.deliver([count_event("u", 3, 3)])  # version 1 and 2 are missing: the count waits
    hub.deliver(created(1))
    hub.deliver([count_event("u", 2, 2)])  # ... and the count of 2 comes after that of 3
    assert counts(socket) == [0, 1, 2, 3]
    hub.deliver([count_event("u", 2, 2)])
    hub.deliver([count_event("u", 1, 1)])
    assert counts(socket) == [0, 1, 2, 3]


async def test_a_close_is_sent_once_and_nothing_follows_it(hub: Hub) -> None:
    connection, socket = await open_tab(hub)
    marker, _ = await open_tab(hub, "marker")
    connection.close(4401)
    connection.close(1013)
    connection.received("ping")
    hub.deliver(created(1))
    connection.reload("test")
    # Another tab's reload, asked for last, is read after whatever the calls above set going.
    marker.reload("marker")
    await until_live(marker)
    assert socket.closes == [4401]
    assert socket.events == ["snapshot", "unread_count.updated"]
    assert [f["event"] for f in socket.frames].count("keepalive") == 0


async def test_ping_is_answered_with_a_keepalive_behind_what_is_queued(hub: Hub) -> None:
    connection, socket = await open_tab(hub)
    socket.writable = False
    hub.deliver(created(1))
    connection.received("ping")
    connection.received("hello")  # anything else is ignored
    socket.writable = True
    connection.flush()
    assert [f["event"] for f in socket.frames][2:] == [
        *("notification.created", "unread_count.updated", "keepalive")
    ]


async def test_a_token_that_expires_closes_its_socket_with_4401(hub: Hub) -> None:
    socket = RecordingSocket()
    connection = hub.attach(socket, user_id="u", expires_at=time.time() + 0.1)
    assert isinstance(connection, Connection)
    OPENED.setdefault(hub, []).append(connection)
    await hub.open(connection)
    assert socket.closes == []
    await until(lambda: bool(socket.closes), what="the close at the token's expiry")
    assert socket.closes == [4401]


async def test_the_newest_tab_wins_and_closing_tabs_count_until_they_are_gone(
    hub: Hub,
) -> None:
    tabs = [await open_tab(hub) for _ in range(LIMITS.per_user)]
    _, newest_socket = await open_tab(hub)  # one over the cap: the oldest makes room
    assert [socket.closes for _, socket in tabs[:2]] == [[4429], []]
    assert newest_socket.closes == []
    # The closing tab has not gone yet: it counts. Another tab closes the next oldest...
    await open_tab(hub)
    assert tabs[1][1].closes == [4429]
    # ... until closing tabs alone fill the user's share: then the new tab is refused.
    for connection, _ in tabs[2:]:
        connection.close(1000)
    refused = RecordingSocket()
    assert hub.attach(refused, user_id="u", expires_at=time.time() + 3600) == Refused(4429)
    assert refused.closes == []  # the socket closes itself with the code
    assert hub.socket_count == LIMITS.per_user + 2
    for connection, _ in tabs:
        hub.detach(connection)  # their transports are gone
    assert hub.socket_count == 2
    attached = hub.attach(RecordingSocket(), user_id="u", expires_at=time.time() + 3600)
    assert isinstance(attached, Connection)


async def test_a_process_full_of_sockets_refuses_the_next_with_1013(state: UserState) -> None:
    limits = SocketLimits(send_queue_size=8, per_user=5, per_process=3)
    hub = Hub(InProcessBroker(), state, keepalive_seconds=3600, sweep_seconds=3600, limits=limits)
    await hub.start()
    attached = [
        hub.attach(RecordingSocket(), user_id=f"u{n}", expires_at=time.time() + 3600)
        for n in range(3)
    ]
    refused = RecordingSocket()
    assert hub.attach(refused, user_id="u9", expires_at=time.time() + 3600) == Refused(1013)
    assert refused.closes == []
    for connection in attached:
        assert isinstance(connection, Connection)
        hub.detach(connection)
    await hub.close(0.1)


async def test_closing_the_hub_sends_nothing_and_waits_for_the_sockets_to_go(
    hub: Hub,
) -> None:
    """The server tells each socket 1012 (SocketProtocol.shutdown), and each reports that
    it is no longer open; the hub only waits for their transports to go."""
    connection, socket = await open_tab(hub)
    OPENED[hub].remove(connection)
    connection.socket_closed()
    closing = asyncio.ensure_future(hub.close(5.0))
    await until(lambda: connection.closing, what="the close let the connection go")
    # A timed wait on purpose: that the close is still waiting, well into its grace, is
    # what only time shows (one that did not wait would be done within a few steps).
    await asyncio.sleep(0.1)
    assert not closing.done()
    hub.deliver(created(1))
    hub.detach(connection)  # the transport is gone
    await asyncio.wait_for(closing, 1.0)
    assert socket.closes == []
    assert socket.events == ["snapshot", "unread_count.updated"]


async def test_every_count_reaches_only_the_tabs_that_asked_for_it(
    hub: Hub, state: UserState
) -> None:
    """``counts.updated`` travels between processes as the badge's numbers; a tab opened
    with ``counts=1`` gets its frame after the guide's count, at the opening, live and
    after a gap; a tab opened without never gets one."""
    _, plain = await open_tab(hub)
    counting_connection, counting = await open_tab(hub, counts=True)
    hub.deliver(with_counts(created(1)))
    hub.deliver(with_counts(created(3)))  # overtook version 2: both tabs wait
    hub.deliver(with_counts(created(2)))
    await until_live(counting_connection)
    change = ["notification.created", "unread_count.updated"]
    assert plain.events == ["snapshot", "unread_count.updated", *change * 3]
    assert counting.events == [
        *("snapshot", "unread_count.updated", "counts.updated"),
        *[*change, "counts.updated"] * 3,
    ]
    every = [f["payload"] for f in counting.frames if f["event"] == "counts.updated"]
    assert [payload["unread"] for payload in every] == [0, 1, 2, 3]
    assert every[-1] == {
        "unread": 3,
        "unseen": 3,
        "by_type": {
            kind: {
                "unread": 3 if kind == "GENERIC_INFO" else 0,
                "unseen": 3 if kind == "GENERIC_INFO" else 0,
            }
            for kind in COUNTED_TYPES
        },
    }
