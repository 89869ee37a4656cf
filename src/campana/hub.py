"""This process's sockets: attach, detach, fan-out, keepalive, expiry and limits.

The hub never touches the database: a socket's first frames are loaded by a callable the
caller hands in, after the hub has subscribed the user, which is what closes the gap
between snapshot and live events. Nor does it hold a task per socket: an event is
encoded into a WebSocket frame once and written to each socket's transport directly; a
socket queues only while its transport is paused or its first frames are not out yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from campana import metrics
from campana.broker import Broker
from campana.schemas import KEEPALIVE, KEEPALIVE_FRAME, Event

logger = logging.getLogger(__name__)

KEEPALIVE_EVENT = Event("", 0, KEEPALIVE, KEEPALIVE_FRAME)

# Close codes of the wire format (docs/protocol.md).
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOKEN_REFUSED = 4401
CLOSE_ORIGIN_REFUSED = 4403
CLOSE_TOO_MANY_SOCKETS = 4429

KEEPALIVE_SLICES = 25
RESYNC_CONCURRENCY = 16

LoadFirstFrames = Callable[[], Awaitable[list[Event]]]


def text_frame(text: str) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as servers send."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


KEEPALIVE_WIRE = text_frame(KEEPALIVE_FRAME)


class Socket(Protocol):
    """What the hub needs of an open WebSocket (api/ws.py provides it)."""

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is above its high-water mark."""

    def write_frame(self, frame: bytes) -> None: ...

    def close_with(self, code: int) -> None:
        """Send a close frame with ``code`` and let the socket go."""


@dataclass(frozen=True, slots=True)
class SocketLimits:
    rate_per_second: float
    burst: int
    send_queue_size: int
    per_user: int
    per_process: int


class _TokenBucket:
    """Allows ``burst`` frames at once and ``rate`` frames per second after that."""

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


_slots = itertools.count()


class Connection:
    """One open socket of a user, as the hub sees it.

    Frames go straight to the transport. They queue only until the first frames
    (snapshot, count) are out, or while the transport is paused; a socket whose queue
    is full is closed with 1013, and its snapshot restores the state when it reconnects.
    A count event whose version is not newer than the last count sent is stale and
    dropped, so the badge never moves backwards, whatever order events arrive in.
    """

    __slots__ = (
        "_bucket",
        "_closing",
        "_expiry",
        "_last_count_version",
        "_queue",
        "_queue_size",
        "_started",
        "keepalive_slot",
        "load_first_frames",
        "socket",
        "user_id",
    )

    def __init__(
        self,
        socket: Socket,
        user_id: str,
        load_first_frames: LoadFirstFrames,
        limits: SocketLimits,
        expires_at: float,
    ) -> None:
        self.socket = socket
        self.user_id = user_id
        self.load_first_frames = load_first_frames
        self._queue: deque[Event] = deque()
        self._queue_size = limits.send_queue_size
        self._bucket = _TokenBucket(limits.rate_per_second, limits.burst)
        self._started = False
        self._closing = False
        self._last_count_version = -1
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, expires_at - time.time()), self.close, CLOSE_TOKEN_REFUSED
        )
        self.keepalive_slot = next(_slots) % KEEPALIVE_SLICES

    @property
    def closing(self) -> bool:
        return self._closing

    def push(self, event: Event, frame: bytes | None = None) -> int:
        """Send ``event`` (``frame`` is its encoding, shared by every socket) or queue it.

        Returns how many frames reached the transport now: 0 or 1.
        """
        if self._closing:
            return 0
        if self._queue or not self._started or not self.socket.writable:
            if len(self._queue) >= self._queue_size:
                metrics.send_queue_overflows.inc()
                self.close(CLOSE_TRY_AGAIN_LATER)
                return 0
            self._queue.append(event)
            return 0
        return self._send(event, frame)

    def push_all(self, events: list[Event], frames: list[bytes]) -> int:
        """``push`` each event, in one write when the socket takes them at once."""
        if len(events) == 1:
            return self.push(events[0], frames[0])
        if self._closing or self._queue or not self._started or not self.socket.writable:
            return sum(self.push(e, f) for e, f in zip(events, frames, strict=True))
        fresh = [
            frame for event, frame in zip(events, frames, strict=True) if self._is_fresh(event)
        ]
        if fresh:
            self.socket.write_frame(b"".join(fresh))
        return len(fresh)

    def start(self, first_frames: list[Event]) -> None:
        """Send the first frames, then whatever queued behind them while they loaded."""
        if self._closing:  # closed (token expired, say) while the snapshot loaded
            return
        self._started = True
        self._queue.extendleft(reversed(first_frames))
        self.flush()

    def flush(self) -> None:
        """Send what is queued while the transport takes it (also on resume_writing)."""
        queue = self._queue
        while queue and self._started and not self._closing and self.socket.writable:
            self._send(queue.popleft(), None)

    def received(self, text: str | None) -> None:
        """A frame from the client: answer ``ping``, ignore the rest, close on a flood."""
        if self._closing:
            return
        if not self._bucket.take():
            self.close(CLOSE_POLICY_VIOLATION)
        elif text == "ping":
            self.push(KEEPALIVE_EVENT, KEEPALIVE_WIRE)

    def close(self, code: int) -> None:
        """Drop what is queued, stop sending, and send the close frame."""
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        self._expiry.cancel()
        self.socket.close_with(code)

    def release(self) -> None:
        """The socket is gone: nothing more is sent."""
        self._closing = True
        self._queue.clear()
        self._expiry.cancel()

    def _is_fresh(self, event: Event) -> bool:
        """False for a count not newer than the last count sent (it would move the badge
        backwards); True for everything else, and the count becomes the last one."""
        if not event.is_count:
            return True
        if event.version <= self._last_count_version:
            return False
        self._last_count_version = event.version
        return True

    def _send(self, event: Event, frame: bytes | None) -> int:
        if not self._is_fresh(event):
            return 0
        self.socket.write_frame(frame if frame is not None else text_frame(event.frame))
        return 1


class Hub:
    """Owns the sockets of this process and the broker subscriptions they need."""

    def __init__(self, broker: Broker, *, keepalive_seconds: float, limits: SocketLimits) -> None:
        self._broker = broker
        self._keepalive_seconds = keepalive_seconds
        self._limits = limits
        # Insertion-ordered, so the oldest socket of a user is the first key.
        self._by_user: dict[str, dict[Connection, None]] = {}
        self._subscriptions: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._keepalive: asyncio.Task[None] | None = None
        self._socket_count = 0
        self._all_detached = asyncio.Event()

    @property
    def socket_count(self) -> int:
        return self._socket_count

    async def start(self) -> None:
        await self._broker.start(self.deliver, self.resync)
        self._keepalive = asyncio.create_task(self._keepalive_loop())

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Close every socket with 1012, so clients go elsewhere at once, then the broker."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        for group in tuple(self._by_user.values()):
            for connection in tuple(group):
                connection.close(CLOSE_SERVICE_RESTART)
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
            frames = [text_frame(event.frame) for event in user_events]
            # A push may close a slow socket, which detaches later: iterate a copy.
            for connection in tuple(self._by_user[user_id]):
                sent += connection.push_all(user_events, frames)
        if sent:
            metrics.frames_delivered.inc(sent)
            if events[0].published_at:  # one instant for the whole publish
                metrics.delivery_latency.observe(time.time() - events[0].published_at)

    def resync(self) -> None:
        """Send every socket a fresh snapshot and count (events may have been missed)."""
        self._spawn(self._resync_all())

    def attach(
        self,
        socket: Socket,
        *,
        user_id: str,
        expires_at: float,
        load_first_frames: LoadFirstFrames,
    ) -> Connection | None:
        """Register an accepted socket and subscribe its user; ``None`` if over the cap.

        Live events queue on the connection from here on; ``open`` sends the first frames
        in front of them.
        """
        if self._socket_count >= self._limits.per_process:
            metrics.sockets_refused.labels("process_full").inc()
            socket.close_with(CLOSE_TRY_AGAIN_LATER)
            return None
        connection = Connection(socket, user_id, load_first_frames, self._limits, expires_at)
        connections = self._by_user.get(user_id)
        if connections is None:
            connections = self._by_user[user_id] = {}
            self._subscriptions[user_id] = asyncio.ensure_future(self._broker.subscribe(user_id))
        else:
            open_ones = [c for c in connections if not c.closing]
            if len(open_ones) >= self._limits.per_user:
                # The oldest tab is the likeliest to be forgotten: it makes room for the new.
                metrics.sockets_refused.labels("user_full").inc()
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
        try:
            first_frames = await connection.load_first_frames()
        except Exception:
            logger.exception("loading the snapshot for a socket failed")
            connection.close(CLOSE_INTERNAL_ERROR)
            return
        connection.start(first_frames)

    def detach(self, connection: Connection) -> None:
        connection.release()
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

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resync_all(self) -> None:
        limit = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def resync_one(connection: Connection) -> None:
            if connection.closing:
                return
            async with limit:
                try:
                    frames = await connection.load_first_frames()
                except Exception:
                    logger.exception("reloading a socket's snapshot failed")
                    connection.close(CLOSE_INTERNAL_ERROR)
                    return
            for frame in frames:
                connection.push(frame)

        connections = [c for group in self._by_user.values() for c in group]
        await asyncio.gather(*(resync_one(c) for c in connections))

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
