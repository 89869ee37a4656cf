"""HTTP/1.1 connections: uvicorn's httptools protocol with a deadline and a size bound.

Uvicorn bounds neither how long a request's head may take to arrive nor how long it may
be: an idle connection, a request line sent a byte at a time or a 64 MB header would
hold a connection (and, for the header, memory and quadratic CPU) for as long as the
client likes. :class:`HttpProtocol` adds, for every request on a connection:

* a head deadline (``CAMPANA_HTTP_HEADER_TIMEOUT_SECONDS``), from the connection's
  opening or the request's first byte: past it the connection closes, with 408 if the
  request had begun;
* a head size bound (``CAMPANA_HTTP_MAX_HEADER_BYTES``): 431, checked as bytes arrive;
* a body deadline (``CAMPANA_HTTP_BODY_TIMEOUT_SECONDS``) from the end of the head;
  past it 408 and close, and the application sees the client as gone.

It also hands a WebSocket upgrade to the socket protocol as the client sent it (its
HTTP version, every header even when repeated, and the bytes that followed in the same
packet), where uvicorn would rebuild it as HTTP/1.1 and drop the bytes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from campana import metrics

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from campana.api.deps import Services
    from campana.api.ws import SocketProtocol

DEFAULT_HEADER_TIMEOUT_SECONDS = 5.0
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_HEADER_BYTES = 16_384


class _Refused(Exception):
    """Raised in a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int, reason: str, limit: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.limit = limit


class HttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        services: Services | None = app_state.get("services")
        if services is not None:
            settings = services.settings
            self._header_timeout = settings.http_header_timeout_seconds
            self._body_timeout = settings.http_body_timeout_seconds
            self._max_head = settings.http_max_header_bytes
        else:
            self._header_timeout = DEFAULT_HEADER_TIMEOUT_SECONDS
            self._body_timeout = DEFAULT_BODY_TIMEOUT_SECONDS
            self._max_head = DEFAULT_MAX_HEADER_BYTES
        self._timer: asyncio.TimerHandle | None = None
        self._began = False  # a byte of the current request has arrived
        self._in_head = False  # ... and its head is not complete
        self._head_bytes = 0
        self._done = False  # answered on our own and closing: nothing more is parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self._upgrade(data[upgrade.args[0] :])
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as error:
            refused = error.__context__
            if isinstance(refused, _Refused):
                self._cut(refused.limit, refused.status, refused.reason)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._answer(400, "Bad Request")
            return
        if self._in_head and self._began:
            # Counts the whole packet the request began in: a bound, not an exact size.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._cut("header_size", 431, "Request Header Fields Too Large")

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._began = True
        self._head_bytes = 0
        if self._timer is None:  # the first request's deadline runs from the connection
            self._arm(self._header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._max_head:
            raise _Refused(431, "Request Header Fields Too Large", "header_size")
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            self._arm(self._body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._disarm()
        self._began = False
        super().on_message_complete()

    # Deadlines

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._began:
            self._cut("header_timeout", 408, "Request Timeout")
        else:  # not a byte of a request: nobody to answer
            metrics.connections_cut.labels("header_timeout").inc()
            self._done = True
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        started = cycle.response_started
        # The application reading the body sees the client gone; what it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        if started:
            metrics.connections_cut.labels("body_timeout").inc()
            self._done = True
            self.transport.close()
        else:
            self._cut("body_timeout", 408, "Request Timeout")

    # Answers and the upgrade

    def _cut(self, limit: str, status: int, reason: str) -> None:
        """A limit was hit: counted, answered, and the connection closes."""
        metrics.connections_cut.labels(limit).inc()
        self._answer(status, reason)

    def _answer(self, status: int, reason: str) -> None:
        """A plain-text error, then the connection closes."""
        self._disarm()
        self._done = True
        body = f"{status} {reason}\n".encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()

    def _upgrade(self, rest: bytes) -> None:
        """Hand the connection to the socket protocol with the request as it came."""
        self._disarm()
        self.connections.discard(self)
        version = self.parser.get_http_version().encode()
        head = [self.scope["method"].encode(), b" ", self.url, b" HTTP/", version]
        for name, value in self.headers:
            head += [b"\r\n", name, b": ", value]
        protocol = cast(
            "SocketProtocol",
            self.ws_protocol_class(  # type: ignore[call-arg, misc]
                config=self.config, server_state=self.server_state, app_state=self.app_state
            ),
        )
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.start(b"".join(head), rest)
