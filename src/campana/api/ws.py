"""The socket ``/api/v1/notifications/ws?token=<JWT>``, served below ASGI.

Uvicorn hands every WebSocket upgrade to :class:`NotificationsSocket` (``server_options``
in cli.py names it). It speaks WebSocket with the sans-I/O protocol of ``websockets`` and
lets the hub write frames straight to the transport: after the opening (token, snapshot)
a socket costs no task and no coroutine frame, only this object and the hub's
``Connection``, which is what keeps tens of thousands of idle sockets cheap.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from campana.errors import InvalidToken
from campana.hub import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_ORIGIN_REFUSED,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOKEN_REFUSED,
    Connection,
)

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from campana.api.deps import Services

logger = logging.getLogger(__name__)

SOCKET_PATH = "/api/v1/notifications/ws"
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_REQUEST_BYTES = 16 * 1024
# How long a peer has to answer our close frame before the connection is dropped.
CLOSE_TIMEOUT_SECONDS = 10.0


class NotificationsSocket(asyncio.Protocol):
    """One browser tab's socket, from the HTTP upgrade to the TCP close."""

    __slots__ = (
        "_close_timer",
        "_connection",
        "_lost",
        "_paused",
        "_ping_interval",
        "_ping_payload",
        "_ping_timeout",
        "_ping_timer",
        "_request",
        "_server_state",
        "_services",
        "_transport",
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
        # The opening handshake is read here (a bytearray until it is complete, then None);
        # the sans-I/O protocol takes over for frames once the socket is open.
        self._request: bytearray | None = bytearray()
        self._ws = ServerProtocol(state=State.OPEN, max_size=config.ws_max_size, logger=logger)
        self._ping_interval: float | None = config.ws_ping_interval
        self._ping_timeout: float | None = config.ws_ping_timeout
        self._transport: asyncio.Transport | None = None
        self._connection: Connection | None = None
        self._paused = False
        self._lost = False
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server_state.connections.add(self)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._request is not None:
            self._request += data
            end = self._request.find(b"\r\n\r\n")
            if end < 0:
                if len(self._request) > MAX_REQUEST_BYTES:
                    self._refuse(431, "Request Header Fields Too Large")
                return
            head, data = bytes(self._request[:end]), bytes(self._request[end + 4 :])
            self._request = None
            if not self._open_handshake(head) or not data:
                return
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
        self._write_pending()

    def eof_received(self) -> bool | None:
        if self._request is not None:
            return None  # gone before its handshake: nothing to close politely
        self._ws.receive_eof()
        self._write_pending()
        return None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._close_timer is not None:
            # A peer still reading what was queued before our close frame gets its time.
            self._close_timer.cancel()
            self._start_close_timer()
        if self._connection is not None:
            self._connection.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._server_state.connections.discard(self)
        for timer in (self._ping_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        if self._connection is not None and self._services is not None:
            self._services.hub.detach(self._connection)

    def shutdown(self) -> None:
        """Uvicorn stops: tell the client to reconnect elsewhere (1012), then go."""
        if self._request is None:
            self.close_with(CLOSE_SERVICE_RESTART)
        if self._transport is not None:
            self._transport.close()

    # campana.hub.Socket

    @property
    def writable(self) -> bool:
        return not self._paused

    def write_frame(self, frame: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)

    def close_with(self, code: int) -> None:
        if self._request is not None or self._ws.state is not State.OPEN:
            return
        if self._transport is None:
            return
        if self._connection is not None and not self._connection.closing:
            self._connection.close(code)  # comes back here with the connection closing
            return
        self._ws.send_close(code)
        self._write_pending()
        self._start_close_timer()

    def _start_close_timer(self) -> None:
        """Drop a peer that does not answer our close frame in time.

        While the transport is paused the close frame waits behind unread frames: the
        peer gets as long as a keepalive ping would give it, counted again each time it
        reads enough to resume writing.
        """
        if self._transport is None:
            return
        delay = CLOSE_TIMEOUT_SECONDS
        if self._paused:
            delay = max(delay, (self._ping_interval or 0.0) + (self._ping_timeout or 0.0))
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(delay, self._transport.abort)

    # WebSocket

    def _write_pending(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            else:  # the end of the stream: the closing handshake is over, or failed
                transport.close()

    def _open_handshake(self, head: bytes) -> bool:
        """RFC 6455 §4.2: check the upgrade request, answer 101 and start the opening.

        Written out rather than left to ``websockets``, whose general handshake (headers
        object, extensions, subprotocols) cost 150 µs a socket: a tenth of a reconnect
        storm. Anything unexpected is refused with a plain HTTP error.
        """
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target, _, version = rest.partition(" ")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                return self._refuse(400, "Bad Request")
            headers[name.strip().lower()] = value.strip()
        path, _, query = target.partition("?")
        if method != "GET" or version != "HTTP/1.1":
            return self._refuse(400, "Bad Request")
        if path != SOCKET_PATH or self._services is None:
            return self._refuse(404, "Not Found")
        if "websocket" not in _tokens(headers.get("upgrade")) or "upgrade" not in _tokens(
            headers.get("connection")
        ):
            return self._refuse(400, "Bad Request")
        if headers.get("sec-websocket-version") != "13":
            return self._refuse(426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n")
        key = headers.get("sec-websocket-key", "")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if not valid_key:
            return self._refuse(400, "Bad Request")
        digest = hashlib.sha1((key + WEBSOCKET_GUID).encode(), usedforsecurity=False).digest()
        accept = base64.b64encode(digest)
        assert self._transport is not None
        self._transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        token = parse_qs(query).get("token", [None])[0]
        opening = asyncio.get_running_loop().create_task(self._open(token, headers.get("origin")))
        # Uvicorn waits for these on shutdown; each ends once the snapshot is out.
        self._server_state.tasks.add(opening)
        opening.add_done_callback(self._server_state.tasks.discard)
        self._schedule_ping()
        return True

    def _refuse(self, status: int, reason: str, headers: str = "") -> bool:
        body = f"{status} {reason}\n"
        if self._transport is not None:
            self._transport.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n{body}".encode()
            )
            self._transport.close()
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
        if self._lost or self._ws.state is not State.OPEN:
            return
        connection = services.hub.attach(
            self, user_id=principal.user_id, expires_at=principal.expires_at
        )
        if connection is None:
            return
        self._connection = connection
        await services.hub.open(connection)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            if self._ping_payload is not None and bytes(frame.data) == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
            return
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return  # pings are answered by the protocol, closes handled there too
        if self._connection is None:
            return
        # Only a whole text frame can be the ``ping`` command; every data frame counts
        # against the flood limit.
        is_text = frame.opcode is Opcode.TEXT and frame.fin
        self._connection.received(bytes(frame.data).decode(errors="replace") if is_text else None)

    # Protocol-level keepalive: finds peers that vanished without a TCP close.

    def _schedule_ping(self) -> None:
        if self._ping_interval:
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self._ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        if self._ws.state is not State.OPEN:
            return
        self._ping_payload = os.urandom(4)
        self._ws.send_ping(self._ping_payload)
        self._write_pending()
        if self._ping_timeout:
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self._ping_timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        if self._ping_payload is None or self._ws.state is not State.OPEN:
            return
        self._ws.fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
        self._write_pending()


def _tokens(header: str | None) -> list[str]:
    """The comma-separated tokens of a header, lowercased (``Connection: keep-alive, Upgrade``)."""
    return [token.strip().lower() for token in (header or "").split(",")]
