"""The wire format of the socket (docs/protocol.md), to the letter of the frontend guide.

Event names, close codes and the socket's path, the ``Event`` a change becomes (its JSON
made once per publish) and the bytes of a server's text frame. The TypeScript client keeps
the same path and codes in ``clients/typescript/src/protocol.ts``; a test holds the two
together.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any, Final

import orjson

from campana.schemas import ItemPayload

SOCKET_PATH: Final = "/api/v1/notifications/ws"

# Event names.
SNAPSHOT: Final = "snapshot"
NOTIFICATION_CREATED: Final = "notification.created"
NOTIFICATION_READ: Final = "notification.read"
UNREAD_COUNT_UPDATED: Final = "unread_count.updated"
KEEPALIVE: Final = "keepalive"
# Between processes only, never on a socket: "this user is at this version now" (a
# process whose publish failed sends it, so that sockets behind it reload their state).
USER_VERSION: Final = "user.version"

# Close codes the server sends. (1009, a frame too big, is sent by the websockets library.)
CLOSE_INVALID_DATA: Final = 1007
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_TOKEN_REFUSED: Final = 4401
CLOSE_ORIGIN_REFUSED: Final = 4403
CLOSE_TOO_MANY_SOCKETS: Final = 4429


def event_json(event: str, payload: Any) -> str:
    """One frame's JSON text: ``{"event": ..., "payload": ...}``."""
    return orjson.dumps({"event": event, "payload": payload}).decode()


@dataclass(frozen=True, slots=True)
class Event:
    """An event for one user's sockets, its JSON made once, with the user's change version.

    ``version`` orders a user's changes: the server stamps it inside the transaction that
    makes the change, so a socket can drop an ``unread_count.updated`` older than the one
    it already sent. The version never reaches the wire.
    """

    user_id: str
    version: int
    name: str
    json: str
    published_at: float = 0.0  # wall clock after the commit; 0 for events made per socket

    @property
    def is_count(self) -> bool:
        return self.name == UNREAD_COUNT_UPDATED


def created_event(
    user_id: str, version: int, item: ItemPayload, published_at: float = 0.0
) -> Event:
    text = event_json(NOTIFICATION_CREATED, item)
    return Event(user_id, version, NOTIFICATION_CREATED, text, published_at)


def read_event(
    user_id: str, version: int, notification_id: uuid.UUID, published_at: float = 0.0
) -> Event:
    text = event_json(NOTIFICATION_READ, {"id": str(notification_id), "is_read": True})
    return Event(user_id, version, NOTIFICATION_READ, text, published_at)


def count_event(user_id: str, version: int, count: int, published_at: float = 0.0) -> Event:
    text = event_json(UNREAD_COUNT_UPDATED, {"count": count})
    return Event(user_id, version, UNREAD_COUNT_UPDATED, text, published_at)


def snapshot_event(user_id: str, version: int, items: list[ItemPayload]) -> Event:
    return Event(user_id, version, SNAPSHOT, event_json(SNAPSHOT, items))


def version_event(user_id: str, version: int) -> Event:
    return Event(user_id, version, USER_VERSION, "")


def to_wire(text: str) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as servers send."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x81, length) + payload
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


KEEPALIVE_EVENT: Final = Event("", 0, KEEPALIVE, event_json(KEEPALIVE, {}))
KEEPALIVE_WIRE: Final = to_wire(KEEPALIVE_EVENT.json)
