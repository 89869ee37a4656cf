"""HTTP/1.1 connections: uvicorn's httptools protocol with deadlines and size bounds.

Uvicorn bounds neither how long a request's head may take to arrive nor how long it may
be, nor how long an answer may wait for a client that does not read it: an idle
connection, a request line sent a byte at a time, a 64 MB header or a page never read
would hold a connection (and memory) for as long as the client likes.
:class:`HttpProtocol` adds, for every request on a connection:

* a head deadline (``CAMPANA_HTTP_HEADER_TIMEOUT_SECONDS``), from the connection's
  opening or the request's first byte: past it the connection closes, with 408 if the
  request had begun;
* a head size bound (``CAMPANA_HTTP_MAX_HEADER_BYTES``): 431, checked as bytes arrive,
  for each request of a pipeline on its own;
* a body deadline (``CAMPANA_HTTP_BODY_TIMEOUT_SECONDS``) from the end of the head;
  past it 408 and close, and the application sees the client as gone;
* a write deadline (``CAMPANA_HTTP_WRITE_TIMEOUT_SECONDS``), as nginx's ``send_timeout``:
  an answer of which the client takes less than 16 KiB in that time is dropped with a
  TCP reset, which frees what the process and the kernel hold for it. The process
  queues at most one message of an answer beyond what the kernel takes; the kernel
  gives up on what it holds after the same time (``TCP_USER_TIMEOUT``), closed or not.

It holds the process's connection cap (``campana.capacity``): a connection past it is
answered 503 and closed before anything is read. A client gone before its answer, and a
request cancelled at shutdown, are one debug line, not a traceback. When a request of a
pipeline is refused, the ones before it are answered first: a create that committed is
never left without its 201.

It also hands a WebSocket upgrade to the socket protocol as the client sent it (its
HTTP version, every header even when repeated, and the bytes that followed in the same
packet, as an ``api.handshake.UpgradeRequest``), where uvicorn would rebuild it as
HTTP/1.1 and drop the bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from campana import metrics
from campana.api import tcp
from campana.api.handshake import UpgradeRequest
from campana.limits import DEFAULT_LIMITS

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from campana.api.deps import Services
    from campana.api.ws import SocketProtocol
    from campana.capacity import Capacity

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
# What a client must take of an answer in each write deadline (or the rest of it): slower
# than 1.6 KB/s at the default 10 s, and it is dropped. Well under any real link, and a
# client that reads one byte at a time cannot hold an answer for hours.
MIN_WRITE_PROGRESS_BYTES = 16_384


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
        limits = services.limits if services is not None else DEFAULT_LIMITS
        self._capacity: Capacity | None = services.capacity if services is not None else None
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._write_timeout = limits.write_timeout
        self._max_head = limits.max_header_bytes
        self._stop_seconds = limits.stop_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._unwritten = 0  # bytes waiting to be written when the write timer was armed
        self._stopping = False
        self._began = False  # a byte of the current request has arrived
        self._in_head = False  # ... and its head is not complete
        self._began_in_packet = False  # ... and it began in the packet being parsed
        self._raw_head_bytes = 0  # packets wholly inside the current head
        self._head_bytes = 0  # the current head's line and headers, as parsed
        self._done = False  # answered on our own and closing: nothing more is parsed
        self._refusal: tuple[int, str] | None = None  # answered once the pipeline is
        self._slot = False  # holds a slot of the process's connection cap
        self._running: RequestResponseCycle | None = None  # the request being answered

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # What the kernel does not take at once waits here, and the write deadline runs
        # while anything waits (a socket sets its own limits after the upgrade).
        transport.set_write_buffer_limits(high=0, low=0)
        tcp.set_user_timeout(transport, self._write_timeout)
        if self._capacity is not None:
            if not self._capacity.admit_connection():
                metrics.connections_cut.labels("connections_full").inc()
                retry = f"retry-after: {RETRY_AFTER_SECONDS}\r\n"
                self._answer(503, "Service Unavailable", retry)
                return
            self._slot = True
        self._arm(self._header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_write()
        if self._slot and self._capacity is not None:
            self._slot = False
            self._capacity.release_connection()
        running = self._running
        if running is not None and running is not self.cycle and not running.response_complete:
            # Uvicorn tells only the latest request of a pipeline that the client is gone.
            running.disconnected = True
            running.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._unset_keepalive_if_required()
        self._began_in_packet = False
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
                self._refuse(400, "Bad Request")
            return
        if self._in_head and not self._began_in_packet:
            # The packet is wholly inside one head: the parser holds it until the head ends.
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self._max_head:
                self._cut("header_size", 431, "Request Header Fields Too Large")

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._began = True
        self._began_in_packet = True
        self._raw_head_bytes = 0
        self._head_bytes = 0
        if self._timer is None:  # the first request's deadline runs from the connection
            self._arm(self._header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._max_head:
            raise _Refused(431, "Request Header Fields Too Large", "header_size")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            self._arm(self._body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._disarm()
        self._began = False
        super().on_message_complete()

    # Requests

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, _unless_gone(app, cycle))

    def on_response_complete(self) -> None:
        if self._refusal is not None and not self.pipeline:
            # Every request before the refused one has its answer: now the refusal's.
            self.server_state.total_requests += 1
            status, reason = self._refusal
            self._refusal = None
            self._answer(status, reason)
            return
        super().on_response_complete()

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
            self._cut("body_timeout", 408, "Request Timeout", refused=cycle)

    # The write deadline: armed while anything waits to be written.

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None and not self.transport.is_closing():
            self._arm_write(self._write_timeout)

    def _arm_write(self, delay: float) -> None:
        self._unwritten = self.transport.get_write_buffer_size()
        self._write_timer = self.loop.call_later(delay, self._write_timed_out)

    def resume_writing(self) -> None:
        self._disarm_write()
        super().resume_writing()

    def _disarm_write(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        unwritten = self.transport.get_write_buffer_size()
        if not self._stopping and self._unwritten - unwritten >= min(
            MIN_WRITE_PROGRESS_BYTES, self._unwritten
        ):
            self._arm_write(self._write_timeout)  # read slowly, but read: another period
            return
        metrics.connections_cut.labels("write_timeout").inc()
        self._done = True
        tcp.reset(self.transport)

    def shutdown(self) -> None:
        super().shutdown()
        if self._write_timer is not None:
            # A stop does not wait the whole write deadline for a client that does not read.
            self._disarm_write()
            self._stopping = True
            self._arm_write(min(self._write_timeout, self._stop_seconds))

    # Answers and the upgrade

    def _cut(
        self,
        limit: str,
        status: int,
        reason: str,
        refused: RequestResponseCycle | None = None,
    ) -> None:
        """A limit was hit: counted, answered, and the connection closes."""
        metrics.connections_cut.labels(limit).inc()
        self._refuse(status, reason, refused)

    def _refuse(
        self, status: int, reason: str, refused: RequestResponseCycle | None = None
    ) -> None:
        """Answer with an error and close, after the requests before it in a pipeline.

        ``refused`` is the request refused, when it has begun (its body did not come):
        it gets the error instead of an answer of its own.
        """
        self._disarm()
        self._done = True
        for queued in [entry for entry in self.pipeline if entry[0] is refused]:
            self.pipeline.remove(queued)
        running = self._running
        in_flight = running is not None and running is not refused and not running.response_complete
        if in_flight or self.pipeline:
            self._refusal = (status, reason)
            self.flow.pause_reading()
        else:
            self._answer(status, reason)

    def _answer(self, status: int, reason: str, headers: str = "") -> None:
        """A plain-text error, then the connection closes."""
        self._disarm()
        self._done = True
        if self.transport.is_closing():
            return
        body = f"{status} {reason}\n".encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n{headers}connection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()

    def _upgrade(self, rest: bytes) -> None:
        """Hand the connection to the socket protocol with the request as it came."""
        self._disarm()
        self._disarm_write()
        self.connections.discard(self)
        self._slot = False  # the socket holds the connection's slot from here on
        tcp.set_user_timeout(self.transport, 0)  # a socket has its own deadlines (api/ws.py)
        self.transport.set_write_buffer_limits()
        request = UpgradeRequest(
            method=self.scope["method"],
            target=self.url,
            http_version=self.parser.get_http_version(),
            headers=self.headers,
        )
        protocol = cast(
            "SocketProtocol",
            self.ws_protocol_class(  # type: ignore[call-arg, misc]
                config=self.config, server_state=self.server_state, app_state=self.app_state
            ),
        )
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.start(request, rest)


def _unless_gone(app: ASGI3Application, cycle: RequestResponseCycle) -> ASGI3Application:
    """The application, for one request: a client gone is not an error.

    What it sends once the connection is closing is dropped (uvicorn would write to a
    closed transport, and log the traceback); a cancellation at shutdown ends the request
    quietly.
    """

    async def run(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        async def send_unless_gone(message: Any) -> None:
            if cycle.transport.is_closing() and not cycle.response_complete:
                cycle.disconnected = True
                return
            await send(message)

        try:
            await app(scope, receive, send_unless_gone)
        except asyncio.CancelledError:
            logger.debug(
                "request cancelled at shutdown: %s %s", cycle.scope["method"], cycle.scope["path"]
            )
            cycle.disconnected = True
        except Exception:
            if not cycle.disconnected:
                raise
            logger.debug(
                "client gone before its answer: %s %s", cycle.scope["method"], cycle.scope["path"]
            )

    return run
