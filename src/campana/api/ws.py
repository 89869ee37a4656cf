"""The socket ``/api/v1/notifications/ws?token=<JWT>``, served below ASGI.

Uvicorn hands every WebSocket upgrade to :class:`SocketProtocol` (``server_options``
in cli.py names it). It speaks WebSocket with the sans-I/O protocol of ``websockets`` and
lets the hub write frames straight to the transport: after the opening (token, snapshot)
a socket costs no task and no coroutine frame, only this object and the hub's
``Connection``, which is what keeps tens of thousands of idle sockets cheap.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import enum
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from campana import metrics
from campana.errors import InvalidToken
from campana.hub import Connection
from campana.limits import DEFAULT_LIMITS
from campana.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_ORIGIN_REFUSED,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOKEN_REFUSED,
    SOCKET_PATH,
)

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from campana.api.deps import Services

logger = logging.getLogger(__name__)

RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends a TCP reset
READ_SLICE_BYTES = 4096
FLOOD_ALLOWANCE_FRAMES = 1000
# Headers a handshake may carry once only: a second Origin could pass the allow-list.
SINGLE_HEADERS = frozenset(
    {"host", "origin", "upgrade", "sec-websocket-key", "sec-websocket-version"}
)


class TokenBucket:
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


class Phase(enum.Enum):
    """Where a socket is in its life; the one answer to "is it open?"."""

    UPGRADING = "upgrading"  # waiting for the upgrade request (api/http.py hands it over)
    REFUSED = "refused"  # answered with an HTTP error: nothing more is read
    OPEN = "open"  # 101 sent: frames flow both ways
    CLOSING = "closing"  # a close frame went out or came in: only the close completes
    GONE = "gone"  # the transport is gone


class SocketProtocol(asyncio.Protocol):
    """One browser tab's socket, from the HTTP upgrade to the TCP close.

    What one client can make it hold is bounded whatever it sends or fails to read, signed
    in or not: every frame, control frames included, counts against the rate limit;
    nothing more is read while the transport's buffer is full (so the answers to pings
    cannot pile up); and every close, whichever way it starts, ends with the transport
    aborted if it has not ended ``close_timeout`` seconds later.

    It owns the transport and the WebSocket framing; the hub's ``Connection`` owns what is
    sent and in which order. The connection is released (sends nothing more) the moment
    the socket leaves ``Phase.OPEN``, whichever side closed.
    """

    __slots__ = (
        "_abort_timer",
        "_bucket",
        "_close_timeout",
        "_connection",
        "_decoder",
        "_early_ping",
        "_muted",
        "_overflow",
        "_paused",
        "_phase",
        "_ping_interval",
        "_ping_payload",
        "_ping_timeout",
        "_ping_timer",
        "_server_state",
        "_services",
        "_slot",
        "_stop_seconds",
        "_transport",
        "_unauthenticated",
        "_ws",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._services: Services | None = app_state.get("services")
        self._server_state = server_state
        limits = self._services.limits if self._services is not None else DEFAULT_LIMITS
        self._bucket = TokenBucket(limits.frame_rate, limits.frame_burst)
        self._close_timeout = limits.close_timeout
        self._stop_seconds = limits.stop_seconds
        # The sans-I/O protocol reads frames once the upgrade is answered with 101.
        self._phase = Phase.UPGRADING
        self._ws = ServerProtocol(state=State.OPEN, max_size=config.ws_max_size, logger=logger)
        self._ping_interval: float | None = config.ws_ping_interval
        self._ping_timeout: float | None = config.ws_ping_timeout
        self._transport: asyncio.Transport | None = None
        self._connection: Connection | None = None
        self._slot = False  # holds the connection's slot of the process's cap
        self._unauthenticated = False  # counted among the sockets not signed in
        self._paused = False
        self._overflow = 0  # frames received past the rate limit
        self._muted = False  # ... past the allowance too: nothing more is read
        self._early_ping = False  # a ``ping`` came before the token was checked
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        # Checks a text message split over several frames as it arrives.
        self._decoder: codecs.IncrementalDecoder | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server_state.connections.add(self)  # type: ignore[arg-type]

    def start(self, head: bytes, rest: bytes) -> None:
        """The upgrade request's head as it was sent (read and bounded by ``api/http.py``,
        without its blank line), and the bytes that followed it in the same packet."""
        self._slot = self._services is not None  # handed over by the HTTP protocol
        if self._open_handshake(head) and rest:
            self.data_received(rest)

    def data_received(self, data: bytes) -> None:
        if self._phase is not Phase.OPEN and self._phase is not Phase.CLOSING:
            return  # refused: what else comes is not read
        # In slices, so that a read full of pings is answered only up to the rate limit:
        # the protocol answers each ping it parses before the limit sees the frame.
        for start in range(0, len(data), READ_SLICE_BYTES):
            self._ws.receive_data(data[start : start + READ_SLICE_BYTES])
            self._follow_protocol()  # a close frame from the peer ends OPEN
            for event in self._ws.events_received():
                if isinstance(event, Frame) and not self._muted:
                    self._on_frame(event)
            if self._muted:
                break  # the rest of a flood is not even parsed
        self._write_pending()

    def eof_received(self) -> bool | None:
        if self._phase is not Phase.OPEN and self._phase is not Phase.CLOSING:
            return None  # refused: nothing to close politely
        self._ws.receive_eof()
        self._follow_protocol()
        self._write_pending()
        return None

    def pause_writing(self) -> None:
        # A peer that does not read is not read from either: what it sends would be
        # answered (pongs), and the answers would pile up in the transport's buffer.
        self._paused = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._transport.is_closing() and not self._muted:
            self._transport.resume_reading()
        if self._connection is not None:
            self._connection.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = Phase.GONE
        self._server_state.connections.discard(self)
        self._no_longer_unauthenticated()
        if self._slot and self._services is not None:
            self._slot = False
            self._services.capacity.release_connection()
        for timer in (self._ping_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        if self._connection is not None and self._services is not None:
            self._services.hub.detach(self._connection)

    def shutdown(self) -> None:
        """Uvicorn stops: tell the client to reconnect elsewhere (1012), then go.

        The one place that closes sockets for a stop: by the time the lifespan stops the
        hub, every socket has been told. The transport is aborted by the stop plan's
        socket deadline at the latest, so that peers that do not read are gone in time.
        """
        self.close_with(CLOSE_SERVICE_RESTART)
        if self._transport is not None:
            self._transport.close()
            self._abort_within(min(self._close_timeout, self._stop_seconds))

    # campana.hub.Socket

    @property
    def writable(self) -> bool:
        return not self._paused

    def write(self, wire: bytes) -> None:
        transport = self._transport
        if self._phase is Phase.OPEN and transport is not None and not transport.is_closing():
            transport.write(wire)

    def close_with(self, code: int) -> None:
        """Send the close frame, once, if the socket is open; nothing is sent after it."""
        if self._phase is not Phase.OPEN:
            return
        self._ws.send_close(code)
        self._follow_protocol()
        self._write_pending()
        if self._unauthenticated and self._services is not None:
            self._services.capacity.closing_unauthenticated(self, self._make_room)

    def _follow_protocol(self) -> None:
        """Leave ``OPEN`` when the WebSocket protocol did (a close sent, received or failed)."""
        if self._phase is Phase.OPEN and self._ws.state is not State.OPEN:
            self._phase = Phase.CLOSING
            if self._connection is not None:
                self._connection.release()

    def _abort_within(self, delay: float) -> None:
        """The deadline of a close: a peer that has not completed it by then is dropped.

        Counted once from the start of the close, whatever the peer reads meanwhile: one
        that stopped reading never sees the close frame queued behind unread frames.
        """
        transport = self._transport
        if transport is None or self._phase is Phase.GONE:
            return
        if self._abort_timer is not None:
            if self._abort_timer.when() <= asyncio.get_running_loop().time() + delay:
                return
            self._abort_timer.cancel()
        self._abort_timer = asyncio.get_running_loop().call_later(delay, self._abort)

    def _abort(self, limit: str = "close_timeout") -> None:
        """Drop the connection with a reset: what the kernel still holds for the peer is
        freed now, not after its retransmissions give up, and the peer learns at once."""
        transport = self._transport
        if transport is None or self._phase is Phase.GONE:
            return
        metrics.connections_cut.labels(limit).inc()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        transport.abort()

    # WebSocket

    def _write_pending(self) -> None:
        transport = self._transport
        if transport is None:
            return
        # Past the rate limit, once the close is out, only the end of the stream is written.
        flooded = self._overflow and self._phase is not Phase.OPEN
        for data in self._ws.data_to_send():
            if not data:  # the end of the stream: the closing handshake is over, or failed
                transport.close()
            elif not flooded:
                transport.write(data)
        if self._phase is Phase.CLOSING:
            self._abort_within(self._close_timeout)

    def _open_handshake(self, head: bytes) -> bool:
        """Answer the upgrade: 101 and start the opening, or a plain HTTP error."""
        upgrade = parse_upgrade(head)
        if isinstance(upgrade, Refusal):
            return self._refuse(upgrade.status, upgrade.reason, upgrade.headers)
        if self._services is None:
            return self._refuse(404, "Not Found")
        if not self._services.capacity.admit_unauthenticated():
            # Before the token is read: a flood of sockets that never sign in is held to
            # its own share of the process, and the process stays ready for the others.
            metrics.sockets_refused.labels("unauthenticated_full").inc()
            return self._refuse(503, "Service Unavailable", "Retry-After: 1\r\n")
        self._unauthenticated = True
        assert self._transport is not None
        self._phase = Phase.OPEN
        self._transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + upgrade.accept + b"\r\n\r\n"
        )
        opening = asyncio.get_running_loop().create_task(self._open(upgrade.token, upgrade.origin))
        # Uvicorn waits for these on shutdown; each ends once the snapshot is out.
        self._server_state.tasks.add(opening)
        opening.add_done_callback(self._server_state.tasks.discard)
        self._schedule_ping()
        return True

    def _refuse(self, status: int, reason: str, headers: str = "") -> bool:
        self._phase = Phase.REFUSED
        body = f"{status} {reason}\n"
        if self._transport is not None:
            self._transport.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n{body}".encode()
            )
            self._transport.close()
            self._abort_within(self._close_timeout)
        return False

    async def _open(self, token: str | None, origin: str | None) -> None:
        """Origin, then token, then attach, subscribe and send the first frames."""
        services = self._services
        assert services is not None
        allowed = services.settings.allowed_origins
        # Browsers always send Origin; clients that are not browsers may omit it.
        if allowed and origin is not None and origin not in allowed:
            self.close_with(CLOSE_ORIGIN_REFUSED)
            return
        try:
            principal = await services.verifier.verify(token)
        except InvalidToken:
            self.close_with(CLOSE_TOKEN_REFUSED)
            return
        except Exception:
            logger.exception("verifying a socket's token failed")
            self.close_with(CLOSE_INTERNAL_ERROR)
            return
        if self._phase is not Phase.OPEN:
            return
        connection = services.hub.attach(
            self, user_id=principal.user_id, expires_at=principal.expires_at
        )
        if connection is None:
            return
        self._no_longer_unauthenticated()
        self._connection = connection
        if self._early_ping:
            connection.received("ping")  # queued behind the opening frames
        await services.hub.open(connection)

    def _no_longer_unauthenticated(self) -> None:
        """Leaves the count of sockets not signed in: signed in now, or gone."""
        if self._unauthenticated and self._services is not None:
            self._unauthenticated = False
            self._services.capacity.release_unauthenticated(self)

    def _make_room(self) -> None:
        """Dropped, not signed in and closing, so that a new socket may open."""
        self._unauthenticated = False  # the capacity hands its place over itself
        self._abort("unauthenticated_full")

    def _on_frame(self, frame: Frame) -> None:
        if not self._bucket.take():
            # Every frame counts, pings and pongs too, before and after the token. The
            # close goes out with what is pending; then the protocol's answers (pongs) are
            # dropped, and frames are still read, so that the peer's answer to the close
            # is seen, up to an allowance past which nothing more is read.
            if not self._overflow:
                metrics.connections_cut.labels("frame_rate").inc()
                self.close_with(CLOSE_POLICY_VIOLATION)
            self._overflow += 1
            if self._overflow > FLOOD_ALLOWANCE_FRAMES and self._transport is not None:
                self._muted = True
                if not self._transport.is_closing():
                    self._transport.pause_reading()
            return
        if frame.opcode is Opcode.PONG:
            if self._ping_payload is not None and bytes(frame.data) == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
            return
        if frame.opcode is Opcode.TEXT or (frame.opcode is Opcode.CONT and self._decoder):
            text = self._text(frame)
            # Only a whole text frame can be the ``ping`` command.
            if text is None or frame.opcode is not Opcode.TEXT or not frame.fin:
                return
            if self._connection is not None:
                self._connection.received(text)
            elif text == "ping":
                self._early_ping = True  # answered after the opening frames
        # Binary frames are ignored; pings are answered by the protocol, closes too.

    def _text(self, frame: Frame) -> str | None:
        """The frame's text, or ``None`` after closing with 1007 if it is not UTF-8."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            text = self._decoder.decode(frame.data, final=frame.fin)
        except UnicodeDecodeError:
            self._decoder = None
            if self._phase is Phase.OPEN:
                metrics.connections_cut.labels("invalid_utf8").inc()
                self._ws.fail(CLOSE_INVALID_DATA, "invalid UTF-8")
                self._follow_protocol()
            return None
        if frame.fin:
            self._decoder = None
        return text

    # Protocol-level keepalive: finds peers that vanished without a TCP close.

    def _schedule_ping(self) -> None:
        if self._ping_interval:
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self._ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        if self._phase is not Phase.OPEN:
            return
        self._ping_payload = os.urandom(4)
        self._ws.send_ping(self._ping_payload)
        self._write_pending()
        if self._ping_timeout:
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self._ping_timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        if self._ping_payload is None or self._phase is not Phase.OPEN:
            return
        self._ws.fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
        self._follow_protocol()
        self._write_pending()


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An upgrade request to accept: what the opening needs of it."""

    token: str | None
    origin: str | None
    accept: bytes  # Sec-WebSocket-Accept


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    headers: str = ""  # extra header lines, each ending in CRLF


BAD_REQUEST = Refusal(400, "Bad Request")


def parse_upgrade(head: bytes) -> Upgrade | Refusal:
    """RFC 6455 §4.2: the upgrade request's head (without its blank line), checked.

    Written out rather than left to ``websockets``, whose general handshake (headers
    object, extensions, subprotocols) cost 150 µs a socket: a tenth of a reconnect storm.
    """
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or (name in SINGLE_HEADERS and name in headers):
            return BAD_REQUEST
        headers[name] = value.strip()
    path, _, query = target.partition("?")
    if method != "GET" or version != "HTTP/1.1" or not headers.get("host"):
        return BAD_REQUEST
    if path != SOCKET_PATH:
        return Refusal(404, "Not Found")
    if "websocket" not in _tokens(headers.get("upgrade")) or "upgrade" not in _tokens(
        headers.get("connection")
    ):
        return BAD_REQUEST
    if headers.get("sec-websocket-version") != "13":
        return Refusal(426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
    key = headers.get("sec-websocket-key", "")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid_key = False
    if not valid_key:
        return BAD_REQUEST
    return Upgrade(
        token=parse_qs(query).get("token", [None])[0],
        origin=headers.get("origin"),
        accept=accept_key(key).encode(),
    )


def _tokens(header: str | None) -> list[str]:
    """The comma-separated tokens of a header, lowercased (``Connection: keep-alive, Upgrade``)."""
    return [token.strip().lower() for token in (header or "").split(",")]
