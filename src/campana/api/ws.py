"""The socket ``/api/v1/notifications/ws?token=<JWT>``, served below ASGI.

Uvicorn hands every WebSocket upgrade to :class:`NotificationsSocket` (``server_options``
in cli.py names it). It speaks WebSocket with the sans-I/O protocol of ``websockets`` and
lets the hub write frames straight to the transport: after the opening (token, snapshot)
a socket costs no task and no coroutine frame, only this object and the hub's
``Connection``, which is what keeps tens of thousands of idle sockets cheap.
"""

from __future__ import annotations

import asyncio
import logging
import os
from functools import partial
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
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
        self._ws = ServerProtocol(max_size=config.ws_max_size, logger=logger)
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
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        self._write_pending()

    def eof_received(self) -> bool | None:
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
        if self._ws.state is not State.OPEN or self._transport is None:
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

    def _on_request(self, request: Request) -> None:
        path, _, query = request.path.partition("?")
        if path != SOCKET_PATH or self._services is None:
            response = self._ws.reject(404, "Not Found\n")
        else:
            response = self._ws.accept(request)
        self._ws.send_response(response)
        if response.status_code != 101:
            return
        token = parse_qs(query).get("token", [None])[0]
        opening = asyncio.get_running_loop().create_task(
            self._open(token, request.headers.get("Origin"))
        )
        # Uvicorn waits for these on shutdown; each ends once the snapshot is out.
        self._server_state.tasks.add(opening)
        opening.add_done_callback(self._server_state.tasks.discard)
        self._schedule_ping()

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
            self,
            user_id=principal.user_id,
            expires_at=principal.expires_at,
            load_first_frames=partial(services.snapshots.load, principal.user_id),
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
