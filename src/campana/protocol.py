"""The wire format of the socket (docs/protocol.md), to the letter of the frontend guide.

Event names, close codes and the socket's path, the ``Event`` a change becomes (its JSON
made once per publish) and the bytes of a server's text frame. The TypeScript client keeps
the same path and codes in ``clients/typescript/src/protocol.ts``; a test holds the two
together.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from campana.schemas import ItemPayload, counts_payload_of

SOCKET_PATH: Final = "/api/v1/notifications/ws"

# Event names.
SNAPSHOT: Final = "snapshot"
NOTIFICATION_CREATED: Final = "notification.created"
NOTIFICATION_READ: Final = "notification.read"
UNREAD_COUNT_UPDATED: Final = "unread_count.updated"
KEEPALIVE: Final = "keepalive"
# Beyond the guide (a client written to it ignores them): an item's new state, an item
# gone, a bulk change done, and every count (only to sockets that ask: ``?counts=1``).
NOTIFICATION_UPDATED: Final = "notification.updated"
NOTIFICATION_DELETED: Final = "notification.deleted"
NOTIFICATIONS_CHANGED: Final = "notifications.changed"
COUNTS_UPDATED: Final = "counts.updated"
# The socket's query parameter that asks for ``counts.updated``.
COUNTS_PARAMETER: Final = "counts"
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
    it already sent. One change may be several events (``notification.read``, then
    ``notification.updated``; a count, then every count): ``part`` orders them within
    their version. Neither reaches the wire.
    """

    user_id: str
    version: int
    name: str
    json: str
    published_at: float = 0.0  # wall clock after the commit; 0 for events made per socket
    part: int = 0

    @property
    def is_count(self) -> bool:
        return self.name in COUNT_EVENTS


COUNT_EVENTS: Final = frozenset({UNREAD_COUNT_UPDATED, COUNTS_UPDATED})


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


def updated_event(
    user_id: str, version: int, item: ItemPayload, published_at: float = 0.0, part: int = 0
) -> Event:
    text = event_json(NOTIFICATION_UPDATED, item)
    return Event(user_id, version, NOTIFICATION_UPDATED, text, published_at, part)


def deleted_event(
    user_id: str, version: int, notification_id: uuid.UUID, published_at: float = 0.0
) -> Event:
    text = event_json(NOTIFICATION_DELETED, {"id": str(notification_id)})
    return Event(user_id, version, NOTIFICATION_DELETED, text, published_at)


def changed_event(
    user_id: str, version: int, change: dict[str, Any], published_at: float = 0.0
) -> Event:
    """A bulk change done: ``change`` is ``{"change": ..., "filter": ...}``."""
    text = event_json(NOTIFICATIONS_CHANGED, change)
    return Event(user_id, version, NOTIFICATIONS_CHANGED, text, published_at)


def count_event(
    user_id: str, version: int, count: int, published_at: float = 0.0, part: int = 0
) -> Event:
    text = event_json(UNREAD_COUNT_UPDATED, {"count": count})
    return Event(user_id, version, UNREAD_COUNT_UPDATED, text, published_at, part)


def counts_event(
    user_id: str, version: int, counts: Sequence[int], published_at: float = 0.0, part: int = 1
) -> Event:
    """Every count, after the unread count of its version: ``counts`` in the badge's order
    (``schemas.counts_payload_of``). Few sockets ask for it, so it travels as these numbers
    (a fifth of the payload's bytes, for every create) and its frame is made only for a
    socket that asked (``frame_text``)."""
    text = orjson.dumps(list(counts)).decode()
    return Event(user_id, version, COUNTS_UPDATED, text, published_at, part)


def frame_text(event: Event) -> str:
    """The JSON text of the event's frame."""
    if event.name == COUNTS_UPDATED:
        return event_json(COUNTS_UPDATED, counts_payload_of(orjson.loads(event.json)))
    return event.json


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
