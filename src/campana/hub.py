"""This process's sockets: attach, detach, fan-out, keepalive, expiry and limits.

The hub never touches the database: a socket's first frames are loaded by a callable the
caller hands in, after the hub has subscribed the user, which is what closes the gap
between snapshot and live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.websockets import WebSocket

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

SHUTDOWN_BATCH = 500
KEEPALIVE_SLICES = 25
RESYNC_CONCURRENCY = 16

LoadFirstFrames = Callable[[], Awaitable[list[Event]]]


@dataclass(frozen=True, slots=True)
class SocketLimits:
    max_frame_bytes: int
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
    """One open socket: a bounded outgoing queue drained by its own sender task.

    Events queue up from the moment the socket is attached; the sender starts only once
    the first frames (snapshot, count) are in front of them. A count event whose version
    is not newer than the last count sent is stale and dropped, so the badge never moves
    backwards, whatever order events arrive in. A socket whose queue is full is closed
    with 1013: its snapshot restores the state when it reconnects.
    """

    __slots__ = (
        "_closer",
        "_closing",
        "_last_count_version",
        "_queue",
        "_queue_size",
        "_sender",
        "_wakeup",
        "keepalive_slot",
        "load_first_frames",
        "user_id",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        user_id: str,
        load_first_frames: LoadFirstFrames,
        queue_size: int,
    ) -> None:
        self.websocket = websocket
        self.user_id = user_id
        self.load_first_frames = load_first_frames
        self._queue: deque[Event] = deque()
        self._queue_size = queue_size
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closing = False
        self._last_count_version = -1
        self.keepalive_slot = next(_slots) % KEEPALIVE_SLICES

    @property
    def closing(self) -> bool:
        return self._closing

    def push(self, event: Event) -> None:
        if self._closing:
            return
        if len(self._queue) >= self._queue_size:
            metrics.send_queue_overflows.inc()
            self.close(CLOSE_TRY_AGAIN_LATER)
            return
        self._queue.append(event)
        self._wakeup.set()

    def start(self, first_frames: list[Event]) -> None:
        if self._closing:  # closed (token expired, say) while the snapshot loaded
            return
        self._queue.extendleft(reversed(first_frames))
        self._sender = asyncio.create_task(self._send_loop())

    def close(self, code: int) -> None:
        """Drop what is queued, stop sending, and send the close frame."""
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        if self._sender is not None:
            # A sender stuck on a peer that does not read is waiting for the transport to
            # drain, before writing anything: cancelling it there loses no partial frame.
            self._sender.cancel()
        self._closer = asyncio.create_task(self._send_close(code))

    async def wait_closed(self) -> None:
        if self._closer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._closer

    def cancel(self) -> None:
        for task in (self._sender, self._closer):
            if task is not None and not task.done():
                task.cancel()

    async def _send_close(self, code: int) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code)

    async def _send_loop(self) -> None:
        websocket = self.websocket
        queue = self._queue
        try:
            while True:
                if not queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                event = queue.popleft()
                if event.is_count:
                    if event.version <= self._last_count_version:
                        continue
                    self._last_count_version = event.version
                await websocket.send_text(event.frame)
                metrics.frames_delivered.inc()
                if event.published_at:
                    metrics.delivery_latency.observe(time.time() - event.published_at)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The peer went away mid-send; the receive side sees the disconnect.
            logger.debug("send to a socket failed", exc_info=True)

    async def receive_until_closed(self, limits: SocketLimits) -> None:
        """Answer ``ping``, ignore other text, close on oversize frames and floods."""
        bucket = _TokenBucket(limits.rate_per_second, limits.burst)
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text: str | None = message.get("text")
            data: str | bytes | None = text if text is not None else message.get("bytes")
            if data is None:
                continue
            if _too_big(data, limits.max_frame_bytes):
                self.close(CLOSE_TOO_BIG)
            elif not bucket.take():
                self.close(CLOSE_POLICY_VIOLATION)
            elif text == "ping":
                self.push(KEEPALIVE_EVENT)
            if self._closing:
                await self.wait_closed()
                return


def _too_big(data: str | bytes, limit: int) -> bool:
    """Size in bytes on the wire, encoding text only when its length leaves a doubt."""
    if isinstance(data, bytes) or len(data) > limit:
        return len(data) > limit
    return len(data) * 4 > limit and len(data.encode()) > limit


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

    @property
    def socket_count(self) -> int:
        return self._socket_count

    async def start(self) -> None:
        await self._broker.start(self.deliver, self.resync)
        self._keepalive = asyncio.create_task(self._keepalive_loop())

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Close every socket with 1012, a batch at a time, so clients go elsewhere at once."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        connections = [c for group in self._by_user.values() for c in group]
        deadline = time.monotonic() + grace_seconds
        for start in range(0, len(connections), SHUTDOWN_BATCH):
            batch = connections[start : start + SHUTDOWN_BATCH]
            for connection in batch:
                connection.close(CLOSE_SERVICE_RESTART)
            left = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(c.wait_closed() for c in batch), return_exceptions=True),
                    left,
                )
        await self._broker.close()

    def deliver(self, event: Event) -> None:
        """Fan one serialised event out to this process's sockets of its user."""
        connections = self._by_user.get(event.user_id)
        if connections is None:
            return
        # A push may close a slow socket, which never detaches here: iterate a copy.
        for connection in tuple(connections):
            connection.push(event)

    def resync(self) -> None:
        """Send every socket a fresh snapshot and count (events may have been missed)."""
        self._spawn(self._resync_all())

    async def serve(
        self,
        websocket: WebSocket,
        *,
        user_id: str,
        expires_at: float,
        load_first_frames: LoadFirstFrames,
    ) -> None:
        """Run an accepted socket until it closes: subscribe, snapshot, live events."""
        if self._socket_count >= self._limits.per_process:
            metrics.sockets_refused.labels("process_full").inc()
            await websocket.close(CLOSE_TRY_AGAIN_LATER)
            return
        connection = Connection(websocket, user_id, load_first_frames, self._limits.send_queue_size)
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(
            max(0.0, expires_at - time.time()), connection.close, CLOSE_TOKEN_REFUSED
        )
        try:
            await self._attach(connection)
            try:
                first_frames = await load_first_frames()
            except Exception:
                logger.exception("loading the snapshot for a socket failed")
                connection.close(CLOSE_INTERNAL_ERROR)
                await connection.wait_closed()
                return
            connection.start(first_frames)
            await connection.receive_until_closed(self._limits)
        finally:
            expiry.cancel()
            connection.cancel()
            self._detach(connection)

    async def _attach(self, connection: Connection) -> None:
        user_id = connection.user_id
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
        metrics.open_sockets.inc()
        # Every socket of the user waits for the one subscription its first socket started.
        await asyncio.shield(self._subscriptions[user_id])

    def _detach(self, connection: Connection) -> None:
        user_id = connection.user_id
        connections = self._by_user.get(user_id)
        if connections is None or connection not in connections:
            return
        del connections[connection]
        self._socket_count -= 1
        metrics.open_sockets.dec()
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
        sends; a slice is ``1/KEEPALIVE_SLICES`` of the sockets, chosen by a stable slot.
        """
        tick = self._keepalive_seconds / KEEPALIVE_SLICES
        slot = 0
        while True:
            await asyncio.sleep(tick)
            slot = (slot + 1) % KEEPALIVE_SLICES
            for connections in tuple(self._by_user.values()):
                for connection in tuple(connections):
                    if connection.keepalive_slot == slot:
                        connection.push(KEEPALIVE_EVENT)
