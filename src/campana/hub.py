"""This process's sockets: attach, detach, fan-out, keepalive, expiry and client limits.

The hub never touches the database: a socket's first frames are loaded by a callable the
caller hands in, after the hub has subscribed the user, which is what closes the gap
between snapshot and live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.websockets import WebSocket

from campana.broker import Broker
from campana.schemas import KEEPALIVE, KEEPALIVE_FRAME, Event

logger = logging.getLogger(__name__)

KEEPALIVE_EVENT = Event("", 0, KEEPALIVE, KEEPALIVE_FRAME)

# Close codes of the wire format (docs/protocol.md).
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_ORIGIN_REFUSED = 4403

LoadFirstFrames = Callable[[], Awaitable[list[Event]]]


@dataclass(frozen=True, slots=True)
class ClientLimits:
    max_frame_bytes: int
    rate_per_second: float
    burst: int


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


class Connection:
    """One open socket: an outgoing queue drained by its own sender task.

    Events queue up from the moment the socket is attached; the sender starts only once
    the first frames (snapshot, count) are in front of them. A count event whose version
    is not newer than the last count sent is stale and dropped, so the badge never moves
    backwards, whatever order events arrive in.
    """

    __slots__ = (
        "_closing",
        "_last_count_version",
        "_queue",
        "_sender",
        "_wakeup",
        "user_id",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, user_id: str) -> None:
        self.websocket = websocket
        self.user_id = user_id
        self._queue: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closing: int | None = None
        self._last_count_version = -1

    def push(self, event: Event) -> None:
        if self._closing is not None:
            return
        self._queue.append(event)
        self._wakeup.set()

    def start(self, first_frames: list[Event]) -> None:
        if self._sender is not None:  # closed (token expired) while the snapshot loaded
            return
        self._queue.extendleft(reversed(first_frames))
        self._sender = asyncio.create_task(self._send_loop())

    def close(self, code: int) -> None:
        """Close after the frame being sent, dropping what is still queued."""
        if self._closing is not None:
            return
        self._closing = code
        self._queue.clear()
        self._wakeup.set()
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop())

    async def wait_closed(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    def cancel(self) -> None:
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()

    async def _send_loop(self) -> None:
        websocket = self.websocket
        queue = self._queue
        try:
            while True:
                if self._closing is not None:
                    await websocket.close(self._closing)
                    return
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
        except asyncio.CancelledError:
            raise
        except Exception:
            # The peer went away mid-send; the receive side sees the disconnect.
            logger.debug("send to a socket of %s failed", self.user_id, exc_info=True)

    async def receive_until_closed(self, limits: ClientLimits) -> None:
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
            if self._closing is not None:
                await self.wait_closed()
                return


def _too_big(data: str | bytes, limit: int) -> bool:
    """Size in bytes on the wire, encoding text only when its length leaves a doubt."""
    if isinstance(data, bytes) or len(data) > limit:
        return len(data) > limit
    return len(data) * 4 > limit and len(data.encode()) > limit


class Hub:
    """Owns the sockets of this process and the broker subscriptions they need."""

    def __init__(self, broker: Broker, *, keepalive_seconds: float, limits: ClientLimits) -> None:
        self._broker = broker
        self._keepalive_seconds = keepalive_seconds
        self._limits = limits
        self._by_user: dict[str, set[Connection]] = {}
        self._subscriptions: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._keepalive: asyncio.Task[None] | None = None

    @property
    def socket_count(self) -> int:
        return sum(len(connections) for connections in self._by_user.values())

    async def start(self) -> None:
        await self._broker.start(self.deliver)
        self._keepalive = asyncio.create_task(self._keepalive_loop())

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        connections = [c for group in self._by_user.values() for c in group]
        for connection in connections:
            connection.close(CLOSE_SERVICE_RESTART)
        await asyncio.gather(*(c.wait_closed() for c in connections), return_exceptions=True)
        await self._broker.close()

    def deliver(self, event: Event) -> None:
        """Fan one serialised event out to this process's sockets of its user."""
        for connection in self._by_user.get(event.user_id, ()):
            connection.push(event)

    async def serve(
        self,
        websocket: WebSocket,
        *,
        user_id: str,
        expires_at: float,
        load_first_frames: LoadFirstFrames,
    ) -> None:
        """Run an accepted socket until it closes: subscribe, snapshot, live events."""
        connection = Connection(websocket, user_id)
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(
            max(0.0, expires_at - time.time()), connection.close, CLOSE_TOKEN_EXPIRED
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
            connections = self._by_user[user_id] = set()
            self._subscriptions[user_id] = asyncio.ensure_future(self._broker.subscribe(user_id))
        connections.add(connection)
        # Every socket of the user waits for the one subscription its first socket started.
        await asyncio.shield(self._subscriptions[user_id])

    def _detach(self, connection: Connection) -> None:
        user_id = connection.user_id
        connections = self._by_user.get(user_id)
        if connections is None:
            return
        connections.discard(connection)
        if connections:
            return
        del self._by_user[user_id]
        self._subscriptions.pop(user_id, None)
        task = asyncio.create_task(self._broker.unsubscribe(user_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_seconds)
            for connections in self._by_user.values():
                for connection in connections:
                    connection.push(KEEPALIVE_EVENT)
