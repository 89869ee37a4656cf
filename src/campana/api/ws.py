"""The socket ``/api/v1/notifications/ws?token=<JWT>``, served below ASGI.

Uvicorn hands every WebSocket upgrade to :class:`SocketProtocol` (``server_options``
in cli.py names it). It speaks WebSocket with the sans-I/O protocol of ``websockets`` and
lets the hub write frames straight to the transport: after the opening (token, snapshot)
a socket costs no task and no coroutine frame, only this object and the hub's
``Connection``, which is what keeps tens of thousands of idle sockets cheap.
"""

from __future__ import annotations

import asyncio
import codecs
import enum
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from campana import metrics
from campana.api import tcp
from campana.api.handshake import (
    FULL,
    NOT_FOUND,
    Refusal,
    Upgrade,
    UpgradeRequest,
    check_upgrade,
    refused,
    switching_protocols,
)
from campana.connection import Connection
from campana.errors import InvalidToken
from campana.hub import Refused
from campana.limits import DEFAULT_LIMITS
from campana.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_ORIGIN_REFUSED,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOKEN_REFUSED,
)

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from campana.api.deps import Services

logger = logging.getLogger(__name__)

READ_SLICE_BYTES = 4096
FLOOD_ALLOWANCE_FRAMES = 1000


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
    sent and in which order. It reports up twice, each once: to the connection when it
    leaves ``Phase.OPEN`` for a reason of its own (a close it starts or receives, a
    protocol error, a vanished peer; a close the connection asked for is not reported
    back), and to the hub when the transport is gone.
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

    def start(self, request: UpgradeRequest, rest: bytes) -> None:
        """The upgrade request (read and bounded by ``api/http.py``), and the bytes that
        followed it in the same packet."""
        self._slot = self._services is not None  # handed over by the HTTP protocol
        if self._open_handshake(request) and rest:
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
        if self._phase is Phase.OPEN and self._connection is not None:
            self._connection.socket_closed()  # gone without a close
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
        self._close(CLOSE_SERVICE_RESTART)
        if self._transport is not None:
            self._transport.close()
            self._abort_within(min(self._close_timeout, self._stop_seconds))

    # campana.connection.Socket

    @property
    def writable(self) -> bool:
        return not self._paused

    def write(self, wire: bytes) -> None:
        transport = self._transport
        if self._phase is Phase.OPEN and transport is not None and not transport.is_closing():
            transport.write(wire)

    def close_with(self, code: int) -> None:
        """The connection closes the socket: it has stopped already, nothing is reported."""
        self._close(code, report=False)

    def _close(self, code: int, *, report: bool = True) -> None:
        """Send the close frame, once, if the socket is open; nothing is sent after it."""
        if self._phase is not Phase.OPEN:
            return
        self._ws.send_close(code)
        self._follow_protocol(report=report)
        self._write_pending()
        if self._unauthenticated and self._services is not None:
            self._services.capacity.closing_unauthenticated(self)

    def _follow_protocol(self, *, report: bool = True) -> None:
        """Leave ``OPEN`` when the WebSocket protocol did (a close sent, received or failed),
        and tell the connection, unless it is the one that closed."""
        if self._phase is Phase.OPEN and self._ws.state is not State.OPEN:
            self._phase = Phase.CLOSING
            if report and self._connection is not None:
                self._connection.socket_closed()

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
        """Drop the connection with a TCP reset (``tcp.reset``), counted under ``limit``."""
        transport = self._transport
        if transport is None or self._phase is Phase.GONE:
            return
        metrics.connections_cut.labels(limit).inc()
        tcp.reset(transport)

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

    def _open_handshake(self, request: UpgradeRequest) -> bool:
        """Answer the upgrade: 101 and start the opening, or a plain HTTP error."""
        upgrade = check_upgrade(request)
        if isinstance(upgrade, Refusal):
            return self._refuse(upgrade)
        if self._services is None:
            return self._refuse(NOT_FOUND)
        if not self._services.capacity.admit_unauthenticated():
            # Before the token is read: a flood of sockets that never sign in is held to
            # its own share of the process, and the process stays ready for the others.
            metrics.sockets_refused.labels("unauthenticated_full").inc()
            return self._refuse(FULL)
        self._unauthenticated = True
        assert self._transport is not None
        self._phase = Phase.OPEN
        self._transport.write(switching_protocols(upgrade))
        opening = asyncio.get_running_loop().create_task(self._open(upgrade))
        # Uvicorn waits for these on shutdown; each ends once the snapshot is out.
        self._server_state.tasks.add(opening)
        opening.add_done_callback(self._server_state.tasks.discard)
        self._schedule_ping()
        return True

    def _refuse(self, refusal: Refusal) -> bool:
        self._phase = Phase.REFUSED
        if self._transport is not None:
            self._transport.write(refused(refusal))
            self._transport.close()
            self._abort_within(self._close_timeout)
        return False

    async def _open(self, upgrade: Upgrade) -> None:
        """Origin, then token, then attach, subscribe and send the first frames."""
        services = self._services
        assert services is not None
        token, origin = upgrade.token, upgrade.origin
        allowed = services.settings.allowed_origins
        # Browsers always send Origin; clients that are not browsers may omit it.
        if allowed and origin is not None and origin not in allowed:
            self._close(CLOSE_ORIGIN_REFUSED)
            return
        try:
            principal = await services.verifier.verify(token)
        except InvalidToken:
            self._close(CLOSE_TOKEN_REFUSED)
            return
        except Exception:
            logger.exception("verifying a socket's token failed")
            self._close(CLOSE_INTERNAL_ERROR)
            return
        if self._phase is not Phase.OPEN:
            return
        connection = services.hub.attach(
            self,
            user_id=principal.user_id,
            expires_at=principal.expires_at,
            counts=upgrade.counts,
        )
        if isinstance(connection, Refused):
            self._close(connection.code)
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

    def make_room(self) -> None:
        """``capacity.ClosingSocket``: not signed in and closing, dropped for a newcomer."""
        self._unauthenticated = False  # the capacity hands its place over itself
        self._abort("unauthenticated_full")

    def _on_frame(self, frame: Frame) -> None:
        """Every frame counts against the rate limit, then goes to its opcode's handler.

        Pings and closes are answered by the protocol itself; binary frames are ignored.
        """
        if not self._bucket.take():
            self._over_rate()
            return
        handler = _FRAME_HANDLERS.get(frame.opcode)
        if handler is not None:
            handler(self, frame)

    def _over_rate(self) -> None:
        """Every frame counts, pings and pongs too, before and after the token. The close
        goes out with what is pending; then the protocol's answers (pongs) are dropped, and
        frames are still read, so that the peer's answer to the close is seen, up to an
        allowance past which nothing more is read."""
        if not self._overflow:
            metrics.connections_cut.labels("frame_rate").inc()
            self._close(CLOSE_POLICY_VIOLATION)
        self._overflow += 1
        if self._overflow > FLOOD_ALLOWANCE_FRAMES and self._transport is not None:
            self._muted = True
            if not self._transport.is_closing():
                self._transport.pause_reading()

    def _on_pong(self, frame: Frame) -> None:
        if self._ping_payload is not None and bytes(frame.data) == self._ping_payload:
            self._ping_payload = None
            self._schedule_ping()

    def _on_text(self, frame: Frame) -> None:
        text = self._text(frame)
        # Only a whole text frame can be the ``ping`` command.
        if text is None or not frame.fin:
            return
        if self._connection is not None:
            self._connection.received(text)
        elif text == "ping":
            self._early_ping = True  # answered after the opening frames

    def _on_continuation(self, frame: Frame) -> None:
        if self._decoder is not None:  # of a text message: checked, never a command
            self._text(frame)

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


_FRAME_HANDLERS: dict[Opcode, Callable[[SocketProtocol, Frame], None]] = {
    Opcode.TEXT: SocketProtocol._on_text,
    Opcode.CONT: SocketProtocol._on_continuation,
    Opcode.PONG: SocketProtocol._on_pong,
}
