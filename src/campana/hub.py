"""This process's sockets: attach, detach, fan-out, keepalive, expiry, limits and catch-up.

The hub never touches the database: a socket's state (snapshot and count) comes from a
``SnapshotSource`` handed in once, read after the hub has subscribed the user, which is
what closes the gap between snapshot and live events. Nor does it hold a task per socket:
an event is encoded into a WebSocket frame once and written to each socket's transport
directly; a socket queues only while its transport is paused or its state is loading.

Every change of a user carries the next number of the user's version, and each socket
knows the version it holds, so the hub drops what a socket has already, notices what it
missed (a gap in the numbers, a notice that the user moved on, or the periodic sweep that
compares every socket with the database) and reloads that socket's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from campana import metrics
from campana.broker import Broker
from campana.connection import KEEPALIVE_SLICES, Connection, OpeningSource, Socket, SocketLimits
from campana.protocol import (
    CLOSE_TOO_MANY_SOCKETS,
    CLOSE_TRY_AGAIN_LATER,
    COUNTS_UPDATED,
    KEEPALIVE_EVENT,
    KEEPALIVE_WIRE,
    Event,
    to_wire,
)

logger = logging.getLogger(__name__)

# The sweep reads versions that may be ahead only because their events are on their way;
# it reloads a socket that is still behind them this much later.
SWEEP_GRACE_SECONDS = 1.0


class SnapshotSource(OpeningSource, Protocol):
    """A socket's state, and every user's version for the sweep (``snapshots.SnapshotLoader``)."""

    async def versions(self, user_ids: Sequence[str]) -> dict[str, int]:
        """Each user's current version, in one query."""


@dataclass(frozen=True, slots=True)
class Refused:
    """``Hub.attach``'s answer to a socket over a cap: the close code it is to send."""

    code: int


class Hub:
    """Owns the sockets of this process, the broker subscriptions they need, and their
    catch-up: reloads on a gap, on a notice, after a broker outage, and by the sweep."""

    def __init__(
        self,
        broker: Broker,
        snapshots: SnapshotSource,
        *,
        keepalive_seconds: float,
        sweep_seconds: float,
        limits: SocketLimits,
    ) -> None:
        self._broker = broker
        self._snapshots = snapshots
        self._keepalive_seconds = keepalive_seconds
        self._sweep_seconds = sweep_seconds
        self._limits = limits
        # Insertion-ordered, so the oldest socket of a user is the first key.
        self._by_user: dict[str, dict[Connection, None]] = {}
        self._subscriptions: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._socket_count = 0
        self._all_detached = asyncio.Event()

    @property
    def socket_count(self) -> int:
        return self._socket_count

    async def start(self) -> None:
        await self._broker.start(self.deliver, self.resync)
        self._loops = [
            asyncio.create_task(self._keepalive_loop()),
            asyncio.create_task(self._sweep_loop()),
        ]

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop the loops, wait up to ``grace_seconds`` for the sockets to go, close the broker.

        The sockets are closed by their owner, the server (``SocketProtocol.shutdown`` sends
        1012 to each when the stop begins, and each reports it): what is still attached
        here is only finishing its close, and is sent nothing more.
        """
        work = [*self._loops, *self._background]
        for task in work:
            task.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        if self._socket_count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_detached.wait(), grace_seconds)
        await self._broker.close()

    def deliver(self, events: Sequence[Event]) -> None:
        """Fan one publish's serialised events out to this process's sockets of their users.

        Each event is encoded into a WebSocket frame once, whatever the number of sockets,
        and a socket gets its user's frames of the publish in one write.
        """
        by_user: dict[str, list[Event]] = {}
        for event in events:
            if event.user_id in self._by_user:
                by_user.setdefault(event.user_id, []).append(event)
        sent = 0
        for user_id, user_events in by_user.items():
            # Notices have no frame; every count's is made only for a socket that asked.
            wires = [
                to_wire(event.json) if event.json and event.name != COUNTS_UPDATED else b""
                for event in user_events
            ]
            # A push may close a slow socket, which detaches later: iterate a copy.
            for connection in tuple(self._by_user[user_id]):
                sent += connection.push_all(user_events, wires)
        if sent:
            metrics.frames_delivered.inc(sent)
            if events[0].published_at:  # one instant for the whole publish
                metrics.delivery_latency.observe(time.time() - events[0].published_at)

    def resync(self) -> None:
        """Reload every socket's state: events may have been missed (a broker outage)."""
        for group in tuple(self._by_user.values()):
            for connection in tuple(group):
                connection.reload("broker")

    def attach(
        self, socket: Socket, *, user_id: str, expires_at: float, counts: bool = False
    ) -> Connection | Refused:
        """Register an accepted socket and subscribe its user, or say which cap refuses it
        (the socket closes itself with the code). ``counts``: the socket asked for
        ``counts.updated``.

        Live events queue on the connection from here on; ``open`` sends the first frames
        in front of them.
        """
        if self._socket_count >= self._limits.per_process:
            metrics.sockets_refused.labels("process_full").inc()
            return Refused(CLOSE_TRY_AGAIN_LATER)
        connection = Connection(
            socket, user_id, self._limits, expires_at, self._snapshots, counts=counts
        )
        connections = self._by_user.get(user_id)
        if connections is None:
            connections = self._by_user[user_id] = {}
            self._subscriptions[user_id] = asyncio.ensure_future(self._broker.subscribe(user_id))
        elif len(connections) >= self._limits.per_user:
            # A closing socket counts until its transport is gone (its close has a
            # deadline). The oldest open tab is the likeliest to be forgotten: it makes
            # room for the new one, unless closing ones already fill the user's share.
            metrics.sockets_refused.labels("user_full").inc()
            open_ones = [c for c in connections if not c.closing]
            if len(connections) - len(open_ones) >= self._limits.per_user or not open_ones:
                return Refused(CLOSE_TOO_MANY_SOCKETS)
            open_ones[0].close(CLOSE_TOO_MANY_SOCKETS)
        connections[connection] = None
        self._socket_count += 1
        self._all_detached.clear()
        metrics.open_sockets.inc()
        return connection

    async def open(self, connection: Connection) -> None:
        """Wait for the user's subscription, then send the snapshot and count."""
        subscription = self._subscriptions.get(connection.user_id)
        if subscription is not None:
            # Every socket of the user waits for the one subscription its first started.
            await asyncio.shield(subscription)
        await connection.load()  # a first read that fails closes it with 1011

    def detach(self, connection: Connection) -> None:
        """The socket's transport is gone: forget it (it stopped when it left the open
        state) and unsubscribe its user after the user's last socket."""
        user_id = connection.user_id
        connections = self._by_user.get(user_id)
        if connections is None or connection not in connections:
            return
        del connections[connection]
        self._socket_count -= 1
        metrics.open_sockets.dec()
        if not self._socket_count:
            self._all_detached.set()
        if connections:
            return
        del self._by_user[user_id]
        self._subscriptions.pop(user_id, None)
        self._spawn(self._broker.unsubscribe(user_id))

    async def sweep(self) -> int:
        """Reload every socket whose tab is behind the database; return how many.

        One query reads the version of every user with a socket here. A socket behind it is
        given a moment for events still on their way (published, not yet delivered) before
        its state is read again. This finds what nothing else reports: a process that died
        between commit and publish, a notice lost with its broker.
        """
        if not self._by_user:
            return 0
        started = time.perf_counter()
        versions = await self._snapshots.versions(list(self._by_user))
        metrics.sweep_duration.observe(time.perf_counter() - started)
        behind = [
            connection
            for user_id, version in versions.items()
            for connection in self._by_user.get(user_id, ())
            if connection.is_behind(version)
        ]
        if not behind:
            return 0
        await asyncio.sleep(min(SWEEP_GRACE_SECONDS, self._sweep_seconds / 2))
        behind = [c for c in behind if c.is_behind(versions[c.user_id])]
        for connection in behind:
            connection.reload("sweep")
        return len(behind)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_seconds)
            try:
                await self.sweep()
            except Exception as error:
                logger.warning(
                    "the sweep failed (%s); next one in %g s",
                    type(error).__name__,
                    self._sweep_seconds,
                )

    async def _keepalive_loop(self) -> None:
        """Each socket gets a keepalive once a period, spread over the period in slices.

        One burst to every socket at once would stall live events behind thousands of
        writes; a slice is ``1/KEEPALIVE_SLICES`` of the sockets, chosen by a stable slot.
        """
        tick = self._keepalive_seconds / KEEPALIVE_SLICES
        slot = 0
        while True:
            await asyncio.sleep(tick)
            slot = (slot + 1) % KEEPALIVE_SLICES
            for connections in tuple(self._by_user.values()):
                for connection in tuple(connections):
                    if connection.keepalive_slot == slot:
                        connection.push(KEEPALIVE_EVENT, KEEPALIVE_WIRE)
