"""A test's view of one browser tab: the frames its socket receives, and its close code."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from types import TracebackType
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Origin

FRAME_TIMEOUT = 10.0
_READ = {"is_read": True, "is_seen": True}  # a read item is seen


class TabView:
    """What a browser tab shows, built from its frames as the TypeScript store builds it:
    items merged by id (a read item stays read), and the badge from the last count; with
    the feed's states, each item's new state, items deleted, bulk changes applied to the
    items held, and the last ``counts.updated`` (a socket opened with ``&counts=1``)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.unread_count: int | None = None
        self.counts: dict[str, Any] | None = None
        self.snapshots = 0

    def apply(self, frame: dict[str, Any]) -> None:
        event, payload = frame["event"], frame["payload"]
        if event == "snapshot":
            self.snapshots += 1
            for item in payload:
                self._merge(item)
        elif event == "notification.created":
            self._merge(payload)
        elif event == "notification.read" and payload["id"] in self.items:
            self.items[payload["id"]] = {**self.items[payload["id"]], **_READ}
        elif event == "notification.updated":
            self.items[payload["id"]] = payload  # the item's whole state after the change
        elif event == "notification.deleted":
            self.items.pop(payload["id"], None)
        elif event == "notifications.changed":
            self._apply_bulk(payload["change"], payload["filter"])
        elif event == "counts.updated":
            self.counts = payload
        elif event == "unread_count.updated":
            self.unread_count = payload["count"]
            if payload["count"] == 0:  # read-all sends only the count: the inbox is read
                self.items = {
                    i: item if item.get("is_archived") else {**item, **_READ}
                    for i, item in self.items.items()
                }

    def agrees_with(self, newest: list[dict[str, Any]], unread_count: int) -> bool:
        """True when the tab holds each of the ``newest`` items as they are, and the badge."""
        return self.unread_count == unread_count and all(
            self.items.get(item["id"]) == item for item in newest
        )

    def _merge(self, item: dict[str, Any]) -> None:
        held = self.items.get(item["id"])
        self.items[item["id"]] = {
            **item,
            "is_read": item["is_read"] or bool(held and held["is_read"]),
        }

    def _apply_bulk(self, change: dict[str, bool], within: dict[str, Any]) -> None:
        """``notifications.changed``: the change, on every held item its filter names."""
        up_to = within["up_to"]
        bound = None if up_to is None else (instant(up_to["created_at"]), up_to["id"])
        for item_id, item in list(self.items.items()):
            if (
                bool(item.get("is_archived")) != within["archived"]
                or (within["types"] is not None and item["type"] not in within["types"])
                or (within["is_read"] is not None and item["is_read"] != within["is_read"])
                or (bound is not None and (instant(item["created_at"]), item_id) > bound)
            ):
                continue
            if change.get("deleted"):
                del self.items[item_id]
            else:
                self.items[item_id] = {**item, **change}


def instant(text: str) -> datetime:
    """An item's ``created_at`` as an instant (the wire's strings do not sort)."""
    return datetime.fromisoformat(text)


class Tab:
    """``async with server.connect(user) as tab:`` then ``await tab.next_event()``."""

    def __init__(self, url: str, *, origin: str | None = None) -> None:
        self._url = url
        self._origin = origin
        self.connection: ClientConnection | None = None
        self.received: list[dict[str, Any]] = []
        self.view = TabView()
        self._follower: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tab:
        self.connection = await connect(
            self._url,
            origin=Origin(self._origin) if self._origin else None,
            max_size=None,
            compression=None,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.connection is not None
        if self._follower is not None:
            self._follower.cancel()
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
            self.view.apply(frame)
            if keepalive or frame["event"] != "keepalive":
                return frame

    async def start(self) -> tuple[list[dict[str, Any]], int]:
        """Read the two opening frames; return the snapshot items and the unread count."""
        snapshot = await self.next_event()
        assert snapshot["event"] == "snapshot", snapshot
        count = await self.next_event()
        assert count["event"] == "unread_count.updated", count
        return snapshot["payload"], count["payload"]["count"]

    async def read_until_holds(self, item_id: str) -> list[dict[str, Any]]:
        """Read until the tab holds ``item_id`` and the count sent after it; return the
        frames read. Created last, the item is a marker: what was sent before it is in."""
        frames: list[dict[str, Any]] = []
        while item_id not in self.view.items or self.received[-1]["event"] != (
            "unread_count.updated"
        ):
            frames.append(await self.next_event())
        return frames

    def follow(self) -> None:
        """From now on read every frame in the background, as an open tab does; ``view``
        shows what the tab holds."""
        self._follower = asyncio.create_task(self._read_forever())

    @property
    def is_open(self) -> bool:
        """The socket the tab opened is still the one it has (it never reconnected)."""
        return self.connection is not None and self.connection.state is State.OPEN

    async def _read_forever(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.next_event(timeout=3600, keepalive=True)

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
