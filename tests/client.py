"""A test's view of one browser tab: the frames its socket receives, and its close code."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME_TIMEOUT = 10.0


class Socket:
    """``async with server.connect(user) as tab:`` then ``await tab.next_event()``."""

    def __init__(self, url: str, *, origin: str | None = None) -> None:
        self._url = url
        self._origin = origin
        self.connection: ClientConnection | None = None
        self.received: list[dict[str, Any]] = []

    async def __aenter__(self) -> Socket:
        self.connection = await connect(
            self._url,
            origin=self._origin,
            max_size=None,
            compression=None,  # type: ignore[arg-type]
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.connection is not None
        await self.connection.close()

    async def next_event(
        self, *, timeout: float = FRAME_TIMEOUT, keepalive: bool = False
    ) -> dict[str, Any]:
        """The next frame, keepalives skipped unless asked for."""
        assert self.connection is not None
        while True:
            raw = await asyncio.wait_for(self.connection.recv(), timeout)
            assert isinstance(raw, str), "every frame must be a text frame"
            frame: dict[str, Any] = orjson.loads(raw)
            assert set(frame) == {"event", "payload"}, frame
            self.received.append(frame)
            if keepalive or frame["event"] != "keepalive":
                return frame

    async def start(self) -> tuple[list[dict[str, Any]], int]:
        """Read the two opening frames; return the snapshot items and the unread count."""
        snapshot = await self.next_event()
        assert snapshot["event"] == "snapshot", snapshot
        count = await self.next_event()
        assert count["event"] == "unread_count.updated", count
        return snapshot["payload"], count["payload"]["count"]

    async def quiet_for(self, seconds: float) -> list[dict[str, Any]]:
        """Every non-keepalive frame that arrives within ``seconds``."""
        frames: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                frames.append(await self.next_event(timeout=left))
            except TimeoutError:
                break
        return frames

    async def send(self, data: str | bytes) -> None:
        assert self.connection is not None
        await self.connection.send(data)

    async def close_code(self, *, timeout: float = FRAME_TIMEOUT) -> int | None:
        """Wait for the server to close; frames before the close are kept in ``received``."""
        assert self.connection is not None
        try:
            while True:
                raw = await asyncio.wait_for(self.connection.recv(), timeout)
                self.received.append(orjson.loads(raw))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
