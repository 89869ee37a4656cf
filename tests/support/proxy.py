"""A TCP proxy a test puts between Campana and PostgreSQL or Redis, to cut or stall the link.

The shared PostgreSQL and Redis of the machine are never stopped by a test: a fault is
made here, on the road to them, for the one server that connects through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib

from .servers import free_port

CHUNK_BYTES = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``, until told to cut or stall.

    ``cut()`` resets every open connection and every new one until ``restore()``, as a
    network that refuses the peer. ``stall()`` keeps connections open but forwards
    nothing (bytes wait, unread), as a peer that hangs; ``restore()`` lets them through.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut = False
        self._links: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.BaseTransport] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url_for(self, url: str) -> str:
        """``url`` with the target's ``host:port`` replaced by the proxy's."""
        host, port = self._target
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")

    def cut(self) -> None:
        self._cut = True
        self._flowing.set()  # stalled pumps wake up to find their transports gone
        for transport in tuple(self._transports):
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()
        for link in tuple(self._links):
            link.cancel()

    def stall(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._cut = False
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._transports.update((writer.transport, target_writer.transport))
        link = asyncio.current_task()
        assert link is not None
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump(reader, target_writer), self._pump(target_reader, writer)
            )
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            self._links.discard(link)
            for side in (writer, target_writer):
                self._transports.discard(side.transport)
                side.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK_BYTES):
            await self._flowing.wait()
            if self._cut:
                return
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()
